#!/usr/bin/env bash
# Issue 11's study (docs/results.md): mobilevit_xxs, exmobilevit_xxs and the wide-head control
# mobilevit_xxs_head432, 3 seeds each, on CIFAR-10 at 32x32 for 7 epochs; every tap probed
# (trained and at random init), CKA, the attention analysis (issue 23), the report. ~1 h 45 min
# on 2 cores, plus the attention.
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
    --jobs 3 --probe-train-per-class 2000 \
    --attention-size 32 --attention-limit 10000 2>&1 | tee "$out/study.log"
# At 32x32 only stages.2's transformer sees more than one patch (a 2x2 grid; stages.3 and
# stages.4 one patch): the attention again at 64x64 (off the training resolution: 4x4, 2x2 and
# 1x1 grids), every trained seed and each model at init, into attention-64/.
mkdir -p "$out/attention-64"
rm -f "$out"/attention-64/*.parquet
for run in "$out"/runs/*-s[0-9]; do
    [ -d "$run" ] || continue
    model=$(sed -n 's/^model = "\(.*\)"$/\1/p' "$run/config.toml" | head -1)
    target/release/exvit probe attention --model "$model" --weights "$run/model.safetensors" \
        --data "$data" --split test --resolution 64 --crop-pct 1.0 --interpolation bilinear \
        --out "$out/attention-64/attention.parquet" --maps 4 2>&1 | tee -a "$out/study.log"
done
for model in mobilevit_xxs exmobilevit_xxs mobilevit_xxs_head432; do
    target/release/exvit probe attention --model "$model" --seed 0 \
        --data "$data" --split test --resolution 64 --crop-pct 1.0 --interpolation bilinear \
        --out "$out/attention-64/attention.parquet" --maps 4 2>&1 | tee -a "$out/study.log"
done
target/release/exvit report "$out/attention-64" --out "$out/attention-64/report.html" \
    --title "CIFAR-10 study: attention at 64x64" | tee -a "$out/study.log"
if [ "${COPY:-0}" = 1 ]; then
    rm -rf docs/results && mkdir -p docs/results
    cp "$out/report.html" "$out/report.md" docs/results/
    cp -r "$out/report_figures" docs/results/
    mkdir -p docs/results/attention-64
    cp "$out/attention-64/report.html" "$out/attention-64/report.md" docs/results/attention-64/
    cp -r "$out/attention-64/report_figures" docs/results/attention-64/
    echo "copied the report to docs/results/"
fi
