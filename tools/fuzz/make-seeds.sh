#!/usr/bin/env bash
# Regenerates the fuzz seed corpora, fuzz/seeds/<target>/: small valid inputs of every parser,
# from the test fixtures and from exvit itself (weights, tar shards, manifests, feature caches).
# Usage: tools/fuzz/make-seeds.sh [path/to/exvit]   (default: the dev build, built if needed)
set -euo pipefail
cd "$(dirname "$0")/../.."
exvit="${1:-}"
if [ -z "$exvit" ]; then
    cargo build -q -p exvit
    exvit="${CARGO_TARGET_DIR:-target}/debug/exvit"
fi
seeds=fuzz/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{image,jpeg_window,safetensors,safetensors_header,tar_shard,matfile,cifar,manifest,feature_cache,run_config,model_toml,loc_csv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
images=tests/fixtures/data/images
tiny=tests/fixtures/parity/tiny.toml

# Images: every fixture (JPEG baseline/progressive/CMYK/YCCK/gray, PNG 8/16-bit/palette/RGBA, GIF).
cp "$images"/* "$seeds/image/"
# The C shim: 6 control bytes (scale, flags, window) before a JPEG.
python3 - "$images" "$seeds/jpeg_window" <<'PY'
import sys, pathlib
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
controls = [bytes([0, 0, 0, 0, 0, 0]), bytes([1, 1, 2, 3, 20, 10]), bytes([3, 3, 0, 0, 7, 7])]
for i, f in enumerate(sorted(p for p in src.iterdir() if p.suffix == ".jpg")):
    (dst / f"{f.stem}.bin").write_bytes(controls[i % len(controls)] + f.read_bytes())
PY
# Weights: the tiny model's, written by exvit (timm keys, F32 + an int64 scalar).
"$exvit" zoo init --model "$tiny" --num-classes 3 --seed 1 --out "$work/tiny.safetensors" >/dev/null
cp "$work/tiny.safetensors" "$seeds/safetensors/tiny.safetensors"
cp "$work/tiny.safetensors" "$seeds/safetensors_header/tiny.safetensors"
cp tests/fixtures/train/adamw.safetensors "$seeds/safetensors_header/"
# A small ImageFolder, then its tar shard and its Parquet manifest.
for c in a b; do mkdir -p "$work/folder/$c"; done
cp "$images/gray.png" "$images/rgb_q50.jpg" "$work/folder/a/"
cp "$images/palette.gif" "$images/gray.jpg" "$work/folder/b/"
"$exvit" data pack "$work/folder" "$work/tar" --per-shard 4 >/dev/null
cp "$work/tar"/shard-*.tar "$seeds/tar_shard/"
"$exvit" data check "$work/folder" --manifest-dir "$work/manifests" >/dev/null
cp "$work/manifests"/*.parquet "$seeds/manifest/manifest.parquet"
# The devkit's meta.mat, as it is (zlib-compressed elements) and inflated (so that mutations
# reach the element structure instead of breaking the deflate stream).
cp tests/fixtures/data/devkit/meta.mat "$seeds/matfile/"
python3 - tests/fixtures/data/devkit/meta.mat "$seeds/matfile/meta_inflated.mat" <<'PY'
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
out, pos = bytearray(b[:128]), 128
while pos + 8 <= len(b):
    ty, n = struct.unpack_from("<II", b, pos)
    data = b[pos + 8:pos + 8 + n]
    if ty == 15:  # miCOMPRESSED: its inflated bytes are a whole element
        data = zlib.decompress(data)
        out += data + bytes(-len(data) % 8)
        pos += 8 + n
    else:
        out += b[pos:pos + 8 + n + (-n % 8)]
        pos += 8 + n + (-n % 8)
open(sys.argv[2], "wb").write(bytes(out))
PY
# A CIFAR-10 batch of two records (label byte + 3072 pixel bytes).
python3 -c "
import sys
rec = lambda label, k: bytes([label]) + bytes((i * k) % 256 for i in range(3072))
open(sys.argv[1], 'wb').write(rec(3, 7) + rec(9, 13))
" "$seeds/cifar/two_records.bin"
# A feature cache (two taps, f32 and f16): manifest.json and its first shard, packed as
# exvit_tests::fuzz::join2 does (u32 LE length of the manifest, the manifest, the shard).
for dtype in f32 f16; do
    "$exvit" probe extract --model "$tiny" --data "$work/folder" --taps stem,stages.2:avgmax --resolution 32 \
        --batch 2 --shard-rows 2 --workers 1 --dtype "$dtype" --out "$work/cache-$dtype" >/dev/null
    python3 -c "
import struct, sys
m = open(sys.argv[1] + '/manifest.json', 'rb').read()
s = open(sys.argv[1] + '/shard-00000.arrow', 'rb').read()
open(sys.argv[2], 'wb').write(struct.pack('<I', len(m)) + m + s)
" "$work/cache-$dtype" "$seeds/feature_cache/cache-$dtype.bin"
done
# TOML: the shipped run configs, a run directory's config.toml, the model variants.
cp configs/*.toml "$seeds/run_config/"
cp tests/fixtures/rundir-v0/*/config.toml "$seeds/run_config/rundir-v0.toml" 2>/dev/null || true
cp "$tiny" "$seeds/model_toml/tiny.toml"
for f in tests/fixtures/*/*.toml; do [ "$f" = "$tiny" ] || cp "$f" "$seeds/model_toml/$(basename "$f")"; done
# Kaggle's LOC_val_solution.csv, its header and three lines in its format.
printf 'ImageId,PredictionString\nILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \nILSVRC2012_val_00000001,n01751748 85 93 481 361 \nILSVRC2012_val_00000002,n09193705 0 0 499 374 \n' \
    > "$seeds/loc_csv/LOC_val_solution.csv"
find "$seeds" -type f | wc -l | xargs echo "seed files:"
du -sh "$seeds"
