#!/usr/bin/env bash
# The criterion micro-benchmarks of docs/PERFORMANCE.md, in short runs:
# codec (crates/proto/benches/codec.rs) and fanout
# (crates/core/benches/fanout.rs), WARM_UP seconds of warm-up (default 1)
# and MEASURE seconds of measurement (default 2) per benchmark. Every
# estimate criterion writes goes to bench/results/criterion.jsonl, after a
# line saying how, at which commit and on what machine; then the docs are
# rendered (bench/render.py).
#
#   bench/criterion.sh     # about a minute of measuring, after the build
#
# PRIORITY (default "nice -n -15") runs the measurement.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARM_UP=${WARM_UP:-1}
MEASURE=${MEASURE:-2}
# The measuring runs at a raised priority (as bench/compare.sh's do), so that
# other work on the machine disturbs it less.
PRIORITY=${PRIORITY:-"nice -n -15"}
cd "$ROOT"

target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
flags=(--warm-up-time "$WARM_UP" --measurement-time "$MEASURE" --noplot)
# Build both first, then measure, so the record's load average is the
# measurement's.
cargo bench -p natter-proto --bench codec --no-run
cargo bench -p natter-core --bench fanout --no-run
record=$(python3 bench/run_record.py "WARM_UP=$WARM_UP MEASURE=$MEASURE bench/criterion.sh")
rm -rf "$target/criterion"
$PRIORITY cargo bench -p natter-proto --bench codec -- "${flags[@]}"
$PRIORITY cargo bench -p natter-core --bench fanout -- "${flags[@]}"

python3 - "$target/criterion" "$record" >bench/results/criterion.jsonl.new <<'PY'
import json, os, sys
root, record = sys.argv[1], sys.argv[2]
print(json.dumps({"run": json.loads(record)}))
found = []
for directory, _, files in os.walk(root):
    if os.path.basename(directory) != "new" or "estimates.json" not in files:
        continue
    bench = json.load(open(os.path.join(directory, "benchmark.json")))
    est = json.load(open(os.path.join(directory, "estimates.json")))
    found.append({
        "id": bench["full_id"],
        "median_ns": round(est["median"]["point_estimate"], 3),
        "mean_ns": round(est["mean"]["point_estimate"], 3),
        "mean_lower_ns": round(est["mean"]["confidence_interval"]["lower_bound"], 3),
        "mean_upper_ns": round(est["mean"]["confidence_interval"]["upper_bound"], 3),
    })
if not found:
    sys.exit(f"no criterion estimates under {root}")
for line in sorted(found, key=lambda r: r["id"]):
    print(json.dumps(line))
PY
mv bench/results/criterion.jsonl.new bench/results/criterion.jsonl
python3 bench/render.py
echo "wrote bench/results/criterion.jsonl and rendered the docs" >&2
