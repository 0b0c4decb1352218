"""Regenerates exvit's attention parity fixtures from timm (versions pinned in requirements.txt).

For each (model, input size) it builds the model as make_fixtures.py does (the reference
initialisation, eval mode, a batch of 2 reference inputs), turns off timm's fused attention in
every MobileViT block, and records, for each MobileViT block `stages.S.B`:

  t.stages.S.B.transformer.K   transformer layer K's output tokens, folded back to a map on
                               the patch-aligned size with timm's own fold (the reshapes of
                               MobileVitBlock.forward, before any resize back): what exvit's
                               tap of that name holds, [B, C, H', W'];
  t.stages.S.B.norm            the tokens after the block's LayerNorm, folded the same way;
  a.stages.S.B.transformer.K   layer K's attention probabilities, [B*P, heads, N, N]: the
                               input of its attention dropout, which is the softmax.

Each is encoded as in make_fixtures.py (whole when small, else a seeded sample of entries plus
the mean and mean |x|), in tests/fixtures/parity/attention_<model>_<size>.safetensors.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import BATCH, build, encode  # noqa: E402
from refinit import reference_init, reference_input  # noqa: E402

CASES = [("tiny", 64), ("mobilevit_xxs", 256), ("mobilevit_xxs", 200), ("exmobilevit_xxs", 160)]


def fold(tokens, block, batch, hw):
    """timm's fold (MobileVitBlock.forward) of [B*P, N, C] tokens to [B, C, n_h*p_h, n_w*p_w]."""
    ph, pw = block.patch_size
    n_h, n_w = math.ceil(hw[0] / ph), math.ceil(hw[1] / pw)
    num_patches, area = n_h * n_w, ph * pw
    x = tokens.contiguous().view(batch, area, num_patches, -1)
    c = x.shape[-1]
    x = x.transpose(1, 3).reshape(batch * c * n_h, n_w, ph, pw)
    return x.transpose(1, 2).reshape(batch, c, n_h * ph, n_w * pw)


def mobilevit_blocks(model):
    from timm.models.mobilevit import MobileVitBlock

    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            if isinstance(block, MobileVitBlock):
                yield f"stages.{s}.{b}", block


def record(model, x):
    out, hooks, sizes = {}, [], {}
    for name, block in mobilevit_blocks(model):
        # The map the transformer's unfold takes: the block's input size (stride 1 inside).
        hooks.append(block.register_forward_pre_hook(lambda m, i, n=name: sizes.__setitem__(n, i[0].shape[-2:])))
        for k, layer in enumerate(block.transformer):
            layer.attn.fused_attn = False
            hooks.append(
                layer.attn.attn_drop.register_forward_pre_hook(
                    lambda m, i, key=f"a.{name}.transformer.{k}": out.__setitem__(key, i[0])
                )
            )
            hooks.append(
                layer.register_forward_hook(
                    lambda m, i, o, n=name, k=k, blk=block: out.__setitem__(
                        f"t.{n}.transformer.{k}", fold(o, blk, x.shape[0], sizes[n])
                    )
                )
            )
        hooks.append(
            block.norm.register_forward_hook(
                lambda m, i, o, n=name, blk=block: out.__setitem__(f"t.{n}.norm", fold(o, blk, x.shape[0], sizes[n]))
            )
        )
    with torch.no_grad():
        if hasattr(model, "forward_all"):
            model.forward_all(x)
        else:
            model(x)
    for h in hooks:
        h.remove()
    return out


def make(name, size, seed, out_dir):
    torch.manual_seed(0)
    model = build(name).eval()
    reference_init(model, seed)
    x = torch.from_numpy(reference_input(seed, (BATCH, 3, size, size)))
    tensors = {}
    recorded = record(model, x)
    for key, value in recorded.items():
        encode(key, value, tensors)
    meta = {
        "model": name,
        "size": str(size),
        "seed": str(seed),
        "batch": str(BATCH),
        "recorded": json.dumps(sorted(recorded)),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    path = out_dir / f"attention_{name}_{size}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    print(f"{path.name}: {len(recorded)} tensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, size in CASES:
        make(name, size, args.seed, args.out)


if __name__ == "__main__":
    main()
