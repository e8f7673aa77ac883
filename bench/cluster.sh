#!/usr/bin/env bash
# What the replicated log costs (docs/CLUSTER.md): the fan-out workload of
# bench/compare.sh (C = 1000 clients in groups of K = 10, 64-byte messages)
# at R = 2,000 and 10,000 messages/s against
#   single:  one `natter serve --data-dir DIR` (the durable single server);
#   cluster: node a of a cluster (`--nats`, three nats-servers with
#            JetStream on loopback, R=3), every client on it, plus node b
#            with no clients at all: a follower that only applies the log.
# Per run: latency and CPU per delivery from `natter bench`; the follower's
# CPU time, the stream's entries and the messages its copy applied (its
# admin socket's stats) over the whole bench, so its CPU per message is
# what applying one message costs each node (an entry may hold several
# inputs: the appender batches what is queued at once); the three
# nats-servers' CPU per entry and per message. Node a and the single server are pinned to
# CPU 0, the generator to CPU 1; nats-servers and the follower share both
# (a 2-core machine cannot give them cores of their own). Each cluster run
# gets fresh nats-servers and stores. Writes bench/results/cluster.jsonl
# (after a line saying how, at which commit, on what machine), then renders
# the docs (bench/render.py).
#
#   bench/cluster.sh     # 2 rates x 2 modes x RUNS (1) of WARMUP 2 s + DURATION 8 s: ~2 minutes
#
# Loopback only; every process started here is stopped at exit. NATTER_BIN
# picks the binary (default: build target/release/natter); DATA_BASE where
# the data dirs go (default: the Cargo target dir; not a tmpfs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
RATES=${RATES:-"2000 10000"}
RUNS=${RUNS:-1}
PORT=${PORT:-16680}
NATS_BASE=${NATS_BASE:-14300}
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
command -v nats-server >/dev/null || { echo "nats-server is needed (bash .ci/install-nats.sh)" >&2; exit 1; }
NATS_PROGRAM=$(command -v pyenv >/dev/null && pyenv which nats-server 2>/dev/null || command -v nats-server)

out=$(mktemp)
PIDS=()
WORK=""
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    if [[ -n "$WORK" ]]; then rm -rf "$WORK"; WORK=""; fi
}
trap 'stop_all; rm -f "$out"' EXIT

wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# wait_ready SOCKET PID: a node listens before it has joined the cluster
# (fresh nats-servers take seconds to elect JetStream's leaders); its admin
# socket appears once it serves. Bounded; fails if the node exits.
wait_ready() {
    for _ in $(seq 600); do
        [[ -S "$1" ]] && return 0
        kill -0 "$2" 2>/dev/null || { echo "node with $1 exited at start" >&2; return 1; }
        sleep 0.1
    done
    echo "no admin socket $1 after 60 s" >&2
    return 1
}

# CPU seconds (user + system) a process has used so far.
cpu_s() {
    python3 -c 'import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))' "$1"
}

# Entries in the stream, from the first nats-server's monitoring port.
entries() {
    python3 -c 'import json, sys, urllib.request
d = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/jsz?streams=true"))
n = 0
for a in d.get("account_details", []):
    for s in a.get("stream_detail", []):
        if s["name"] == "NATTER_LOG":
            n = max(n, s["state"]["messages"])
print(n)' "$((NATS_BASE + 20))"
}

# Messages the follower's copy has applied (its admin socket's stats).
follower_messages() {
    "$NATTER" admin --admin-socket "$WORK/b/admin-b.sock" --json stats |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["result"]["messages_since_start"])'
}

start_nats() {
    local i urls=() routes
    for i in 0 1 2; do
        routes=""
        for j in 0 1 2; do
            if [[ $j != "$i" ]]; then routes+="nats://127.0.0.1:$((NATS_BASE + 10 + j)),"; fi
        done
        "$NATS_PROGRAM" -js -sd "$WORK/nats$i" --server_name "n$i" -a 127.0.0.1 -p $((NATS_BASE + i)) \
            -m $((NATS_BASE + 20 + i)) --cluster_name natter-bench \
            --cluster "nats://127.0.0.1:$((NATS_BASE + 10 + i))" --routes "${routes%,}" >/dev/null 2>&1 &
        PIDS+=($!)
        NATS_PIDS+=($!)
    done
    for i in 0 1 2; do wait_port $((NATS_BASE + i)); done
    # Nodes started before JetStream has elected its leaders get their
    # first acknowledgments late, and their heartbeats with them: wait, as
    # tests/cluster does, until every server's /healthz says JetStream is
    # current.
    for i in 0 1 2; do
        python3 - $((NATS_BASE + 20 + i)) <<'PY' || { echo "nats-server $i: JetStream not healthy after 30 s" >&2; exit 1; }
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
deadline = time.time() + 30
while time.time() < deadline:
    try:
        if urllib.request.urlopen(url, timeout=2).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
    done
    NATS_URLS="nats://127.0.0.1:$NATS_BASE,nats://127.0.0.1:$((NATS_BASE + 1)),nats://127.0.0.1:$((NATS_BASE + 2))"
}

