#!/usr/bin/env bash
# natter against itself: the workload of bench/compare.sh (C = 1000 clients
# in groups of K = 10, 64-byte messages) with one server setting changed at
# a time, each run on a fresh server pinned to CPU 0, the generator on
# CPU 1. Writes bench/results/ab.jsonl (after a line saying how, at which
# commit and on what machine), then renders the docs (bench/render.py).
#
#   coalescing  --write-coalesce 0, 2, 5 (the default), 10 at R = 10,000,
#               and 5, 10 at R = 15,000
#   threads     --threads 1 (the default) and 2 at R = 10,000
#   low-rate    the defaults at R = 1,000
#
#   bench/ab.sh           # 9 runs of WARMUP 2 s + DURATION 5 s (+ drain): ~2 minutes
#
# Loopback only; each run stops by itself and its server is stopped after.
# NATTER_BIN picks the binary (default: build target/release/natter).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-5}
PORT=${PORT:-16676}
PRIORITY=${PRIORITY:-"nice -n -15"}
cd "$ROOT"

if [[ -n "${NATTER_BIN:-}" ]]; then
    NATTER=$NATTER_BIN
else
    cargo build --release --quiet --bin natter
    NATTER=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/natter
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "127.0.0.1:$PORT is in use" >&2; exit 1; fi

out=$(mktemp)
SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap 'stop_server; rm -f "$out"' EXIT

echo "{\"run\":$(python3 bench/run_record.py "WARMUP=$WARMUP DURATION=$DURATION bench/ab.sh")}" >"$out"

# run GROUP RATE SERVE-FLAGS...: one measured run; appends its JSON line.
run() {
    local group=$1 rate=$2; shift 2
    # --ephemeral: no store, the delivery path alone, as in bench/compare.sh's
    # published run (which predates the store).
    RUST_LOG=warn $PRIORITY taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" --no-web --ephemeral \
        --rate-limit 0 --max-connections-per-ip 0 --max-connections 20000 \
        --presence-coalesce 100 --presence-interval 10 "$@" >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    echo "$group R=$rate $*" >&2
    local result
    result=$($PRIORITY taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --clients 1000 --group 10 --payload 64 --rate "$rate" --warmup "$WARMUP" \
        --duration "$DURATION" --json --quiet) || result=null
    stop_server
    printf '{"group":"%s","rate":%s,"flags":"%s","result":%s}\n' "$group" "$rate" "$*" "$result" >>"$out"
}

for ms in 0 2 5 10; do run coalescing 10000 --write-coalesce "$ms"; done
for ms in 5 10; do run coalescing 15000 --write-coalesce "$ms"; done
for threads in 1 2; do run threads 10000 --threads "$threads"; done
run low-rate 1000

cat "$out" >bench/results/ab.jsonl
python3 bench/render.py
echo "wrote bench/results/ab.jsonl and rendered the docs" >&2
