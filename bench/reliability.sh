#!/usr/bin/env bash
# The figures of docs/RELIABILITY.md: runs the fault tests
# (crates/server/tests/faults.rs) and the shutdown test
# (tests/shutdown_under_load.rs) RUNS times (default 3) and writes every
# `FIGURES {json}` line they print, tagged with its run, to
# bench/results/reliability.jsonl, after a line saying how, at which commit
# and on what machine. Then renders the docs (bench/render.py).
#
#   bench/reliability.sh              # about 2 minutes on 2 cores
#   RUNS=1 bench/reliability.sh
#
# Loopback only; every test is bounded (see the test files).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
cd "$ROOT"

out=$(mktemp)
trap 'rm -f "$out" "$out.log"' EXIT
# Build first, so that compiling is not in the measured wall time.
cargo nextest run -p natter-server --test faults -p natter --test shutdown_under_load --no-run
echo "{\"run\":$(python3 bench/run_record.py "RUNS=$RUNS bench/reliability.sh")}" >"$out"

# tag RUN: the FIGURES lines of the log, as JSON lines with "run": RUN.
tag() {
    sed -n 's/^FIGURES //p' "$out.log" | python3 -c '
import json, sys
for line in sys.stdin:
    figures = json.loads(line)
    figures["run"] = int(sys.argv[1])
    print(json.dumps(figures))' "$1" >>"$out"
}

for run in $(seq "$RUNS"); do
    echo "== run $run of $RUNS: fault tests" >&2
    start=$(date +%s.%N)
    cargo nextest run -p natter-server --test faults --no-capture >"$out.log" 2>&1 ||
        { cat "$out.log" >&2; exit 1; }
    seconds=$(python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$start")
    echo "FIGURES {\"test\":\"faults_file\",\"seconds\":$seconds}" >>"$out.log"
    tag "$run"
    echo "== run $run of $RUNS: shutdown under load" >&2
    cargo nextest run -p natter --test shutdown_under_load --no-capture >"$out.log" 2>&1 ||
        { cat "$out.log" >&2; exit 1; }
    tag "$run"
done

mkdir -p bench/results
cat "$out" >bench/results/reliability.jsonl
python3 bench/render.py
echo "wrote bench/results/reliability.jsonl and rendered the docs" >&2
