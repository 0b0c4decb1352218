#!/usr/bin/env bash
# One linear probe on 50,000 x 640 synthetic features with 1000 classes, on the CPU: exvit
# (burn L-BFGS on flex), torch.optim.LBFGS and scikit-learn, on the same features, by the
# alternating protocol of benches/protocol.py (each fit its own trial and process, the order
# rotating per round).
#   benches/probe-vs-sklearn/run.sh            # the Python side uses tools/parity's venv (+ scikit-learn)
# Environment: N, DIM, CLASSES, WD, MAX_ITER, THREADS (default: all cores), ROUNDS (default 7).
# Prints `MS <impl> <median> <min> <max>` (fit milliseconds over rounds), and per peer
# `RATIO probe exvit_vs_<peer> <exvit s> <peer s> <median speed-up>` with
# `SPREAD probe exvit_vs_<peer> <min> <max>` (per-round speed-ups; above 1: exvit is faster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
py=${EXVIT_PARITY_VENV:-$HOME/.cache/exvit/parity-venv}/bin/python
"$py" -c "import sklearn" 2>/dev/null || "$py" -m pip install -q scikit-learn
N=${N:-50000} DIM=${DIM:-640} CLASSES=${CLASSES:-1000} WD=${WD:-1e-4} MAX_ITER=${MAX_ITER:-100}
THREADS=${THREADS:-$(nproc)} ROUNDS=${ROUNDS:-7}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$repo" && cargo build --release -q --locked -p exvit)
target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exvit=(env RAYON_NUM_THREADS="$THREADS" "$target/release/exvit" probe bench --n "$N" --dim "$DIM" --classes "$CLASSES"
       --wd "$WD" --max-iter "$MAX_ITER" --separation 0.1)
# The features (the same for every exvit trial: probe bench's generator is seeded).
"${exvit[@]}" --save "$tmp/features.safetensors" > "$tmp/first.json"
echo "# $(date -u +%FT%TZ) n=$N dim=$DIM classes=$CLASSES wd=$WD max_iter=$MAX_ITER threads=$THREADS rounds=$ROUNDS $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# exvit (first run, untimed): $(cat "$tmp/first.json")"
fit="$py $here/probe_vs_sklearn.py $tmp/features.safetensors $WD $MAX_ITER $THREADS"
"$py" "$repo/benches/protocol.py" --name probe --field seconds --rounds "$ROUNDS" \
  --side exvit "${exvit[*]}" --side torch_lbfgs "$fit torch" --side sklearn "$fit sklearn"
