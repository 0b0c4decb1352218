"""Regenerates exvit's parity fixtures from timm (versions pinned in requirements.txt).

For each (model, input size) it builds the timm model, sets every tensor of its state_dict
with the reference initialisation (refinit.py, mirrored by exvit), runs it in eval mode on a
reference input of batch 2, and writes tests/fixtures/parity/<model>_<size>.safetensors:

  p.stats          float64 [n_keys, 3]: sum, sum of squares, first value of each state_dict
                   tensor (keys in the metadata, in state_dict order), to check the init;
  o.<name>         a full output, when it has at most FULL elements;
  o.<name>.idx     int64 flat indices of a seeded sample of SAMPLE elements, otherwise,
  o.<name>.val     float32 values at those indices, and
  o.<name>.stats   float64 [mean, mean |x|] of the full tensor;
  o.<name>.shape   int64 shape.

Outputs: stem, stages.0..4, final_conv, exshortcuts.N (ExMobileViT), pooled, logits.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parent))
from refinit import reference_init, reference_input, uniform_stream  # noqa: E402

FULL = 16384
SAMPLE = 4096
BATCH = 2


def outputs(model, x):
    feats = {}
    hooks = [model.stem.register_forward_hook(lambda m, i, o: feats.__setitem__("stem", o))]
    for s in range(len(model.stages)):
        hooks.append(model.stages[s].register_forward_hook(lambda m, i, o, s=s: feats.__setitem__(f"stages.{s}", o)))
    hooks.append(model.final_conv.register_forward_hook(lambda m, i, o: feats.__setitem__("final_conv", o)))
    with torch.no_grad():
        h = model.forward_features(x)
        pooled = model.forward_head(h, pre_logits=True)
        logits = model.head.fc(pooled)
    for hk in hooks:
        hk.remove()
    feats["pooled"] = pooled
    feats["logits"] = logits
    return feats


def encode(name, t, tensors):
    a = t.detach().cpu().numpy().astype(np.float32)
    tensors[f"o.{name}.shape"] = np.array(a.shape, dtype=np.int64)
    flat = a.reshape(-1)
    if flat.size <= FULL:
        tensors[f"o.{name}"] = a
        return
    u = uniform_stream(0, f"sample:{name}", SAMPLE)
    idx = np.minimum((u * flat.size).astype(np.int64), flat.size - 1)
    tensors[f"o.{name}.idx"] = idx
    tensors[f"o.{name}.val"] = flat[idx]
    tensors[f"o.{name}.stats"] = np.array([flat.astype(np.float64).mean(), np.abs(flat.astype(np.float64)).mean()])


def make(name, size, seed, out_dir):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    reference_init(model, seed)
    sd = model.state_dict()
    stats = []
    for k, v in sd.items():
        a = v.detach().cpu().numpy().astype(np.float64).reshape(-1)
        stats.append([a.sum(), (a * a).sum(), a[0]])
    x = torch.from_numpy(reference_input(seed, (BATCH, 3, size, size)))
    tensors = {"p.stats": np.array(stats, dtype=np.float64)}
    for k, v in outputs(model, x).items():
        encode(k, v, tensors)
    meta = {
        "model": name,
        "size": str(size),
        "seed": str(seed),
        "batch": str(BATCH),
        "keys": json.dumps(list(sd.keys())),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    path = out_dir / f"{name}_{size}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    logits = tensors["o.logits"]
    print(f"{path.name}: logits std {logits.std():.3f} max|x| {np.abs(logits).max():.3f}")


def make_layers(seed, out_dir):
    """layers.safetensors: single layers in train and eval mode (BN running stats included)."""
    from timm.models.vision_transformer import Attention

    t = {}
    meta = {"seed": str(seed), "torch": torch.__version__, "timm": timm.__version__}

    def inp(key, shape):
        a = reference_input(seed, shape) if key == "input" else uniform_stream(seed, key, int(np.prod(shape))).astype(np.float32).reshape(shape)
        return torch.from_numpy(a * 4.0 - 2.0)

    # BatchNorm2d: one train step (batch statistics, running-stat update), then eval.
    bn = torch.nn.BatchNorm2d(6)
    reference_init(bn, seed)
    x = inp("bn.x", (4, 6, 5, 7))
    bn.train()
    with torch.no_grad():
        t["bn.train.y"] = bn(x).numpy()
    t["bn.running_mean"] = bn.running_mean.numpy().copy()
    t["bn.running_var"] = bn.running_var.numpy().copy()
    t["bn.num_batches_tracked"] = bn.num_batches_tracked.numpy().reshape(1).copy()
    bn.eval()
    with torch.no_grad():
        t["bn.eval.y"] = bn(x).numpy()

    ln = torch.nn.LayerNorm(16)
    reference_init(ln, seed)
    x = inp("ln.x", (3, 5, 16))
    with torch.no_grad():
        t["ln.y"] = ln(x).numpy()

    lin = torch.nn.Linear(16, 24)
    reference_init(lin, seed)
    x = inp("linear.x", (3, 5, 16))
    with torch.no_grad():
        t["linear.y"] = lin(x).numpy()

    attn = Attention(16, num_heads=4, qkv_bias=True).eval()
    reference_init(attn, seed)
    x = inp("attn.x", (2, 9, 16))
    with torch.no_grad():
        t["attn.y"] = attn(x).numpy()

    for k in list(t):
        t[k] = np.ascontiguousarray(t[k])
    save_file(t, str(out_dir / "layers.safetensors"), metadata=meta)
    print("layers.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--models", nargs="*", default=["mobilevit_xxs"])
    ap.add_argument("--sizes", nargs="*", type=int, default=[256, 200])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    make_layers(args.seed, args.out)
    for name in args.models:
        for size in args.sizes:
            make(name, size, args.seed, args.out)


if __name__ == "__main__":
    main()
