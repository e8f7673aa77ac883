#!/usr/bin/env bash
# Makes the dashboard picture of docs/OPERATIONS.md from real data: starts
# a natter server (TLS, a data dir, metrics on their own listener) and
# Debian's Prometheus scraping it every second, puts load on it for a few
# minutes (`natter bench` at three rates, TLS and plaintext-on-HTTPS web
# requests, wrong passwords), then draws the dashboard's panels from
# Prometheus with contrib/grafana/render.py (not Grafana: see there).
#
#   contrib/grafana/demo.sh docs/dashboard.png     # about five minutes
#
# Loopback only. Needs prometheus (apt-get install prometheus), curl,
# python3 and chromium; NATTER_BIN picks the binary (default: build
# target/release/natter).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PNG=${1:?usage: demo.sh OUT.png}
PORT=${PORT:-16690}
WEB_PORT=${WEB_PORT:-16691}
METRICS_PORT=${METRICS_PORT:-16692}
PROM_PORT=${PROM_PORT:-16693}
cd "$ROOT"
if [[ -n "${NATTER_BIN:-}" ]]; then
    NATTER=$NATTER_BIN
else
    cargo build --release --quiet --bin natter
    NATTER=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/natter
fi
for tool in prometheus curl python3 chromium; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

work=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$NATTER" cert --self-signed --out "$work/tls" >/dev/null
RUST_LOG=warn "$NATTER" serve --listen "127.0.0.1:$PORT" --web "127.0.0.1:$WEB_PORT" \
    --metrics "127.0.0.1:$METRICS_PORT" --data-dir "$work/data" \
    --tls-cert "$work/tls/cert.pem" --tls-key "$work/tls/key.pem" \
    --rate-limit 0 --max-connections-per-ip 0 >/dev/null 2>&1 &
PIDS+=($!)
SERVER=$!
cat >"$work/prometheus.yml" <<EOF
scrape_configs:
  - job_name: natter
    scrape_interval: 1s
    static_configs:
      - targets: ['127.0.0.1:$METRICS_PORT']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >/dev/null 2>&1 &
PIDS+=($!)
curl -s --retry 30 --retry-connrefused --retry-delay 1 -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics"
curl -s --retry 30 --retry-connrefused --retry-delay 1 -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready"
started=$(date +%s)

# Web requests: good HTTPS, and plain HTTP on the HTTPS port (a failed
# handshake), a few a second.
(while sleep 0.5; do
    curl -sk -o /dev/null "https://127.0.0.1:$WEB_PORT/healthz" || true
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$WEB_PORT/healthz" || true
done) &
PIDS+=($!)
# An account, then a wrong password every few seconds.
python3 - "$PORT" <<'EOF' &
import json, socket, sys, time
port = int(sys.argv[1])
def say(*lines):
    with socket.create_connection(("127.0.0.1", port)) as s:
        for line in lines:
            s.sendall((json.dumps(line) + "\n").encode())
        s.settimeout(5)
        try:
            s.recv(65536)
        except OSError:
            pass
say({"command": "SIGNUP", "args": ["operator", "correct horse battery"]})
for _ in range(100):
    say({"command": "REGISTER", "args": ["operator", "online", "wrong password!"]})
    time.sleep(3)
EOF
PIDS+=($!)
bench() {
    "$NATTER" bench --addr "127.0.0.1:$PORT" --server-pid "$SERVER" --clients 500 --group 10 \
        --rate "$1" --warmup 5 --duration 50 --quiet >/dev/null || true
}
for rate in 2000 6000; do
    bench "$rate"
    sleep 5
done
# The picture is taken while the last load runs, so the gauges show it.
bench 1000 &
PIDS+=($!)
sleep 40
minutes=$(python3 -c "print(($(date +%s) - $started) / 60)")
python3 contrib/grafana/render.py --prometheus "http://127.0.0.1:$PROM_PORT" \
    --minutes "$minutes" --rate-interval 10s --out "$work/dashboard.html" --png "$PNG"
