#!/usr/bin/env bash
# One linear probe on 50,000 x 640 synthetic features with 1000 classes, on the CPU:
# exvit (burn L-BFGS on flex), torch.optim.LBFGS and scikit-learn, on the same features, in one run.
#   benches/probe-vs-sklearn/run.sh            # the Python side uses tools/parity's venv (+ scikit-learn)
# Environment: N, DIM, CLASSES, WD, MAX_ITER, THREADS (default: all cores).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
py=${EXVIT_PARITY_VENV:-$HOME/.cache/exvit/parity-venv}/bin/python
N=${N:-50000} DIM=${DIM:-640} CLASSES=${CLASSES:-1000} WD=${WD:-1e-4} MAX_ITER=${MAX_ITER:-100}
THREADS=${THREADS:-$(nproc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --release -q -p exvit --manifest-path "$repo/Cargo.toml"
exvit=${CARGO_TARGET_DIR:-$repo/target}/release/exvit
ours=$(RAYON_NUM_THREADS=$THREADS "$exvit" probe bench --n "$N" --dim "$DIM" --classes "$CLASSES" --wd "$WD" \
  --max-iter "$MAX_ITER" --separation 0.1 --save "$tmp/features.safetensors")
echo "$ours"
theirs=$("$py" "$here/probe_vs_sklearn.py" "$tmp/features.safetensors" "$WD" "$MAX_ITER" "$THREADS")
echo "$theirs"
"$py" - "$ours" "$theirs" <<'PY'
import json, sys
ours = json.loads(sys.argv[1])
for line in sys.argv[2].splitlines():
    t = json.loads(line)
    # RATIO name exvit_seconds their_seconds speedup (>1: exvit is faster)
    print(f"RATIO probe_vs_{t['impl'].split()[0]} {ours['seconds']:.2f} {t['seconds']:.2f} {t['seconds'] / ours['seconds']:.2f}")
PY
