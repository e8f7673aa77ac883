#!/usr/bin/env bash
# Side-by-side benchmark: natter and InspIRCd under the same workload on the
# same machine, one at a time, server pinned to CPU 0 and generator to CPU 1.
#
#   bench/compare.sh            # the full run (about 8 minutes), writes
#                               # bench/results/latest.jsonl, then renders the
#                               # docs' figures from it (bench/render.py)
#   RATES="10000" MEMORY_RUN=0 IDLE_CLIENTS=2000 bench/compare.sh   # quick look
#
# Everything is loopback only and bounded in time: each bench run stops by
# itself (warm-up + window + drain), servers are stopped after each run, and
# the whole script gives up after SCRIPT_TIMEOUT seconds (default 900).
#
# Settings (environment): RATES, CLIENTS, GROUP, PAYLOAD, WARMUP, DURATION,
# IDLE_CLIENTS, IDLE_HOLD, MEMORY_RUN (seconds of the long natter run, 0 to
# skip), NATTER_PORT, IRC_PORT, SERVER_CPU, GENERATOR_CPU, NO_INSTALL=1 (do
# not apt-get InspIRCd), NATTER_BIN (a natter binary to use instead of
# building one), PRIORITY (default "nice -n -15"), NO_DOC=1 (do not render
# the docs' figures).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATES=${RATES:-"10000 15000 20000 25000 30000"}
CLIENTS=${CLIENTS:-1000}
GROUP=${GROUP:-10}
PAYLOAD=${PAYLOAD:-64}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
IDLE_CLIENTS=${IDLE_CLIENTS:-15000}
IDLE_HOLD=${IDLE_HOLD:-3}
MEMORY_RUN=${MEMORY_RUN:-60}
NATTER_PORT=${NATTER_PORT:-16666}
IRC_PORT=${IRC_PORT:-16667}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
SCRIPT_TIMEOUT=${SCRIPT_TIMEOUT:-900}
# Servers, generator and floor run at a raised priority, so that other work
# on the machine (a build, say) disturbs the measurement less.
PRIORITY=${PRIORITY:-"nice -n -15"}

WORK=$(mktemp -d /tmp/natter-compare.XXXXXX)
RESULTS="$WORK/results.jsonl"
SERVER_PID=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
# The watchdog: the whole script is bounded even if something hangs. Its
# output goes nowhere so that a pipe reading ours is not held open by it.
( sleep "$SCRIPT_TIMEOUT" && kill -TERM $$ ) >/dev/null 2>&1 &
WATCHDOG=$!
stop_watchdog() { pkill -P "$WATCHDOG" 2>/dev/null || true; kill "$WATCHDOG" 2>/dev/null || true; }
trap 'stop_server; stop_watchdog' EXIT

# --- tools -----------------------------------------------------------------
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
if ! command -v inspircd >/dev/null && [[ ! -x /usr/sbin/inspircd ]]; then
    if [[ -n "${NO_INSTALL:-}" ]]; then echo "InspIRCd is not installed" >&2; exit 1; fi
    log "installing InspIRCd (Debian package inspircd)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq inspircd >/dev/null
fi
INSPIRCD=$(command -v inspircd || echo /usr/sbin/inspircd)
# A systemd host starts the packaged service on 6667; it is left alone, we
# run our own instance on IRC_PORT with our own configuration.

if [[ -n "${NATTER_BIN:-}" ]]; then
    NATTER=$NATTER_BIN
else
    log "building natter (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin natter)
    NATTER="$ROOT/target/release/natter"
fi
gcc -O2 -pthread -o "$WORK/floor" "$ROOT/bench/floor.c"

# Hardening flags exist only in newer builds: pass those `serve --help` lists.
# --ephemeral: no history store, like InspIRCd (whose channels keep none);
# what durability costs on top is bench/store_ab.sh's measure.
NATTER_FLAGS=(--presence-coalesce 100 --presence-interval 10)
for flag in "--rate-limit 0" "--max-connections-per-ip 0" "--max-connections 20000" "--no-web" "--ephemeral"; do
    if "$NATTER" serve --help | grep -qE -- "${flag% *}( |$)"; then NATTER_FLAGS+=($flag); fi
done

sed -e "s/@PORT@/$IRC_PORT/" -e "s#@RUNDIR@#$WORK#" "$ROOT/bench/inspircd.conf.in" > "$WORK/inspircd.conf"

# --- servers ---------------------------------------------------------------
port_is_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited at start" >&2; return 1; }
        if port_is_open "$1"; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# Something else on our port would be measured in our server's place.
ensure_free() {
    if port_is_open "$1"; then echo "127.0.0.1:$1 is already in use; set NATTER_PORT / IRC_PORT" >&2; exit 1; fi
}

