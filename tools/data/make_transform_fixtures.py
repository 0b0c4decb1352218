"""Regenerates the transform fixtures (tests/fixtures/data/transforms.safetensors): torchvision's
resized_crop, RandomResizedCrop geometry statistics, and eval Resize + CenterCrop on PIL images,
for exvit-data's transforms (crates/exvit-data/tests/transforms.rs).

  ~/.cache/exvit/parity-venv/bin/pip install -r tools/data/requirements.txt
  ~/.cache/exvit/parity-venv/bin/python tools/data/make_transform_fixtures.py
"""
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from safetensors.numpy import save_file
from torchvision.transforms import CenterCrop, InterpolationMode, RandomResizedCrop, Resize
from torchvision.transforms import functional as F

ROOT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "data"
MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def scene(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 120 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 255 * ((x // 6 + y // 6) % 2)  # a checkerboard: aliasing shows if antialiasing is wrong
    b = 255 * x / (w - 1)
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")


def main():
    jpg, png = ROOT / "images" / "transform.jpg", ROOT / "images" / "transform_portrait.png"
    scene(97, 73).save(jpg, "JPEG", quality=90)
    scene(40, 64).save(png, "PNG")
    # Tall enough that Pillow 13 resamples vertically first, also in eval (aspect kept).
    tall = ROOT / "images" / "transform_tall.jpg"
    scene(29, 95).save(tall, "JPEG", quality=90)
    out = {}
    land = Image.open(jpg).convert("RGB")
    port = Image.open(png).convert("RGB")
    # resized_crop: downscale (support grows), upscale, non-square, edges, both filters.
    boxes = [(0, 0, 73, 97, 32), (5, 9, 50, 41, 24), (40, 60, 20, 30, 48), (1, 2, 7, 9, 16), (0, 0, 73, 97, 13)]
    for mode, interp in MODES.items():
        for (i, j, h, w, s) in boxes:
            im = F.resized_crop(land, i, j, h, w, [s, s], interpolation=interp)
            out[f"rrc/transform.jpg/{mode}/{i}_{j}_{h}_{w}_{s}"] = np.asarray(im)
        im = F.resized_crop(port, 3, 4, 30, 20, [28, 28], interpolation=interp)
        out[f"rrc/transform_portrait.png/{mode}/3_4_30_20_28"] = np.asarray(im)
    # Eval: Resize(shorter side) + CenterCrop, landscape and portrait, odd and even margins.
    for mode, interp in MODES.items():
        for name, im in [("transform.jpg", land), ("transform_portrait.png", port), ("transform_tall.jpg", Image.open(tall).convert("RGB"))]:
            for r, c in [(36, 32), (37, 32), (80, 64), (31, 31)]:
                t = CenterCrop(c)(Resize(r, interpolation=interp)(im))
                out[f"eval/{name}/{mode}/{r}_{c}"] = np.asarray(t)
    # RandomResizedCrop geometry over many draws: area fraction, log aspect, centre position.
    torch.manual_seed(0)
    for (w, h) in [(500, 375), (1000, 100), (64, 64)]:
        rrc = RandomResizedCrop(224)
        img = Image.new("RGB", (w, h))
        stats = []
        for _ in range(20000):
            i, j, ch, cw = rrc.get_params(img, rrc.scale, rrc.ratio)
            stats.append([ch * cw / (w * h), np.log(cw / ch), (j + cw / 2) / w, (i + ch / 2) / h])
        stats = np.array(stats)
        out[f"rrc_stats/{w}x{h}"] = np.stack([stats.mean(0), stats.std(0)]).astype(np.float64)
    out = {k: np.ascontiguousarray(v) for k, v in out.items()}
    meta = {"pillow": PIL.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__}
    save_file(out, str(ROOT / "transforms.safetensors"), metadata=meta)
    print(f"{len(out)} tensors, {meta}")


if __name__ == "__main__":
    main()
