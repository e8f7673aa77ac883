#!/usr/bin/env bash
# What identity costs (issue 12's targets), on one server with a
# certificate (`natter cert --self-signed`) and a fresh data dir per run,
# pinned to CPU 0, the generator on CPU 1:
#
#   fan-out     C = 1000, K = 10, B = 64, R = 10,000, in the clear and over
#               TLS, interleaved (RUNS pairs, default 2): CPU per delivery
#               of TLS against plaintext
#   storm       100 clients chatting at R = 1,000 while 1,000 password
#               logins arrive within one second: chat p99, the logins'
#               answers, the server's peak RSS
#   idle        5,000 idle connections in the clear, then over TLS: memory
#               per connection
#
# Writes bench/results/identity.jsonl (after a line saying how, at which
# commit and on what machine), then renders the docs (bench/render.py).
#
#   bench/identity.sh     # about 3 minutes
#
# Loopback only; each run stops by itself and its server is stopped after.
# NATTER_BIN picks the binary (default: build target/release/natter);
# DATA_BASE the directory the data dirs are made in (default: the Cargo
# target dir).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
RUNS=${RUNS:-2}
STORM=${STORM:-1000}
IDLE=${IDLE:-5000}
PORT=${PORT:-16678}
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
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "127.0.0.1:$PORT is in use" >&2; exit 1; fi

out=$(mktemp)
CERTS=$(mktemp -d "$DATA_BASE/identity-certs.XXXXXX")
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
trap 'stop_server; rm -f "$out"; rm -rf "$CERTS"' EXIT
"$NATTER" cert --self-signed --out "$CERTS" >/dev/null

echo "{\"run\":$(python3 bench/run_record.py "WARMUP=$WARMUP DURATION=$DURATION RUNS=$RUNS STORM=$STORM IDLE=$IDLE bench/identity.sh")}" >"$out"

start_server() {
    DATA_DIR=$(mktemp -d "$DATA_BASE/identity.XXXXXX")
    RUST_LOG=warn $PRIORITY taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" --no-web \
        --data-dir "$DATA_DIR" --tls-cert "$CERTS/cert.pem" --tls-key "$CERTS/key.pem" \
        --rate-limit 0 --max-connections-per-ip 0 --max-connections 20000 \
        --presence-coalesce 100 --presence-interval 10 >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
}

# measure MODE ARGS...: one run against a fresh server; appends its JSON line.
measure() {
    local mode=$1 result
    shift
    start_server
    echo "$mode $*" >&2
    result=$($PRIORITY taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --json --quiet "$@") || result=null
    stop_server
    printf '{"mode":"%s","result":%s}\n' "$mode" "$result" >>"$out"
}

tls=(--tls --ca-file "$CERTS/cert.pem")
fanout=(--clients 1000 --group 10 --payload 64 --rate 10000 --warmup "$WARMUP" --duration "$DURATION")
for _ in $(seq "$RUNS"); do
    measure plain "${fanout[@]}"
    measure tls "${fanout[@]}" "${tls[@]}"
done
# The storm's logins are answered over many seconds (argon2id is slow by
# design): the window is long enough to hold all of them.
measure storm --clients 100 --group 10 --payload 64 --rate 1000 --warmup "$WARMUP" \
    --duration 30 --login-storm "$STORM"
measure idle-plain --idle --clients "$IDLE" --group 10 --duration 5
measure idle-tls --idle --clients "$IDLE" --group 10 --duration 5 "${tls[@]}"

cat "$out" >bench/results/identity.jsonl
python3 bench/render.py
echo "wrote bench/results/identity.jsonl and rendered the docs" >&2
