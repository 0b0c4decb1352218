#!/usr/bin/env bash
# Coverage-guided fuzzing of every exvit parser with libFuzzer (cargo fuzz, stable Rust: `-s
# none`, no sanitizer). Each target runs until RUNS inputs (default 200000) or SECONDS seconds
# (default 600), whichever comes first, JOBS targets at a time (default 2), from the committed
# seeds (fuzz/seeds/T) into a working corpus (fuzz/corpus/T, not committed). Limits per input:
# 10 s (a hang), 2 GiB RSS, 1 GiB per allocation. A crash lands in fuzz/artifacts/T/; copy it to
# fuzz/regressions/T/ once fixed (tests/fuzz.rs replays them).
# Needs: cargo install cargo-fuzz. Usage: tools/fuzz/run.sh [TARGET...]
# Prints one line per target: inputs run, seconds, corpus size, coverage, and the outcome.
set -uo pipefail
cd "$(dirname "$0")/../.."
runs="${RUNS:-200000}"
secs="${SECONDS_PER_TARGET:-600}"
jobs="${JOBS:-2}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/exvit-fuzz-target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
(cd fuzz && cargo fuzz build -s none --fuzz-dir .) || exit 1
logs=$(mktemp -d)
one() {
    local t=$1
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local start=$(date +%s)
    (cd fuzz && cargo fuzz run -s none --fuzz-dir . "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$runs" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1) >"$logs/$t.log" 2>&1
    local rc=$? took=$(( $(date +%s) - start ))
    local execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$')
    local cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1)
    local corpus=$(ls "fuzz/corpus/$t" | wc -l)
    local outcome="no finding"
    [ $rc -eq 0 ] || outcome="FINDING (exit $rc): $(grep -m1 -E 'ERROR|panicked|deadly|timeout|out-of-memory' "$logs/$t.log" | cut -c1-160); log $logs/$t.log"
    printf '%-20s %9s inputs %5s s  corpus %5s  %-10s %s\n' "$t" "${execs:-?}" "$took" "$corpus" "${cov:-cov: ?}" "$outcome"
}
export -f one
export runs secs logs
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'one {}'
