#!/usr/bin/env bash
# CI: the fuzz targets. Every step's failure fails the run.
#
# 1. The committed corpus, replayed as ordinary tests on stable Rust
#    (crates/proto/tests/fuzz_corpus.rs, crates/core/tests/fuzz_corpus.rs).
# 2. cargo-fuzz (installed if missing, at the version below) builds every
#    target with libFuzzer and AddressSanitizer: stable rustc with
#    RUSTC_BOOTSTRAP=1, since cargo-fuzz passes nightly flags. A failed
#    install or a target that does not compile is a failure.
# 3. Short live runs: each target for FUZZ_SECONDS (default 20) from the
#    committed corpus, two at a time (one per core). Their clock starts only
#    now, after the replay, the install and the build. New inputs go to a
#    scratch directory, never into fuzz/corpus. A crash, leak, timeout or
#    out-of-memory fails the run; its input is kept in fuzz/artifacts/.
#
# Twenty seconds a target is a smoke run on top of the replayed corpus, not
# a fuzzing campaign (docs/RELIABILITY.md says how to run one); it is what
# fits CI's budget on two cores with cargo-fuzz installed and the targets
# built from nothing on a clean machine.
#
# FUZZ_RESULTS=FILE writes what the live runs did: a line saying how, at
# which commit and on what machine, then one JSON line per target
# (executions, seconds, new inputs); bench/results/fuzz-ci.jsonl was
# written so.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
targets=(framed classic json pickle chat)
cargo_fuzz_version=0.13.2
triple=$(rustc -vV | sed -n 's/^host: //p')
phase_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - phase_start )); }

echo "== fuzz corpus as regression tests"
cargo nextest run -p natter-proto -p natter-core --test fuzz_corpus

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    echo "== installing cargo-fuzz $cargo_fuzz_version ($(elapsed) s into the phase)"
    cargo install --locked --version "$cargo_fuzz_version" cargo-fuzz
fi

echo "== building the fuzz targets ($(elapsed) s into the phase)"
(cd fuzz && env -u CARGO_TARGET_DIR cargo fuzz build -O)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# One target's live run; its log in $scratch/<target>.log.
run_target() {
    local target=$1
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    "fuzz/target/$triple/release/$target" "$scratch/$target" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/" >"$scratch/$target.log" 2>&1
}

echo "== fuzzing each target for $seconds s, two at a time ($(elapsed) s into the phase)"
if [[ -n "${FUZZ_RESULTS:-}" ]]; then
    echo "{\"run\":$(python3 bench/run_record.py "FUZZ_SECONDS=$seconds bash .ci/fuzz.sh")}" >"$FUZZ_RESULTS"
fi
live_start=$(date +%s)
for target in "${targets[@]}"; do
    # At most two at once: wait for one to finish before starting a third.
    while (( $(jobs -rp | wc -l) >= 2 )); do wait -n || true; done
    { if run_target "$target"; then echo 0; else echo $?; fi >"$scratch/$target.rc"; } &
done
wait
live=$(( $(date +%s) - live_start ))

failed=()
for target in "${targets[@]}"; do
    log="$scratch/$target.log"
    [[ "$(cat "$scratch/$target.rc")" == 0 ]] || failed+=("$target")
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    new_inputs=$(find "$scratch/$target" -type f | wc -l)
    echo "$target: ${executions:-?} executions in $seconds s (${rate:-?}/s), $new_inputs new inputs"
    if [[ -n "${FUZZ_RESULTS:-}" ]]; then
        printf '{"target":"%s","seconds":%s,"executions":%s,"exec_per_s":%s,"new_inputs":%s}\n' \
            "$target" "$seconds" "${executions:-null}" "${rate:-null}" "$new_inputs" >>"$FUZZ_RESULTS"
    fi
done
echo "== fuzz phase: $(elapsed) s in all, of which $live s of live runs"

for target in "${failed[@]}"; do
    echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/:"
    grep -E 'panicked|SUMMARY|ERROR|Test unit written' "$scratch/$target.log" || tail -20 "$scratch/$target.log"
done
(( ${#failed[@]} == 0 ))
