#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md). The device machine has the NVIDIA driver, nvcc 13,
# PyTorch and timm, but no Rust and no network: build here, carry the binary, run there.
#
#   tools/device-check.sh build        # here: cargo build --release -p exvit --features ddp
#                                      #   (cuda + data parallel), stripped into dist/exvit and
#                                      #   xz-compressed into dist/exvit.xz (61 MiB -> 11 MiB: the
#                                      #   run tool carries 64 MiB at most, working tree included)
#   tools/device-check.sh run          # there (OUT=results folder; the `run` tool's $OUT),
#                                      #   carrying dist/exvit.xz (unpacked with Python's lzma)
#   DEVICE=cpu SMALL=1 OUT=/tmp/dc tools/device-check.sh run
#                                      # here: the same sections on the CPU at toy sizes, to test
#                                      #   the script itself
#
# Sections, in priority order, each under its own timeout, each appending to $OUT/results.txt as
# it goes (so a run cut short keeps what it measured); under 8 minutes in all, autotune minimal:
#   1 parity   CPU against GPU: logits, pooled features and every stage, relative error <= 1e-2
#   2 speed    mobilevit_s f32: train step (batch 128, 256x256) and forward (batch 256), exvit and
#              PyTorch eager on the same GPU, RATIO lines
#   3 bf16     mobilevit_s in bf16: exvit --precision bf16 (f32 master weights) against PyTorch
#              autocast; exmobilevit_928 in f32 on both sides
#   4 probe    one linear probe on 1.28M x 640 synthetic features, 1000 classes
#   5 train    8 short epochs on generated images: f32, --precision bf16, data parallel through
#              NCCL at world size 1 (`--devices cuda:0`) and 2 replicas on threads of one GPU
#              (`--replicas 2`), accuracies and weights compared; every run with the guards at
#              every step (finite tensors; the replicas' parameters identical bit for bit)
#   6 compile  torch.compile's figures, if it compiles in time
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-run}
if [ "$cmd" = build ]; then
    cd "$root" && cargo build --release -p exvit --features ddp --locked || exit 1
    target=${CARGO_TARGET_DIR:-$root/target}
    mkdir -p "$root/dist" && strip -o "$root/dist/exvit" "$target/release/exvit" || exit 1
    xz -T0 -6 -c "$root/dist/exvit" > "$root/dist/exvit.xz.tmp" && mv "$root/dist/exvit.xz.tmp" "$root/dist/exvit.xz" || exit 1
    ls -la "$target/release/exvit" "$root/dist/exvit" "$root/dist/exvit.xz"
    exit 0
fi
[ "$cmd" = run ] || { echo "usage: $0 build|run" >&2; exit 2; }

OUT=${OUT:?set OUT to the results folder}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
PY=${PYTHON:-python3}
if [ -z "${EXVIT:-}" ] && [ ! -x "$root/dist/exvit" ] && [ -f "$root/dist/exvit.xz" ]; then
    # The carried, compressed binary: unpacked with Python (the device may lack xz).
    EXVIT="$OUT/.exvit-bin"
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$root/dist/exvit.xz" "$EXVIT" && chmod +x "$EXVIT"
fi
EXVIT=${EXVIT:-$root/dist/exvit}
[ -x "$EXVIT" ] || EXVIT=$root/target/release/exvit
R="$OUT/results.txt"
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
export RUST_BACKTRACE=0 EXVIT_LOG=${EXVIT_LOG:-warn}
if [ "$SMALL" = 1 ]; then
    SIZE=64; TRAIN_B=4; FWD_B=8; PROBE_N=20000; ITERS=2
else
    SIZE=256; TRAIN_B=128; FWD_B=256; PROBE_N=1280000; ITERS=5
fi
torch_dev=$DEVICE; [ "$DEVICE" = cpu ] || torch_dev=cuda