start_natter() {
    ensure_free "$NATTER_PORT"
    RUST_LOG=warn $PRIORITY taskset -c "$SERVER_CPU" "$NATTER" serve --listen "127.0.0.1:$NATTER_PORT" \
        "${NATTER_FLAGS[@]}" >"$WORK/natter.out" 2>"$WORK/natter.err" &
    SERVER_PID=$!
    wait_for_port "$NATTER_PORT"
}

start_inspircd() {
    ensure_free "$IRC_PORT"
    $PRIORITY taskset -c "$SERVER_CPU" "$INSPIRCD" --runasroot --nofork --config "$WORK/inspircd.conf" \
        >"$WORK/inspircd.out" 2>&1 &
    SERVER_PID=$!
    wait_for_port "$IRC_PORT"
}

# bench SERVER ARGS...: one run against a fresh server; appends its JSON line.
bench() {
    local server=$1; shift
    local port proto
    if [[ $server == natter ]]; then start_natter; port=$NATTER_PORT; proto=natter
    else start_inspircd; port=$IRC_PORT; proto=irc; fi
    log "$server: $*"
    local line
    if line=$($PRIORITY taskset -c "$GENERATOR_CPU" "$NATTER" bench --addr "127.0.0.1:$port" --proto "$proto" \
            --server-pid "$SERVER_PID" --json --quiet "$@" 2>"$WORK/bench.err"); then
        echo "{\"server\":\"$server\",\"result\":$line}" >>"$RESULTS"
        log "  $line"
    else
        log "  $server run failed: $(tail -3 "$WORK/bench.err" | tr '\n' ' ')"
        echo "{\"server\":\"$server\",\"failed\":true,\"args\":\"$*\"}" >>"$RESULTS"
    fi
    stop_server
}

ok_at() { # did the last run of $1 hold p99 <= 50 ms and >= 99% delivered?
    tail -n 20 "$RESULTS" | grep "\"server\":\"$1\"" | tail -1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()).get("result")
sys.exit(0 if r and r["delivery_ratio"] >= 0.99 and r["latency_us"]["p99"] <= 50000 else 1)'
}

# --- the runs --------------------------------------------------------------
python3 - "$INSPIRCD" >>"$RESULTS" <<'PY'
import json, os, platform, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
version = subprocess.run([sys.argv[1], "--version"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"server": "machine", "result": {
    "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
    "loadavg_at_start": open("/proc/loadavg").read().split()[:3], "inspircd": version}}))
PY
settings="RATES='$RATES' CLIENTS=$CLIENTS GROUP=$GROUP PAYLOAD=$PAYLOAD WARMUP=$WARMUP DURATION=$DURATION"
settings+=" IDLE_CLIENTS=$IDLE_CLIENTS IDLE_HOLD=$IDLE_HOLD MEMORY_RUN=$MEMORY_RUN"
echo "{\"server\":\"run\",\"result\":$(python3 "$ROOT/bench/run_record.py" "$settings bench/compare.sh")}" >>"$RESULTS"
SHAPE=(--clients "$CLIENTS" --group "$GROUP" --payload "$PAYLOAD" --warmup "$WARMUP")
LOAD=("${SHAPE[@]}" --duration "$DURATION")
natter_going=1; irc_going=1
for rate in $RATES; do
    # The targets compare the servers up to 20,000; past that, once both
    # have failed, higher rates say nothing new.
    ((rate <= 20000 || natter_going || irc_going)) || break
    bench natter "${LOAD[@]}" --rate "$rate"; ok_at natter || natter_going=0
    bench inspircd "${LOAD[@]}" --rate "$rate"; ok_at inspircd || irc_going=0
done

bench natter --idle --clients "$IDLE_CLIENTS" --group "$GROUP" --duration "$IDLE_HOLD"
bench inspircd --idle --clients "$IDLE_CLIENTS" --group "$GROUP" --duration "$IDLE_HOLD"

if ((MEMORY_RUN > 0)); then
    bench natter "${SHAPE[@]}" --rate 10000 --duration "$MEMORY_RUN"
fi

first_rate=${RATES%% *}
for rate in $first_rate 20000; do
    deliveries=$((rate * (GROUP - 1)))
    log "floor: $deliveries sends/s"
    floor=$($PRIORITY "$WORK/floor" "$CLIENTS" "$deliveries" 5 "$SERVER_CPU" "$GENERATOR_CPU" "$PAYLOAD")
    echo "{\"server\":\"floor\",\"result\":$floor}" >>"$RESULTS"
    log "  $floor"
done

mkdir -p "$ROOT/bench/results"
cp "$RESULTS" "$ROOT/bench/results/latest.jsonl"
if [[ -z "${NO_DOC:-}" ]]; then
    python3 "$ROOT/bench/render.py"
    log "rendered the docs' figures (bench/render.py)"
fi
log "raw results: bench/results/latest.jsonl"
