#!/usr/bin/env bash
# The store's criterion bench (crates/store/benches/store.rs) in short runs:
# durable commits, the writer thread, HISTORY of 100 and start-up with
# 1,000,000 messages stored. WARM_UP seconds of warm-up (default 1) and
# MEASURE seconds of measurement (default 3) per benchmark; the bench's
# own percentile runs (steady-rate commit latency, HISTORY, start-up) are
# fixed in size. Writes bench/results/store.jsonl: a line saying how, at
# which commit and on what machine, then criterion's estimates (one line a
# benchmark, as bench/criterion.sh) and the bench's `FIGURE` lines; then
# renders the docs (bench/render.py).
#
#   bench/store.sh     # a few minutes after the build (building the
#                      # 1,000,000-message store is part of it)
#
# The data files go under NATTER_BENCH_DIR (default: Cargo's target dir),
# which must be on a real disk: a tmpfs has no fsync and would flatter
# every durable figure. PRIORITY (default "nice -n -15") runs the
# measurement.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARM_UP=${WARM_UP:-1}
MEASURE=${MEASURE:-3}
PRIORITY=${PRIORITY:-"nice -n -15"}
cd "$ROOT"

target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
data=${NATTER_BENCH_DIR:-$target/tmp}
mkdir -p "$data"
if [[ "$(stat -f -c %T "$data")" == tmpfs ]]; then
    echo "$data is on a tmpfs (no fsync): set NATTER_BENCH_DIR to a directory on a disk" >&2
    exit 1
fi
export NATTER_BENCH_DIR=$data

# Build first, then measure, so the record's load average is the
# measurement's.
cargo bench -p natter-store --bench store --no-run
record=$(python3 bench/run_record.py "WARM_UP=$WARM_UP MEASURE=$MEASURE bench/store.sh")
rm -rf "$target/criterion"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
$PRIORITY cargo bench -p natter-store --bench store -- \
    --warm-up-time "$WARM_UP" --measurement-time "$MEASURE" --noplot | tee "$log"

python3 - "$target/criterion" "$record" "$log" >bench/results/store.jsonl.new <<'PY'
import json, os, sys
root, record, log = sys.argv[1], sys.argv[2], sys.argv[3]
print(json.dumps({"run": json.loads(record)}))
found = []
for directory, _, files in os.walk(root):
    if os.path.basename(directory) != "new" or "estimates.json" not in files:
        continue
    bench = json.load(open(os.path.join(directory, "benchmark.json")))
    est = json.load(open(os.path.join(directory, "estimates.json")))
    line = {
        "id": bench["full_id"],
        "median_ns": round(est["median"]["point_estimate"], 3),
        "mean_ns": round(est["mean"]["point_estimate"], 3),
        "mean_lower_ns": round(est["mean"]["confidence_interval"]["lower_bound"], 3),
        "mean_upper_ns": round(est["mean"]["confidence_interval"]["upper_bound"], 3),
    }
    throughput = bench.get("throughput") or {}
    if "Elements" in throughput:
        line["elements"] = throughput["Elements"]
    found.append(line)
if not found:
    sys.exit(f"no criterion estimates under {root}")
for line in sorted(found, key=lambda r: r["id"]):
    print(json.dumps(line))
figures = [json.loads(l.split(" ", 1)[1]) for l in open(log) if l.startswith("FIGURE ")]
if not figures:
    sys.exit("the bench printed no FIGURE lines")
for figure in figures:
    print(json.dumps({"figure": figure}))
PY
mv bench/results/store.jsonl.new bench/results/store.jsonl
python3 bench/render.py
echo "wrote bench/results/store.jsonl and rendered the docs" >&2
