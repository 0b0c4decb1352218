"""Regenerates tests/fixtures/parity/macs.json: multiply-accumulates per image of every zoo
model, counted by PyTorch's own counter (torch.utils.flop_counter.FlopCounterMode, FLOPs / 2)
on timm's models (ExMobileViT and the wide-head controls: make_fixtures.py's builders on timm's
body), at 256 (the models' input size) and 200 (odd maps: timm resizes them for the unfold).
exvit's count (exvit_zoo::macs::count_macs) must equal it exactly: tests/macs.rs.

timm's fused attention is turned off (TIMM_FUSED_ATTN=0) so the attention's two products run
as matmuls, which the counter sees on every PyTorch build; the fused kernel does the same work.

    tools/parity/setup.sh && ~/.cache/exvit/parity-venv/bin/python tools/parity/make_macs_fixtures.py
"""
import argparse
import json
import os
import sys
from pathlib import Path

os.environ["TIMM_FUSED_ATTN"] = "0"  # before timm is imported

import timm  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import CONTROLS, EXMOBILEVIT, build, outputs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODELS = ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s", *EXMOBILEVIT, *CONTROLS]
SIZES = [256, 200]


def macs(model, size):
    counter = FlopCounterMode(display=False)
    with counter:
        outputs(model, torch.zeros(1, 3, size, size))
    flops = counter.get_total_flops()
    assert flops % 2 == 0, flops
    return flops // 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=REPO / "tests/fixtures/parity/macs.json", type=Path)
    args = ap.parse_args()
    rows = {}
    for name in MODELS:
        model = build(name).eval()
        assert all(not getattr(m, "fused_attn", False) for m in model.modules()), name
        rows[name] = {str(size): macs(model, size) for size in SIZES}
        print(name, rows[name])
    meta = {"torch": torch.__version__, "timm": timm.__version__, "counter": "FlopCounterMode / 2"}
    args.out.write_text(json.dumps({"meta": meta, "macs": rows}, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