echo "{\"run\":$(python3 bench/run_record.py "RATES='$RATES' RUNS=$RUNS WARMUP=$WARMUP DURATION=$DURATION bench/cluster.sh")}" >"$out"

# run MODE RATE: one measured run on fresh servers; appends its JSON line.
run() {
    local mode=$1 rate=$2 server follower="" extra="null"
    WORK=$(mktemp -d "$DATA_BASE/cluster-bench.XXXXXX")
    NATS_PIDS=()
    local common=(--no-web --rate-limit 0 --max-connections-per-ip 0 --max-connections 20000
        --presence-coalesce 100 --presence-interval 10)
    if [[ $mode == cluster ]]; then
        start_nats
        RUST_LOG=warn nice -n -15 taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" "${common[@]}" \
            --data-dir "$WORK/a" --nats "$NATS_URLS" --node a >/dev/null 2>&1 &
        server=$!
        PIDS+=("$server")
        # One node at a time, the first settled before the second, so that
        # the stream's settling is behind both before anything is measured.
        wait_ready "$WORK/a/admin-a.sock" "$server"
        sleep "${SETTLE:-3}"
        RUST_LOG=warn "$NATTER" serve --listen "127.0.0.1:$((PORT + 1))" "${common[@]}" \
            --data-dir "$WORK/b" --nats "$NATS_URLS" --node b >/dev/null 2>&1 &
        follower=$!
        PIDS+=("$follower")
        wait_port $((PORT + 1))
        wait_ready "$WORK/b/admin-b.sock" "$follower"
    else
        RUST_LOG=warn nice -n -15 taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" "${common[@]}" \
            --data-dir "$WORK/single" >/dev/null 2>&1 &
        server=$!
        PIDS+=("$server")
    fi
    wait_port "$PORT"
    echo "$mode R=$rate" >&2
    local before_f before_e before_n before_m result
    if [[ -n $follower ]]; then
        before_f=$(cpu_s "$follower")
        before_e=$(entries)
        before_m=$(follower_messages)
        before_n=$(for p in "${NATS_PIDS[@]}"; do cpu_s "$p"; done | paste -sd+ | bc)
    fi
    result=$(nice -n -15 taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$server" \
        --clients 1000 --group 10 --payload 64 --rate "$rate" --warmup "$WARMUP" \
        --duration "$DURATION" --json --quiet) || result=null
    if [[ -n $follower ]]; then
        local after_f after_e after_n after_m
        after_f=$(cpu_s "$follower")
        after_e=$(entries)
        after_m=$(follower_messages)
        after_n=$(for p in "${NATS_PIDS[@]}"; do cpu_s "$p"; done | paste -sd+ | bc)
        extra=$(python3 -c 'import json, sys
f0, f1, e0, e1, n0, n1, m0, m1 = map(float, sys.argv[1:])
e, m = e1 - e0, m1 - m0
print(json.dumps({"entries": int(e), "messages": int(m), "follower_cpu_s": round(f1 - f0, 3),
    "follower_cpu_us_per_entry": round((f1 - f0) * 1e6 / e, 3) if e else None,
    "follower_cpu_us_per_message": round((f1 - f0) * 1e6 / m, 3) if m else None,
    "nats_cpu_s": round(n1 - n0, 3),
    "nats_cpu_us_per_entry": round((n1 - n0) * 1e6 / e, 3) if e else None,
    "nats_cpu_us_per_message": round((n1 - n0) * 1e6 / m, 3) if m else None}))' \
            "$before_f" "$after_f" "$before_e" "$after_e" "$before_n" "$after_n" "$before_m" "$after_m")
    fi
    stop_all
    printf '{"mode":"%s","rate":%s,"result":%s,"log":%s}\n' "$mode" "$rate" "$result" "$extra" >>"$out"
}

for _ in $(seq "$RUNS"); do
    for rate in $RATES; do
        run single "$rate"
        run cluster "$rate"
    done
done

cat "$out" >bench/results/cluster.jsonl
python3 bench/render.py
echo "wrote bench/results/cluster.jsonl and rendered the docs" >&2
