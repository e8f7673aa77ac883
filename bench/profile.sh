#!/usr/bin/env bash
# Where a server's time goes under the benchmark workload: syscall counts
# (perf trace -s) and a CPU profile (perf record -g) of natter or InspIRCd
# at one rate, pinned like bench/compare.sh (server CPU 0, generator CPU 1).
#
#   bench/profile.sh natter 10000      # or: bench/profile.sh inspircd 10000
#
# Needs perf (Debian: linux-perf). Writes $OUT/{syscalls.txt,perf.data,
# report.txt} (OUT defaults to a fresh /tmp directory) and prints a summary.
# Bounded: about 20 s. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=${1:-natter}
RATE=${2:-10000}
PORT=${PORT:-17666}
NATTER=${NATTER_BIN:-$ROOT/target/release/natter}
OUT=${OUT:-$(mktemp -d /tmp/natter-profile.XXXXXX)}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "127.0.0.1:$PORT is in use" >&2; exit 1; fi

if [[ $SERVER == natter ]]; then
    RUST_LOG=warn taskset -c 0 "$NATTER" serve --listen "127.0.0.1:$PORT" --rate-limit 0 \
        --max-connections-per-ip 0 --no-web >"$OUT/server.log" 2>&1 &
    PROTO=natter
else
    sed -e "s/@PORT@/$PORT/" -e "s#@RUNDIR@#$OUT#" "$ROOT/bench/inspircd.conf.in" >"$OUT/inspircd.conf"
    taskset -c 0 "$(command -v inspircd || echo /usr/sbin/inspircd)" --runasroot --nofork \
        --config "$OUT/inspircd.conf" >"$OUT/server.log" 2>&1 &
    PROTO=irc
fi
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

taskset -c 1 "$NATTER" bench --addr "127.0.0.1:$PORT" --proto "$PROTO" --rate "$RATE" \
    --warmup 4 --duration 8 --server-pid "$PID" --quiet >"$OUT/bench.txt" 2>&1 &
BENCH=$!
sleep 5 # setup and part of the warm-up
# Counted in the kernel (perf stat on tracepoints): exact, unlike perf
# trace, which drops events at these rates.
EVENTS=syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg
EVENTS=$EVENTS,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait
perf stat -e "$EVENTS" -p "$PID" -o "$OUT/syscalls.txt" -- sleep 2
grep -E "^cpu0 " /proc/stat >"$OUT/cpu0.txt"
perf record -q -F 1999 -g -o "$OUT/perf.data" -p "$PID" -- sleep 3 2>/dev/null
grep -E "^cpu0 " /proc/stat >>"$OUT/cpu0.txt"
wait "$BENCH" || true
perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null >"$OUT/report.txt" || true

cat "$OUT/bench.txt"
echo "--- syscalls in 2 s of load (perf stat)"
grep -E "sys_enter" "$OUT/syscalls.txt" | awk '{print "   " $2, $1}' | sed 's/syscalls:sys_enter_//'
echo "--- CPU 0 over 3 s, in ticks: user nice system idle iowait irq softirq steal"
awk 'NR == 1 {for (i = 2; i <= 9; i++) a[i] = $i} NR == 2 {for (i = 2; i <= 9; i++) printf "%d ", $i - a[i]; print ""}' "$OUT/cpu0.txt"
echo "--- CPU profile by object"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^\s+[0-9]" | head -6
echo "--- top symbols"
grep -E "^\s+[0-9]" "$OUT/report.txt" | head -25
echo "(full output in $OUT)"
