#!/usr/bin/env bash
# The embedded call-churn figures of bench/run.sh, alone and quick, to compare two
# builds side by side with the Node reference in one run:
#   bench/churn.sh [BIN_DIR ...]     (default: ./target/release)
# Each BIN_DIR holds a release meetup-gateway; the load generator is always this
# tree's. For each build, and for Node: calls as fast as 20 workers go, then the
# CPU per call of the one process at 1,000 calls/s offered. All traffic stays on
# 127.0.0.1; every run is bounded in time. Prints one JSON line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${DURATION:-10}
rate=${RATE:-1000}
[ $# -gt 0 ] || set -- ./target/release
pids=()
tmp=$(mktemp -d /tmp/meetup-churn.XXXXXX)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
lg=./target/release/meetup-loadgen
[ -x "$lg" ] || cargo build --release --locked -p meetup-loadgen
(cd bench/node-reference && npm ci --no-audit --no-fund --loglevel=error)
# The same limits as bench/run.sh opens for a load generator on one address.
bench_env=(EVENTS_PER_SEC=100000 EVENTS_BURST=100000 CONNECTIONS_PER_IP_PER_SEC=100000
           MAX_SOCKETS_PER_USER=100 MAX_CALLS_PER_USER=100 SOCKET_QUEUE=8192 RUST_LOG=warn)

measure() {  # NAME URL PID
  local name=$1 url=$2 pid=$3
  printf '{"system":"%s","figure":"fastest",' "$name"
  "$lg" calls --gateway "$url" --workers 20 --duration "$dur" | tail -n 1 | cut -c2-
  printf '{"system":"%s","figure":"at-rate",' "$name"
  python3 bench/cpu_time.py --pid "$name=$pid" -- "$lg" calls --workers 20 --rate "$rate" \
    --duration "$dur" --gateway "$url" | tail -n 1 | cut -c2-
}

n=0
for bin in "$@"; do
  n=$((n + 1))
  port=$(free_port)
  env "${bench_env[@]}" PORT=$port HOST=127.0.0.1 PRESENCE_LISTEN=127.0.0.1:$(free_port) \
    CALLS_LISTEN=127.0.0.1:$(free_port) HISTORY_DATABASE_URL="sqlite://$tmp/history-$n.db" \
    "$bin/meetup-gateway" >/dev/null 2>&1 & pid=$!; pids+=($pid)
  wait_http "http://127.0.0.1:$port/readyz"
  measure "$bin" "http://127.0.0.1:$port" "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
port=$(free_port)
(cd bench/node-reference && PORT=$port exec node server.js >/dev/null 2>&1) & pids+=($!)
wait_http "http://127.0.0.1:$port/"
measure node "http://127.0.0.1:$port" "$(pgrep -f "node server.js" -n)"
