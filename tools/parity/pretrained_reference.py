"""Makes the reference for exvit's pretrained-weights check (an ignored test).

Given a timm checkpoint of a MobileViT (e.g. `mobilevit_s.cvnets_in1k`'s model.safetensors) and
an image, it preprocesses the image as the model's pretrained_cfg says (resize the shorter side
to 256 / 0.9 = 284 with bicubic, center-crop 256, to [0, 1], no mean/std), runs timm, and writes
the input and the logits:

  tools/parity/setup.sh
  ~/.cache/exvit/parity-venv/bin/pip install pillow
  ~/.cache/exvit/parity-venv/bin/python tools/parity/pretrained_reference.py \\
      --model mobilevit_s --weights model.safetensors --image cat.jpg --out ref.safetensors
  EXVIT_TIMM_WEIGHTS=model.safetensors EXVIT_TIMM_REFERENCE=ref.safetensors \\
      cargo test -p exvit-tests --test pretrained -- --ignored
"""
import argparse
import math

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.numpy import save_file
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilevit_s")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = timm.create_model(a.model, pretrained=False).eval()
    model.load_state_dict(load_file(a.weights), strict=True)
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    scale = int(math.floor(size / cfg["crop_pct"]))
    img = Image.open(a.image).convert("RGB")
    w, h = img.size
    nw, nh = (scale, round(h * scale / w)) if w <= h else (round(w * scale / h), scale)
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous()
    with torch.no_grad():
        logits = model(x)
    top5 = logits.topk(5).indices[0].tolist()
    save_file({"input": x.numpy(), "logits": logits.numpy()}, a.out, metadata={"model": a.model, "top5": str(top5)})
    print(f"{a.out}: top-5 classes {top5}")


if __name__ == "__main__":
    main()
