#!/usr/bin/env bash
# What counting for /metrics costs the fan-out: the workload of
# bench/compare.sh (C = 1000 clients in groups of K = 10, 64-byte messages,
# R = 10,000 messages/s) against two builds of natter, interleaved: the
# base (BASE, default `main`: without metrics when run before they are
# merged; after, give the commit before the merge) and this tree (with
# metrics, scraped once a second on --metrics as Prometheus would), then
# base, this tree... (RUNS pairs, default 3). Each run gets a fresh
# `--ephemeral` server pinned to CPU 0, the generator (and the scraper) on
# CPU 1. Writes bench/results/metrics_ab.jsonl (after a line saying how, at
# which commit and on what machine), then renders the docs (bench/render.py).
#
#   bench/metrics_ab.sh              # 6 runs of WARMUP 2 s + DURATION 8 s: ~1.5 minutes
#   BASE=abc1234 bench/metrics_ab.sh # against another base commit
#
# Loopback only; each run stops by itself and its server is stopped after.
# NATTER_BIN and BASE_BIN pick the two binaries (default: build this tree's
# release binary, and BASE's in a temporary worktree with its own target
# dir, TARGET/metrics-ab/base; both are copied to TARGET/metrics-ab/).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
RATE=${RATE:-10000}
RUNS=${RUNS:-3}
PORT=${PORT:-16678}
METRICS_PORT=${METRICS_PORT:-16679}
BASE=${BASE:-main}
PRIORITY=${PRIORITY:-"nice -n -15"}
cd "$ROOT"

target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# The base gets a target dir of its own: cargo does not tell apart the
# workspace crates of two trees in one target dir, and would mix them.
mkdir -p "$target/metrics-ab"
if [[ -n "${NATTER_BIN:-}" ]]; then
    NATTER=$NATTER_BIN
else
    cargo build --release --quiet --bin natter
    NATTER=$target/metrics-ab/natter-metrics
    cp "$target/release/natter" "$NATTER"
fi
base_commit=$(git rev-parse --verify "$BASE^{commit}")
if [[ -n "${BASE_BIN:-}" ]]; then
    BASE_NATTER=$BASE_BIN
else
    tree=$(mktemp -d)
    git worktree add --quiet --detach "$tree" "$base_commit"
    (cd "$tree" && CARGO_TARGET_DIR="$target/metrics-ab/base" cargo build --release --quiet --bin natter)
    git worktree remove --force "$tree"
    BASE_NATTER=$target/metrics-ab/natter-base
    cp "$target/metrics-ab/base/release/natter" "$BASE_NATTER"
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
for port in "$PORT" "$METRICS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "127.0.0.1:$port is in use" >&2; exit 1; fi
done

out=$(mktemp)
SERVER_PID=""
SCRAPER_PID=""
stop_server() {
    if [[ -n "$SCRAPER_PID" ]]; then
        kill "$SCRAPER_PID" 2>/dev/null || true
        wait "$SCRAPER_PID" 2>/dev/null || true
        SCRAPER_PID=""
    fi
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap 'stop_server; rm -f "$out"' EXIT

echo "{\"run\":$(python3 bench/run_record.py "WARMUP=$WARMUP DURATION=$DURATION RUNS=$RUNS BASE=$BASE bench/metrics_ab.sh"),\"base\":\"$base_commit\"}" >"$out"

# run MODE: one measured run against a fresh server; appends its JSON line.
run() {
    local mode=$1 binary extra=()
    if [[ $mode == metrics ]]; then
        binary=$NATTER
        extra=(--metrics "127.0.0.1:$METRICS_PORT")
    else
        binary=$BASE_NATTER
    fi
    RUST_LOG=warn $PRIORITY taskset -c 0 "$binary" serve --listen "127.0.0.1:$PORT" --no-web --ephemeral \
        "${extra[@]}" --rate-limit 0 --max-connections-per-ip 0 --max-connections 20000 \
        --presence-coalesce 100 --presence-interval 10 >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    if [[ $mode == metrics ]]; then
        # As Prometheus would, but every second rather than every 15.
        taskset -c 1 bash -c "while sleep 1; do curl -sf -o /dev/null http://127.0.0.1:$METRICS_PORT/metrics; done" &
        SCRAPER_PID=$!
    fi
    echo "$mode R=$RATE" >&2
    local result
    result=$($PRIORITY taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --clients 1000 --group 10 --payload 64 --rate "$RATE" --warmup "$WARMUP" \
        --duration "$DURATION" --json --quiet) || result=null
    local scraped=null
    if [[ $mode == metrics ]]; then
        scraped=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
            awk '$1 == "natter_deliveries_total" { print $2 }') || scraped=null
    fi
    stop_server
    printf '{"mode":"%s","rate":%s,"deliveries_counted":%s,"result":%s}\n' \
        "$mode" "$RATE" "${scraped:-null}" "$result" >>"$out"
}

for _ in $(seq "$RUNS"); do
    run base
    run metrics
done

cat "$out" >bench/results/metrics_ab.jsonl
python3 bench/render.py
echo "wrote bench/results/metrics_ab.jsonl and rendered the docs" >&2
