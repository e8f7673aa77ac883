#!/usr/bin/env bash
# What an idle registered connection costs natter: `natter bench --idle`
# with CLIENTS clients (default 15,000) in conversations of 10, once
# without and once with `presence-scope` (--scope), each against a fresh
# `natter serve --ephemeral` (server on CPU 0, generator on CPU 1). Reports
# server RSS per connection and the setup time split into connect, register
# and join. Writes bench/results/idle.jsonl (after a line saying how, at
# which commit and on what machine), then renders the docs
# (bench/render.py).
#
#   bench/idle.sh                 # two runs of 15,000 clients: about a minute
#   CLIENTS=2000 bench/idle.sh    # a quick look
#
# 15,000 clients need about 15,100 open files in each process: the script
# raises its soft limit (`ulimit -n`) as far as the hard limit allows.
# Loopback only. NATTER_BIN picks the binary (default: build
# target/release/natter).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-15000}
GROUP=${GROUP:-10}
HOLD=${HOLD:-5}
PORT=${PORT:-16678}
cd "$ROOT"

if [[ -n "${NATTER_BIN:-}" ]]; then
    NATTER=$NATTER_BIN
else
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    cargo build --release --quiet --bin natter
    NATTER=$target/release/natter
fi
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < CLIENTS + 100)); then
    echo "open-file limit $(ulimit -n) is too low for $CLIENTS clients" >&2
    exit 1
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "127.0.0.1:$PORT is in use" >&2; exit 1; fi

out=$(mktemp)
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap 'stop_server; rm -f "$out"' EXIT

echo "{\"run\":$(python3 bench/run_record.py "CLIENTS=$CLIENTS GROUP=$GROUP HOLD=$HOLD bench/idle.sh")}" >"$out"

# run MODE [BENCH ARGS]: one measured run against a fresh server; appends
# its JSON line.
run() {
    local mode=$1
    shift
    RUST_LOG=warn taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" --no-web --ephemeral \
        --rate-limit 0 --max-connections-per-ip 0 --max-connections 20000 >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    echo "$mode: $CLIENTS idle clients" >&2
    local result
    result=$(taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --idle --clients "$CLIENTS" --group "$GROUP" --duration "$HOLD" --json --quiet "$@") ||
        result=null
    stop_server
    printf '{"mode":"%s","result":%s}\n' "$mode" "$result" >>"$out"
}

run plain
run scope --scope

cat "$out" >bench/results/idle.jsonl
python3 bench/render.py
echo "wrote bench/results/idle.jsonl and rendered the docs" >&2
