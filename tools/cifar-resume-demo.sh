#!/bin/bash
# An interrupted CIFAR-10 run, for real: mobilevit_xxs at 32x32, one epoch
# (configs/cifar10_mobilevit_xxs.toml), killed with SIGKILL once its iteration-200 checkpoint
# exists, resumed with --resume, then `exvit eval` on the weights it wrote (model and EMA).
#   cargo build --release -p exvit && tools/cifar-resume-demo.sh     # DATA=… RUN=… to override
# Figures: docs/training.md.
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/cifar10}
rm -rf ${RUN:-/tmp/cifar-run}
T0=$(date +%s)
./target/release/exvit train --config configs/cifar10_mobilevit_xxs.toml --data $DATA/train --val-data $DATA/test --out ${RUN:-/tmp/cifar-run} > /tmp/exvit-cifar-first.log 2>&1 &
PID=$!
while [ ! -f ${RUN:-/tmp/cifar-run}/ckpt-00000200.safetensors ]; do sleep 1; done
kill -9 $PID; wait $PID 2>/dev/null
echo "killed (-9) at $(( $(date +%s) - T0 )) s; checkpoints: $(ls ${RUN:-/tmp/cifar-run} | grep ckpt | tr '\n' ' ')"
./target/release/exvit train --resume ${RUN:-/tmp/cifar-run} 2>&1 | grep -v "^\s*$" | tail -3
echo "train total $(( $(date +%s) - T0 )) s"
./target/release/exvit eval --model mobilevit_xxs --weights ${RUN:-/tmp/cifar-run}/model.safetensors --data $DATA --split test --resolution 32 --crop-pct 1.0 --interpolation bilinear --out ${RUN:-/tmp/cifar-run}/eval.json 2>&1 | tail -1
./target/release/exvit eval --model mobilevit_xxs --weights ${RUN:-/tmp/cifar-run}/ema.safetensors --data $DATA --split test --resolution 32 --crop-pct 1.0 --interpolation bilinear 2>&1 | tail -1
