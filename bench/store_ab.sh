#!/usr/bin/env bash
# What durable history costs the fan-out: the workload of bench/compare.sh
# (C = 1000 clients in groups of K = 10, 64-byte messages, R = 10,000
# messages/s) against `natter serve --ephemeral` and against `natter serve
# --data-dir DIR` (DIR fresh for each run, on a real disk: a tmpfs has no
# fsync), interleaved: ephemeral, durable, ephemeral, durable (RUNS pairs,
# default 2). Each run gets a fresh server pinned to CPU 0, the generator
# on CPU 1. Writes bench/results/store_ab.jsonl (after a line saying how,
# at which commit and on what machine), then renders the docs
# (bench/render.py). How fast the machine was is recorded too: the floor of
# bench/floor.c (a plain 64-byte send() per delivery, at the same rate)
# and how long a sync takes on DATA_BASE's disk (bench/disk_probe.py),
# before the first run and after the last.
#
#   bench/store_ab.sh     # 4 runs of WARMUP 2 s + DURATION 8 s (+ drain): ~1 minute
#
# Loopback only; each run stops by itself and its server is stopped after.
# NATTER_BIN picks the binary (default: build target/release/natter);
# DATA_BASE the directory the data dirs are made in (default: the Cargo
# target dir).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
RATE=${RATE:-10000}
RUNS=${RUNS:-2}
PORT=${PORT:-16677}
METRICS_PORT=${METRICS_PORT:-$((PORT + 1))}
PRIORITY=${PRIORITY:-"nice -n -15"}
cd "$ROOT"

target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
if [[ -n "${NATTER_BIN:-}" ]]; then
    NATTER=$NATTER_BIN
else
    cargo build --release --quiet --bin natter
    NATTER=$target/release/natter
fi
DATA_BASE=${DATA_BASE:-$target}
mkdir -p "$DATA_BASE"
if [[ "$(stat -f -c %T "$DATA_BASE")" == tmpfs ]]; then
    echo "$DATA_BASE is on a tmpfs (no fsync): set DATA_BASE to a directory on a disk" >&2
    exit 1
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "127.0.0.1:$PORT is in use" >&2; exit 1; fi

out=$(mktemp)
SERVER_PID=""
DATA_DIR=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [[ -n "$DATA_DIR" ]]; then
        rm -rf "$DATA_DIR"
        DATA_DIR=""
    fi
}
trap 'stop_server; rm -f "$out"' EXIT

echo "{\"run\":$(python3 bench/run_record.py "WARMUP=$WARMUP DURATION=$DURATION RUNS=$RUNS bench/store_ab.sh")}" >"$out"

# store_figures: for a durable server, what its writer thread did over its
# whole life (setup and warm-up included): group commits and messages
# (from its metrics) and the writer thread's CPU seconds (from /proc).
store_figures() {
    python3 - "$SERVER_PID" "$METRICS_PORT" <<'PY'
import json, os, sys, urllib.request
pid, port = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
metric = lambda name: next(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " "))
ticks = os.sysconf("SC_CLK_TCK")
writer = 0.0
for tid in os.listdir(f"/proc/{pid}/task"):
    with open(f"/proc/{pid}/task/{tid}/comm") as f:
        if not f.read().startswith("natter-store-wr"):
            continue
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    writer += (int(fields[11]) + int(fields[12])) / ticks
print(json.dumps({"commits": int(metric("natter_store_commit_seconds_count")),
                  "messages": int(metric("natter_messages_received_total")),
                  "writer_cpu_s": round(writer, 3)}))
PY
}

# run MODE: one measured run against a fresh server; appends its JSON line.
run() {
    local mode=$1 store
    if [[ $mode == durable ]]; then
        DATA_DIR=$(mktemp -d "$DATA_BASE/store-ab.XXXXXX")
        store=(--data-dir "$DATA_DIR" --metrics "127.0.0.1:$METRICS_PORT")
    else
        store=(--ephemeral)
    fi
    RUST_LOG=warn $PRIORITY taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" --no-web "${store[@]}" \
        --rate-limit 0 --max-connections-per-ip 0 --max-connections 20000 \
        --presence-coalesce 100 --presence-interval 10 >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    echo "$mode R=$RATE" >&2
    local result
    result=$($PRIORITY taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --clients 1000 --group 10 --payload 64 --rate "$RATE" --warmup "$WARMUP" \
        --duration "$DURATION" --json --quiet) || result=null
    local figures=null
    if [[ $mode == durable ]]; then figures=$(store_figures) || figures=null; fi
    stop_server
    printf '{"mode":"%s","rate":%s,"result":%s,"store":%s}\n' "$mode" "$RATE" "$result" "$figures" >>"$out"
}

# floor WHEN: the machine's floor now, as one JSON line.
floor() {
    local result
    result=$($PRIORITY "$FLOOR" 1000 $((RATE * 9)) 5 0 1 64) || result=null
    printf '{"floor":%s,"when":"%s"}\n' "$result" "$1" >>"$out"
}

# disk WHEN: the disk's sync latencies now, as one JSON line.
disk() {
    local result
    result=$(python3 bench/disk_probe.py "$DATA_BASE" 5) || result=null
    printf '{"disk":%s,"when":"%s"}\n' "$result" "$1" >>"$out"
}

FLOOR=$(mktemp)
gcc -O2 -pthread -o "$FLOOR" bench/floor.c
floor before
disk before
for _ in $(seq "$RUNS"); do
    run ephemeral
    run durable
done
floor after
disk after
rm -f "$FLOOR"

cat "$out" >bench/results/store_ab.jsonl
python3 bench/render.py
echo "wrote bench/results/store_ab.jsonl and rendered the docs" >&2
