#!/usr/bin/env bash
# Issue 11's study (docs/results.md): mobilevit_xxs, exmobilevit_xxs and the wide-head control
# mobilevit_xxs_head432, 3 seeds each, on CIFAR-10 at 32x32 for 7 epochs; every tap probed
# (trained and at random init), CKA, the report. ~1 h 45 min on 2 cores.
#
#   tools/study/cifar10.sh ../shared/datasets/cifar10 [OUT]     # OUT defaults to study-cifar10
#
# A rerun reuses the finished runs and resumes an interrupted one. With COPY=1 the report is
# copied into docs/results/ (what is committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: tools/study/cifar10.sh CIFAR10_ROOT [OUT]}
out=${2:-study-cifar10}
cargo build --release -p exvit
mkdir -p "$out"
/usr/bin/time -v target/release/exvit demo \
    --data "$data" --out "$out" \
    --epochs 7 --seeds 3 --size 32 --batch 64 \
    --ema-momentum 0.001 --warmup-epochs 0.5 \
    --jobs 3 --probe-train-per-class 2000 2>&1 | tee "$out/study.log"
if [ "${COPY:-0}" = 1 ]; then
    rm -rf docs/results && mkdir -p docs/results
    cp "$out/report.html" "$out/report.md" docs/results/
    cp -r "$out/report_figures" docs/results/
    echo "copied the report to docs/results/"
fi
