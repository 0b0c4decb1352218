"""Fixtures for exvit-train's engine (tests/fixtures/train/), from PyTorch:

- adamw.safetensors: torch.optim.AdamW (β 0.9/0.999, ε 1e-8, wd 0.01) for 3 steps with given
  gradients and learning rates on a small Linear + LayerNorm, once with weight decay on every
  parameter (cvnets) and once with timm's rule (no decay for 1-D parameters and biases, by
  parameter groups).

  tools/parity/setup.sh
  ~/.cache/exvit/parity-venv/bin/python tools/parity/make_train_engine_fixtures.py
"""
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "train"


def adamw():
    rng = np.random.default_rng(7)
    init = {
        "fc.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "fc.bias": rng.normal(size=(4,)).astype(np.float32),
        "norm.weight": (1 + 0.1 * rng.normal(size=(3,))).astype(np.float32),
        "norm.bias": (0.1 * rng.normal(size=(3,))).astype(np.float32),
    }
    lrs = [1e-3, 2e-3, 5e-4]
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()} for _ in lrs]
    out = {f"init.{k}": v for k, v in init.items()}
    for s, g in enumerate(grads):
        out.update({f"grad{s}.{k}": v for k, v in g.items()})
    for mode in ["all", "timm"]:
        params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
        if mode == "all":
            groups = [{"params": list(params.values()), "weight_decay": 0.01}]
        else:
            decay = [p for k, p in params.items() if p.ndim > 1 and not k.endswith(".bias")]
            no = [p for k, p in params.items() if p.ndim <= 1 or k.endswith(".bias")]
            groups = [{"params": decay, "weight_decay": 0.01}, {"params": no, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, foreach=False)
        for s, g in enumerate(grads):
            for k, p in params.items():
                p.grad = torch.from_numpy(g[k].copy())
            for grp in opt.param_groups:
                grp["lr"] = lrs[s]
            opt.step()
        out.update({f"{mode}.{k}": p.detach().numpy().copy() for k, p in params.items()})
    out["lrs"] = np.array(lrs, dtype=np.float64)
    save_file(out, str(OUT / "adamw.safetensors"), metadata={"torch": torch.__version__})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    adamw()
    print(f"wrote {OUT}")
