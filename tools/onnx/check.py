"""Checks an ONNX file written by `exvit export` with two implementations exvit shares no code
with: the ONNX checker and ONNX Runtime run the file, timm (or, for an ExMobileViT, the PyTorch
model of tools/parity/make_fixtures.py on timm's body) runs the same weights on the same
input, and every output the file has (logits; with `exvit export --taps` the stages,
ExShortcuts and `pooled`) is compared.

    tools/parity/setup.sh                                   # the venv: torch, timm, onnxruntime, onnx
    exvit zoo init --model mobilevit_s --seed 1 --out w.safetensors      # or any timm-keyed weights
    exvit export --model mobilevit_s --weights w.safetensors --out m.onnx --dynamic-batch --taps
    ~/.cache/exvit/parity-venv/bin/python tools/onnx/check.py --model mobilevit_s \
        --weights w.safetensors --onnx m.onnx --batch 2

Exits with 1 when an output differs by more than --tolerance (absolute).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parity"))
from make_fixtures import build, outputs  # noqa: E402
from refinit import reference_input  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="zoo name (timm's, or an ExMobileViT of make_fixtures.py)")
    ap.add_argument("--weights", required=True, help="the safetensors file the ONNX file was exported from")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--batch", type=int, default=2, help="images (a file exported without --dynamic-batch takes 1)")
    ap.add_argument("--seed", type=int, default=3, help="seed of the reference input (tools/parity/refinit.py)")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    proto = onnx.load(args.onnx)
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    size = [d.dim_value for d in dims[2:]]
    print(f"onnx.checker: ok (opset {proto.opset_import[0].version}, IR {proto.ir_version}, input {size})")

    state = load_file(args.weights)
    classes = state["head.fc.weight"].shape[0]
    model = build(args.model)
    if model.head.fc.out_features != classes:
        model.head.fc = torch.nn.Linear(model.head.fc.in_features, classes)
    model.load_state_dict(state, strict=True)
    model.eval()

    x = np.asarray(reference_input(args.seed, (args.batch, 3, *size)), dtype=np.float32)
    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"input": x})))
    want = outputs(model, torch.from_numpy(x))
    worst = 0.0
    for name in names:
        w = want[name].detach().numpy()
        d = float(np.abs(got[name] - w).max())
        worst = max(worst, d)
        print(f"{name:<14} {str(list(got[name].shape)):<20} max |onnxruntime - torch| {d:.2e}")
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}: worst {worst:.2e} (tolerance {args.tolerance:.0e})")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
