#!/usr/bin/env bash
# Profiles exvit train steps (default: mobilevit_xxs, batch 16, 256x256) with perf's cpu-clock
# sampler (works without hardware counters) and DWARF call stacks, then splits the samples into
# operation kinds with classify.py.
#   tools/profile/profile.sh [MODEL] [BATCH] [SIZE]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
model=${1:-mobilevit_xxs}; batch=${2:-16}; size=${3:-256}
(cd "$root" && cargo build -q --profile profiling -p exvit)
out=${PROFILE_OUT:-/tmp/exvit-profile}
mkdir -p "$out"
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$out/perf.data" -- \
  "$root/target/profiling/exvit" bench --model "$model" --mode train --batch "$batch" --size "$size" --warmup 0 --iters 2
perf script -i "$out/perf.data" 2>/dev/null | python3 "$(dirname "$0")/classify.py"
