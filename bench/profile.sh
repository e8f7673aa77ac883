#!/usr/bin/env bash
# Where a server's time goes under the benchmark workload (C = 1,000
# clients in groups of K = 10, 64-byte messages, R messages/s): the
# syscalls it makes per delivery (perf stat on the syscall tracepoints),
# the share of its CPU spent in the kernel, and its hottest functions
# (perf record -g), for natter (`--ephemeral`, the flags of
# bench/compare.sh) and InspIRCd, pinned like bench/compare.sh (server on
# CPU 0, generator on CPU 1).
#
#   bench/profile.sh                   # natter and InspIRCd at R = 10,000 and 20,000:
#                                      # writes bench/results/profile.jsonl, renders the docs
#   bench/profile.sh natter 10000      # one run, printed (or: inspircd 20000); records nothing
#
# Needs perf (Debian: linux-perf). Each run is bounded (about 20 s) and
# keeps its raw outputs in $OUT (a fresh /tmp directory by default).
# Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-17666}
RATES=${RATES:-"10000 20000"}
SERVERS=${SERVERS:-"natter inspircd"}
NATTER=${NATTER_BIN:-$ROOT/target/release/natter}
OUT=${OUT:-$(mktemp -d /tmp/natter-profile.XXXXXX)}
PRIORITY=${PRIORITY:-"nice -n -15"}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
[[ -n "${NATTER_BIN:-}" ]] || (cd "$ROOT" && cargo build --release --quiet --bin natter)
INSPIRCD=$(command -v inspircd || echo /usr/sbin/inspircd)

PID=""
stop_server() {
    if [[ -n "$PID" ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
trap stop_server EXIT

# profile SERVER RATE DIR: one run; leaves bench.json, syscalls.txt,
# dso.txt and symbols.txt in DIR.
profile() {
    local server=$1 rate=$2 dir=$3 proto
    mkdir -p "$dir"
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "127.0.0.1:$PORT is in use" >&2; exit 1; fi
    if [[ $server == natter ]]; then
        RUST_LOG=warn $PRIORITY taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" --ephemeral \
            --presence-coalesce 100 --presence-interval 10 --rate-limit 0 \
            --max-connections-per-ip 0 --no-web >"$dir/server.log" 2>&1 &
        proto=natter
    else
        sed -e "s/@PORT@/$PORT/" -e "s#@RUNDIR@#$dir#" "$ROOT/bench/inspircd.conf.in" >"$dir/inspircd.conf"
        $PRIORITY taskset -c 0 "$INSPIRCD" --runasroot --nofork --config "$dir/inspircd.conf" \
            >"$dir/server.log" 2>&1 &
        proto=irc
    fi
    PID=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    $PRIORITY taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --proto "$proto" --rate "$rate" \
        --clients 1000 --group 10 --payload 64 --warmup 4 --duration 8 --server-pid "$PID" \
        --json --quiet >"$dir/bench.json" 2>"$dir/bench.err" &
    local bench=$!
    sleep 5 # setup and part of the warm-up
    # Counted in the kernel (perf stat on tracepoints): exact, unlike perf
    # trace, which drops events at these rates.
    local events=syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto
    events=$events,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read
    events=$events,syscalls:sys_enter_epoll_wait
    perf stat -x, -e "$events" -p "$PID" -o "$dir/syscalls.txt" -- sleep 2
    perf record -q -F 1999 -g -o "$dir/perf.data" -p "$PID" -- sleep 3 2>/dev/null
    wait "$bench" || true
    stop_server
    perf report -i "$dir/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null >"$dir/dso.txt" || true
    perf report -i "$dir/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null \
        >"$dir/symbols.txt" || true
}

# summary SERVER DIR: the run as one JSON object.
summary() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
server, d = sys.argv[1], sys.argv[2]
bench = json.load(open(f"{d}/bench.json"))
calls = {}
for line in open(f"{d}/syscalls.txt"):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
        calls[parts[2].removeprefix("syscalls:sys_enter_")] = int(parts[0]) if parts[0].isdigit() else 0
def shares(path, key):
    rows = []
    for line in open(path):
        m = re.match(r"\s+([\d.]+)%\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), key(m.group(2).strip())))
    return rows
dso = shares(f"{d}/dso.txt", lambda s: s)
kernel = sum(p for p, name in dso if "kernel" in name)
symbols = shares(f"{d}/symbols.txt", lambda s: re.sub(r"\s+\[[.k]\]\s+", " ", s))
user = [(p, s) for p, s in symbols if not s.startswith("[kernel")][:8]
top = symbols[:8]
# Deliveries in the 2 s perf stat counted: the run's rate of deliveries.
per_s = bench["delivered_per_s"]
print(json.dumps({"server": server, "result": bench,
                  "syscalls_2s": calls, "deliveries_2s": per_s * 2,
                  "kernel_share": round(kernel, 1),
                  "top_symbols": [[round(p, 2), s] for p, s in top],
                  "top_user_symbols": [[round(p, 2), s] for p, s in user]}))
PY
}

if [[ $# -ge 2 ]]; then
    profile "$1" "$2" "$OUT"
    summary "$1" "$OUT" | python3 -m json.tool
    echo "(raw outputs in $OUT)"
    exit 0
fi

RESULTS=$ROOT/bench/results/profile.jsonl
mkdir -p "$ROOT/bench/results"
echo "{\"run\":$(python3 "$ROOT/bench/run_record.py" "RATES='$RATES' SERVERS='$SERVERS' bench/profile.sh")}" >"$RESULTS"
for rate in $RATES; do
    for server in $SERVERS; do
        echo "$server R=$rate" >&2
        profile "$server" "$rate" "$OUT/$server-$rate"
        summary "$server" "$OUT/$server-$rate" >>"$RESULTS"
    done
done
python3 "$ROOT/bench/render.py"
echo "wrote $RESULTS and rendered the docs (raw outputs in $OUT)" >&2