log() { echo "$*" | tee -a "$R"; }
section() { log ""; log "## $1 ($(date -u +%T))"; }
# run_timed SECONDS cmd...: runs, keeps stdout+stderr in the results, reports a timeout.
run_timed() {
    local t=$1; shift
    timeout "$t" "$@" >>"$R" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && log "TIMEOUT after ${t}s: $*"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && log "FAILED (rc $rc): $*"
    return $rc
}
json_field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2" 2>/dev/null; }
ratio() { # name exvit_json pytorch_json
    local e p
    e=$(json_field "$2" img_per_s); p=$(json_field "$3" img_per_s)
    if [ -n "$e" ] && [ -n "$p" ]; then
        log "RATIO $1 $e $p $("$PY" -c "print(f'{$e / $p:.3f}')")"
    else
        log "RATIO $1 missing (exvit: ${e:-none}, pytorch: ${p:-none})"
    fi
}
bench_pair() { # label model mode batch precision [python flags...]
    local label=$1 model=$2 mode=$3 batch=$4 precision=$5; shift 5
    local e p
    e=$(timeout 150 "$EXVIT" bench --device "$DEVICE" --model "$model" --mode "$mode" --batch "$batch" \
        --size "$SIZE" --warmup 2 --iters "$ITERS" --precision "$precision" 2>>"$R")
    log "exvit   $e"
    p=$(timeout 150 "$PY" "$root/benches/vs_pytorch.py" --device "$torch_dev" --model "$model" --mode "$mode" \
        --batch "$batch" --size "$SIZE" --warmup 3 --iters "$ITERS" --threads "$(nproc)" "$@" 2>>"$R")
    log "pytorch $p"
    ratio "$label" "$e" "$p"
}

torch_only() { # label flag: PyTorch alone, mobilevit_s train and forward
    local label=$1 flag=$2 mode b p
    for mode in train forward; do
        b=$TRAIN_B; [ $mode = forward ] && b=$FWD_B
        p=$(timeout 150 "$PY" "$root/benches/vs_pytorch.py" --device "$torch_dev" --model mobilevit_s --mode $mode \
            --batch "$b" --size "$SIZE" --warmup 3 --iters "$ITERS" --threads "$(nproc)" "$flag" 2>>"$R")
        log "pytorch $label $p"
    done
}

log "# exvit device check, $(date -u +%FT%TZ), device $DEVICE, small=$SMALL"
section "0 environment"
{ nvidia-smi 2>&1 || echo "no nvidia-smi"; nvcc --version 2>&1 || echo "no nvcc"; } >>"$R"
"$PY" -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__, "gpu", torch.cuda.is_available())' >>"$R" 2>&1
# NVRTC: the toolkit's lib64, or the pip wheel's (nvidia-cuda-nvrtc) next to torch.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $("$PY" -c 'import nvidia, os; p = os.path.dirname(nvidia.__path__[0]); print(" ".join(os.path.join(p, "nvidia", s, "lib") for s in os.listdir(os.path.join(p, "nvidia"))))' 2>/dev/null); do
    [ -d "$d" ] && ls "$d"/libnvrtc* >/dev/null 2>&1 && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
"$EXVIT" --version >>"$R" 2>&1 || log "FAILED: $EXVIT does not run"

section "1 parity: CPU against $DEVICE (relative error <= 1e-2; max abs reported)"
for m in mobilevit_xxs mobilevit_s exmobilevit_928; do
    timeout 120 "$EXVIT" forward --model "$m" --size "$SIZE" --batch 2 --output "$OUT/parity-$m-cpu.safetensors" \
        >/dev/null 2>>"$R" \
      && run_timed 120 "$EXVIT" forward --device "$DEVICE" --model "$m" --size "$SIZE" --batch 2 \
           --compare "$OUT/parity-$m-cpu.safetensors" --tolerance 1e-2 \
      && log "PARITY $m ok"
done

section "2 speed, f32: mobilevit_s"
bench_pair "mobilevit_s train_b$TRAIN_B f32" mobilevit_s train "$TRAIN_B" f32
bench_pair "mobilevit_s forward_b$FWD_B f32" mobilevit_s forward "$FWD_B" f32

section "3 bf16 (exvit --precision bf16 against PyTorch autocast) and exmobilevit_928"
bench_pair "mobilevit_s train_b$TRAIN_B bf16" mobilevit_s train "$TRAIN_B" bf16 --bf16
bench_pair "mobilevit_s forward_b$FWD_B bf16" mobilevit_s forward "$FWD_B" bf16 --bf16
bench_pair "exmobilevit_928 train_b$TRAIN_B f32" exmobilevit_928 train "$TRAIN_B" f32
bench_pair "exmobilevit_928 forward_b$FWD_B f32" exmobilevit_928 forward "$FWD_B" f32

section "4 linear probe: $PROBE_N x 640, 1000 classes"
run_timed 240 "$EXVIT" probe bench --device "$DEVICE" --n "$PROBE_N" --n-eval 10000 --dim 640 --classes 1000 --max-iter 100

