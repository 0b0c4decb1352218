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

FULL = 4096
SAMPLE = 1024
BATCH = 2
REPO = Path(__file__).resolve().parents[2]

# ExMobileViT: (backbone, tap channels on stages.2 and stages.3, final_conv width).
EXMOBILEVIT = {
    "exmobilevit_576": ("mobilevit_s", (32, 64), 480),
    "exmobilevit_640": ("mobilevit_s", (32, 128), 480),
    "exmobilevit_928": ("mobilevit_s", (128, 160), 640),
    "exmobilevit_xxs": ("mobilevit_xxs", (48, 64), 320),
    "exmobilevit_xs": ("mobilevit_xs", (64, 80), 384),
}

# Wide-head controls: the backbone with a wider final_conv (its width = the ExMobileViT's
# classifier input) and no taps.
CONTROLS = {
    "mobilevit_s_head576": ("mobilevit_s", 576),
    "mobilevit_s_head928": ("mobilevit_s", 928),
    "mobilevit_xxs_head432": ("mobilevit_xxs", 432),
    "mobilevit_xs_head528": ("mobilevit_xs", 528),
}


class _Head(torch.nn.Module):
    def __init__(self, width, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(width, num_classes)


class ExMobileViT(torch.nn.Module):
    """ExMobileViT on a timm MobileViT body, with exvit's module names: each tap is a 1x1 conv
    (no bias) + BN + SiLU on the output of stages.2 / stages.3, then a global average pool; the
    classifier takes [tap 0, tap 1, pooled final_conv]."""

    def __init__(self, backbone, taps, num_features, num_classes=1000):
        super().__init__()
        from dataclasses import replace
        from timm.layers import ConvNormAct
        from timm.models.byobnet import ByobNet
        from timm.models.mobilevit import model_cfgs

        body = ByobNet(replace(model_cfgs[backbone], num_features=num_features), num_classes=num_classes)
        self.stem, self.stages, self.final_conv = body.stem, body.stages, body.final_conv
        last = lambda st: st[-1].conv_fusion if hasattr(st[-1], "conv_fusion") else st[-1].conv3_1x1  # noqa: E731
        chs = [last(st).conv.out_channels for st in body.stages]
        self.tap_stages = (2, 3)
        self.exshortcuts = torch.nn.ModuleList(
            [ConvNormAct(chs[s], c, 1, act_layer=torch.nn.SiLU) for s, c in zip(self.tap_stages, taps)]
        )
        self.head = _Head(sum(taps) + num_features, num_classes)

    def forward_all(self, x):
        feats = {"stem": self.stem(x)}
        h = feats["stem"]
        for i, st in enumerate(self.stages):
            h = st(h)
            feats[f"stages.{i}"] = h
        feats["final_conv"] = self.final_conv(h)
        taps = [tap(feats[f"stages.{s}"]).mean((2, 3)) for tap, s in zip(self.exshortcuts, self.tap_stages)]
        for i, t in enumerate(taps):
            feats[f"exshortcuts.{i}"] = t
        feats["pooled"] = torch.cat(taps + [feats["final_conv"].mean((2, 3))], 1)
        feats["logits"] = self.head.fc(feats["pooled"])
        return feats


def tiny_model():
    """The network of tests/fixtures/parity/tiny.toml, built by timm."""
    from timm.models.byobnet import ByobNet, ByoModelCfg
    from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block

    cfg = ByoModelCfg(
        blocks=(
            _inverted_residual_block(d=1, c=8, s=1, br=2.0),
            _inverted_residual_block(d=1, c=16, s=2, br=2.0),
            _mobilevit_block(d=1, c=16, s=2, transformer_dim=16, transformer_depth=1, patch_size=2, br=2.0),
            _mobilevit_block(d=1, c=24, s=2, transformer_dim=24, transformer_depth=2, patch_size=2, br=2.0),
            _mobilevit_block(d=1, c=32, s=2, transformer_dim=32, transformer_depth=1, patch_size=2, br=2.0),
        ),
        stem_chs=8, stem_type="3x3", stem_pool="", downsample="", act_layer="silu", num_features=64,
    )
    return ByobNet(cfg, num_classes=10)


def build(name):
    if name in EXMOBILEVIT:
        return ExMobileViT(*EXMOBILEVIT[name])
    if name in CONTROLS:
        from dataclasses import replace
        from timm.models.byobnet import ByobNet
        from timm.models.mobilevit import model_cfgs

        backbone, width = CONTROLS[name]
        return ByobNet(replace(model_cfgs[backbone], num_features=width), num_classes=1000)
    if name == "tiny":
        return tiny_model()
    return timm.create_model(name, pretrained=False)


def outputs(model, x):
    if isinstance(model, ExMobileViT):
        with torch.no_grad():
            return model.forward_all(x)
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
    model = build(name).eval()
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


def make_timm_checkpoint(seed, out_dir):
    """timm_tiny.safetensors: a checkpoint written by timm/safetensors.torch (int64 0-d
    num_batches_tracked, F32 tensors) with trained-looking running stats, for the loader tests.
    Its outputs on the reference input go to tiny_ckpt_64.safetensors."""
    from safetensors.torch import save_file as save_torch

    torch.manual_seed(seed)
    model = tiny_model()
    model.train()
    with torch.no_grad():  # a few train-mode batches: real running stats, num_batches_tracked = 3
        for i in range(3):
            model(torch.from_numpy(reference_input(seed + i, (4, 3, 64, 64))))
    model.eval()
    save_torch(model.state_dict(), str(out_dir / "timm_tiny.safetensors"), metadata={"format": "pt"})
    x = torch.from_numpy(reference_input(seed, (BATCH, 3, 64, 64)))
    tensors = {}
    for k, v in outputs(model, x).items():
        encode(k, v, tensors)
    meta = {"model": "tiny", "size": "64", "seed": str(seed), "batch": str(BATCH), "torch": torch.__version__, "timm": timm.__version__}
    save_file(tensors, str(out_dir / "tiny_ckpt_64.safetensors"), metadata=meta)
    print("timm_tiny.safetensors, tiny_ckpt_64.safetensors")


def check_round_trip(exvit, seed):
    """exvit saves weights; timm loads them with strict=True and gets the reference values."""
    import subprocess
    import tempfile

    from safetensors.torch import load_file

    for name in ["mobilevit_xxs", "exmobilevit_640"]:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "w.safetensors"
            subprocess.run([str(exvit), "zoo", "init", "--model", name, "--seed", str(seed), "--out", str(path)], check=True, capture_output=True)
            sd = load_file(str(path))
            model = build(name).eval()
            model.load_state_dict(sd, strict=True)
            ref = build(name).eval()
            reference_init(ref, seed)
            for k, v in ref.state_dict().items():
                assert sd[k].dtype == v.dtype, (k, sd[k].dtype, v.dtype)
                assert sd[k].shape == v.shape, (k, sd[k].shape, v.shape)
                assert torch.equal(sd[k], v), k
            print(f"round trip {name}: exvit-saved weights load into timm with strict=True, {len(sd)} tensors equal")


NPROJ = 16


def make_train(name, size, batch, seed, out_dir):
    """train_<model>_<size>.safetensors: one training-mode step (BN on batch statistics, no
    dropout or drop-path): the loss (cross entropy, label smoothing 0.1), the logits, each
    parameter's gradient (its L2 norm, NPROJ projections on seeded random vectors, and its first
    values) and every BN's running stats after the step."""
    torch.manual_seed(0)
    model = build(name)
    reference_init(model, seed)
    model.train()
    x = torch.from_numpy(reference_input(seed, (batch, 3, size, size)))
    labels = torch.tensor([(7 * i + 3) % 1000 for i in range(batch)])
    logits = model.forward_all(x)["logits"] if isinstance(model, ExMobileViT) else model(x)
    loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    loss.backward()
    t = {"loss": np.array([loss.item()], dtype=np.float64), "logits": logits.detach().numpy(), "labels": labels.numpy()}
    keys = []
    for k, p in model.named_parameters():
        g = p.grad.detach().numpy().astype(np.float64).reshape(-1)
        proj = [(2.0 * uniform_stream(0, f"proj:{k}:{j}", g.size) - 1.0) @ g for j in range(NPROJ)]
        t[f"g.{k}"] = np.array([np.linalg.norm(g)] + proj + list(g[:8]) + [0.0] * (8 - min(8, g.size)))
        keys.append(k)
    for k, b in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            t[f"b.{k}"] = b.numpy().copy()
    meta = {"model": name, "size": str(size), "batch": str(batch), "seed": str(seed), "nproj": str(NPROJ),
            "params": json.dumps(keys), "torch": torch.__version__, "timm": timm.__version__}
    save_file(t, str(out_dir / f"train_{name}_{size}.safetensors"), metadata=meta)
    print(f"train_{name}_{size}.safetensors: loss {loss.item():.6f}")


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
    ap.add_argument("--exvit", type=Path, help="the exvit binary, for the save -> timm round trip")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    make_layers(args.seed, args.out)
    # The three MobileViT sizes at cvnets' multi-scale sizes, plus 200 (not a multiple of 32:
    # the odd-size resize runs in the MobileViT blocks).
    for name in ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"]:
        for size in [160, 192, 256, 288, 320, 200]:
            make(name, size, args.seed, args.out)
    for name in EXMOBILEVIT:
        make(name, 256 if name != "exmobilevit_928" else 200, args.seed, args.out)
    make("tiny", 64, args.seed, args.out)
    make_train("mobilevit_xxs", 128, 4, args.seed, args.out)
    make_train("exmobilevit_640", 96, 2, args.seed, args.out)
    make_timm_checkpoint(args.seed, args.out)
    if args.exvit:
        check_round_trip(args.exvit, args.seed)


if __name__ == "__main__":
    main()
