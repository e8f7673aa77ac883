#!/usr/bin/env bash
# CI: the fuzz targets, within a time budget (default 180 s, FUZZ_BUDGET to
# change it; FUZZ_SECONDS caps each target, default 20).
#
# 1. Always: the committed corpus replayed as ordinary tests on stable Rust
#    (crates/proto/tests/fuzz_corpus.rs, crates/core/tests/fuzz_corpus.rs).
# 2. Then, while the budget lasts: install cargo-fuzz if missing, build the
#    targets (stable rustc with RUSTC_BOOTSTRAP=1, since cargo-fuzz needs
#    nightly flags), and run each target briefly from the committed corpus.
#    New inputs go to a scratch directory, never into fuzz/corpus.
# Running out of budget in step 2 is not a failure (step 1 covered the
# corpus); a crash is, and its input is kept in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${FUZZ_BUDGET:-180}
per_target_cap=${FUZZ_SECONDS:-20}
targets=(framed classic json pickle chat)
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }

echo "== fuzz corpus as regression tests"
cargo nextest run -p natter-proto -p natter-core --test fuzz_corpus

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz ($(left) s left)"
    if (( $(left) < 10 )) || ! timeout "$(left)" cargo install --locked cargo-fuzz; then
        echo "fuzzing skipped: cargo-fuzz could not be installed in the budget"
        exit 0
    fi
fi

echo "== building the fuzz targets ($(left) s left)"
if (( $(left) < 10 )) || ! (cd fuzz && timeout "$(left)" cargo fuzz build -O); then
    echo "fuzzing skipped: the targets did not build in the budget"
    exit 0
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for i in "${!targets[@]}"; do
    target=${targets[$i]}
    remaining_targets=$(( ${#targets[@]} - i ))
    seconds=$(( $(left) / remaining_targets - 5 ))
    (( seconds > per_target_cap )) && seconds=$per_target_cap
    if (( seconds < 3 )); then
        echo "fuzzing stopped before $target: budget spent"
        break
    fi
    echo "== fuzzing $target for ${seconds} s"
    mkdir -p "$scratch/$target"
    status=0
    (cd fuzz && cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1) >"$scratch/$target.log" 2>&1 ||
        status=$?
    grep -E '^stat::number_of_executed_units|panicked|SUMMARY|Test unit written' "$scratch/$target.log" || true
    if (( status != 0 )); then
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/"
        exit 1
    fi
done