section "5 training on the GPU: f32, bf16, and data parallel (NCCL) at world size 1"
# 8 short epochs of mobilevit_xxs on 64 generated images of 4 tinted classes (easy: a working
# run reaches ~100% on them), evaluated on the same images: f32, then --precision bf16 (must learn
# as well), then --devices cuda:0 (world 1: the all-reduce, a mean over one replica, must leave
# the gradients as they are, so its weights must equal the f32 run's up to the GPU's own
# run-to-run differences).
gen_data="$OUT/gen-data"
"$PY" - "$gen_data" <<'PY' >>"$R" 2>&1
import os, sys
from PIL import Image
import numpy as np
root = sys.argv[1]
rng = np.random.default_rng(0)
for c in range(4):
    os.makedirs(f"{root}/c{c}", exist_ok=True)
    for i in range(16):
        a = rng.integers(0, 64, (72, 72, 3), dtype=np.uint8)
        a[..., c % 3] += 150 if c < 3 else 60
        Image.fromarray(a).save(f"{root}/c{c}/{i}.png")
print("generated", root)
PY
# cvnets' recipe with the warmup cut to one epoch (8 steps) and a faster EMA, as the demo does.
cat >"$OUT/gen-run.toml" <<TOML
model = "mobilevit_xxs"
train_data = "$gen_data"
val_data = "$gen_data"
out = "$OUT/train"
epochs = 8
seed = 1
size = 64
batch = 8
workers = 2
eval_crop_pct = 1.0
rrc_scale = [0.5, 1.0]

[recipe]
label_smoothing = 0.1
ema_momentum = 0.05

[recipe.schedule]
warmup_iters = 8
warmup_init_lr = 0.0002
max_lr = 0.002
min_lr = 0.0002
max_epochs = 8

[recipe.adamw]
beta1 = 0.9
beta2 = 0.999
eps = 0.00000001
weight_decay = 0.01
decay_norm_and_bias = true
TOML
train_args=(train --config "$OUT/gen-run.toml" --guard-every 1)
train_line() { # label out-dir args...: one run, its final line (val top-1 of the model and EMA) logged
    local label=$1 dir=$2; shift 2
    local t0=$SECONDS line
    line=$(timeout 100 "$EXVIT" "${train_args[@]}" --out "$dir" "$@" 2>>"$R" | tail -1)
    log "TRAIN $label: ${line:-FAILED (see above)} ($((SECONDS - t0)) s)"
}
compare_weights() { # label a.safetensors b.safetensors
    "$PY" - "$@" <<'PY' 2>&1 | tee -a "$R"
import sys
import numpy as np
from safetensors.numpy import load_file
label, a, b = sys.argv[1], load_file(sys.argv[2]), load_file(sys.argv[3])
assert a.keys() == b.keys(), "different keys"
keys = [k for k in a if a[k].size and a[k].dtype.kind == "f"]
worst = max((np.abs(a[k].astype("f8") - b[k].astype("f8")).max(), k) for k in keys)
num = sum(((a[k].astype("f8") - b[k].astype("f8")) ** 2).sum() for k in keys)
den = sum((a[k].astype("f8") ** 2).sum() for k in keys)
print(f"WEIGHTS {label}: relative L2 difference {np.sqrt(num / den):.3e}, max |dw| {worst[0]:.3e} ({worst[1]})")
PY
}
if [ "$DEVICE" = cpu ]; then
    # The script's own test on the CPU: the f32 run only (bf16 and data parallel need CUDA).
    train_line "f32 cpu" "$OUT/train-f32" --device cpu
    train_line "replicas 2 on cpu" "$OUT/train-rep2" --device cpu --replicas 2 --batch 4
    log "bf16 and NCCL data parallel: skipped on the CPU"
else
    train_line "f32 $DEVICE:0" "$OUT/train-f32" --device "$DEVICE:0"
    train_line "bf16 $DEVICE:0" "$OUT/train-bf16" --device "$DEVICE:0" --precision bf16
    train_line "ddp world 1 ($DEVICE:0)" "$OUT/train-ddp1" --devices "$DEVICE:0"
    compare_weights "ddp world 1 vs f32" "$OUT/train-f32/model.safetensors" "$OUT/train-ddp1/model.safetensors"
    # Two replicas on threads of the one GPU, batch 4 each (global 8, as the f32 run): the guard
    # compares their parameters after every step; BN sees 4 images, so the weights differ from
    # the f32 run's by more than rounding (reported, not bounded).
    train_line "replicas 2 on $DEVICE:0" "$OUT/train-rep2" --device "$DEVICE:0" --replicas 2 --batch 4
    compare_weights "replicas 2 vs f32" "$OUT/train-f32/model.safetensors" "$OUT/train-rep2/model.safetensors"
    compare_weights "bf16 vs f32" "$OUT/train-f32/model.safetensors" "$OUT/train-bf16/model.safetensors"
fi

section "6 torch.compile"
torch_only "compile" --compile
log ""
log "# done $(date -u +%T)"
