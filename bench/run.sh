#!/usr/bin/env bash
# Runs every benchmark side by side (our system, the Node reference, the raw
# WebSocket echo floor) on this machine, writes the JSON results to
# bench/results/latest/ and the report to docs/benchmarks.md.
# All traffic stays on 127.0.0.1; every run is bounded in size and time.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}            # QUICK=1: small sizes, to check the script itself
out=bench/results/latest
rm -rf "$out" && mkdir -p "$out"
pids=()
nats_store=$(mktemp -d /tmp/meetup-bench-nats.XXXXXX)   # JetStream's store, removed on exit
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$nats_store"; }
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
lg() { ./target/release/meetup-loadgen "$@"; }
record() { local name=$1; shift; step "$name"; lg "$@" | tail -n 1 > "$out/$name.json"; cat "$out/$name.json" >&2; }
# record_cpu NAME --pid name=PID ... -- LOADGEN ARGS: adds the CPU the named processes spent.
record_cpu() { local name=$1; shift; step "$name"; python3 bench/cpu_time.py "$@" | tail -n 1 > "$out/$name.json"; cat "$out/$name.json" >&2; }

step "build (release)"
cargo build --release --locked -p meetup-server -p meetup-presence -p meetup-calls -p meetup-loadgen
(cd bench/node-reference && npm ci --no-audit --no-fund --loglevel=error)
# JetStream holds the state: a current nats-server (2.11 or newer, for per-key TTL).
nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}

# Limits that would (rightly) refuse a load generator on one IP are opened up.
bench_env=(EVENTS_PER_SEC=100000 EVENTS_BURST=100000 CONNECTIONS_PER_IP_PER_SEC=100000
           MAX_SOCKETS_PER_USER=100 MAX_CALLS_PER_USER=100 SOCKET_QUEUE=8192 RUST_LOG=warn)

# A process of its own for each memory figure: one that carried other load
# first would not give its memory back.
fresh_gateway() {  # prints "URL PID" of a new embedded gateway
  local port; port=$(free_port)
  env "${bench_env[@]}" PORT=$port HOST=127.0.0.1 PRESENCE_LISTEN=127.0.0.1:$(free_port) CALLS_LISTEN=127.0.0.1:$(free_port) \
    HISTORY_DATABASE_URL=sqlite::memory: ./target/release/meetup-gateway >/dev/null 2>&1 & pids+=($!)
  wait_http "http://127.0.0.1:$port/readyz"; echo "http://127.0.0.1:$port $!"
}
fresh_node() {  # prints "URL PID" of a new Node reference process
  local port; port=$(free_port)
  (cd bench/node-reference && PORT=$port exec node server.js >/dev/null 2>&1) & pids+=($!)
  wait_http "http://127.0.0.1:$port/"; echo "http://127.0.0.1:$port $(pgrep -f "node server.js" -n)"
}
fresh_sio() {  # prints "URL PID" of a bare socketioxide server (read buffer $1)
  local port; port=$(free_port)
  ./target/release/meetup-loadgen bare-server --listen 127.0.0.1:$port --ws-read-buffer "$1" --http1-only >/dev/null 2>&1 & pids+=($!)
  wait_http "http://127.0.0.1:$port/socket.io/?EIO=4&transport=polling"; echo "http://127.0.0.1:$port $!"
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
python3 -c 'import json, resource; print(json.dumps({"nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}))' > "$out/limits.json"

if [ "$QUICK" = 1 ]; then conns=100; reg_small=20; reg_big=50; many=300; delta_storms="50 100"; rate=100; else
  conns=3000; reg_small=300; reg_big=2000; many=19000; delta_storms="2000 5000 10000"; rate=1000; fi

step "memory per connection: bare socketioxide, ours, Node (each on a fresh process)"
for rb in 4096 512; do
  read -r url pid < <(fresh_sio $rb); record idle-sio-$rb idle --gateway $url --pid $pid --users $conns --concurrency 50; stop_pid $pid
done
read -r url pid < <(fresh_gateway); record idle-conn idle --gateway $url --pid $pid --users $conns --concurrency 50; stop_pid $pid
read -r url pid < <(fresh_node); record idle-conn-node idle --gateway $url --pid $pid --users $conns --concurrency 50; stop_pid $pid
for n in $reg_small $reg_big; do
  read -r url pid < <(fresh_gateway); record idle-delta-$n idle --gateway $url --pid $pid --users $n --register --presence delta; stop_pid $pid
  read -r url pid < <(fresh_gateway); record idle-full-$n idle --gateway $url --pid $pid --users $n --register; stop_pid $pid
  read -r url pid < <(fresh_node); record idle-reg-node-$n idle --gateway $url --pid $pid --users $n --register; stop_pid $pid
done

step "start: echo server, one embedded gateway, a cluster, the Node reference"
echo_port=$(free_port); ./target/release/meetup-loadgen echo-server --listen 127.0.0.1:$echo_port >/dev/null & echo_pid=$!; pids+=($echo_pid)
single=$(free_port)
env "${bench_env[@]}" PORT=$single HOST=127.0.0.1 PRESENCE_LISTEN=127.0.0.1:$(free_port) CALLS_LISTEN=127.0.0.1:$(free_port) HISTORY_DATABASE_URL="sqlite://$nats_store/history.db" \
  ./target/release/meetup-gateway >/dev/null & single_pid=$!; pids+=($single_pid)
nats_port=$(free_port); "$nats_bin" -a 127.0.0.1 -p $nats_port -js -sd "$nats_store" >/dev/null 2>&1 & nats_pid=$!; pids+=($nats_pid)
p_port=$(free_port); c_port=$(free_port)
env RUST_LOG=warn NATS_URL=nats://127.0.0.1:$nats_port PRESENCE_LISTEN=127.0.0.1:$p_port METRICS_LISTEN=127.0.0.1:0 MAX_SOCKETS_PER_USER=100 \
  ./target/release/meetup-presence >/dev/null & presence_pid=$!; pids+=($presence_pid)
env RUST_LOG=warn NATS_URL=nats://127.0.0.1:$nats_port CALLS_LISTEN=127.0.0.1:$c_port METRICS_LISTEN=127.0.0.1:0 MAX_CALLS_PER_USER=100 \
  ./target/release/meetup-calls >/dev/null & calls_pid=$!; pids+=($calls_pid)
gw1=$(free_port); gw2=$(free_port)
gw_pids=()
for port in $gw1 $gw2; do
  env "${bench_env[@]}" PORT=$port HOST=127.0.0.1 NATS_URL=nats://127.0.0.1:$nats_port GATEWAY_ID=bench-$port \
    PRESENCE_URL=http://127.0.0.1:$p_port CALLS_URL=http://127.0.0.1:$c_port GATEWAY_TIMEOUT_MS=30000 \
    ./target/release/meetup-gateway >/dev/null & gw_pids+=($!); pids+=($!)
done
node_port=$(free_port)
(cd bench/node-reference && PORT=$node_port exec node server.js >/dev/null) & node_pid=$!; pids+=($node_pid)
for url in http://127.0.0.1:$single/readyz http://127.0.0.1:$gw1/readyz http://127.0.0.1:$gw2/readyz http://127.0.0.1:$node_port/; do wait_http "$url"; done
node_pid=$(pgrep -f "node server.js" -n)
S=http://127.0.0.1:$single; G1=http://127.0.0.1:$gw1; G2=http://127.0.0.1:$gw2; N=http://127.0.0.1:$node_port

if [ "$QUICK" = 1 ]; then dur=2; pairs=5; storm_small=50; storm_big=100; idle=100; rps=2000; sweep="500 1000"; else
  dur=10; pairs=100; storm_small=400; storm_big=2000; idle=2000; rps=20000; sweep="2000 5000 10000 15000 20000 30000 40000 50000 60000 80000 100000 120000"; fi

# Unloaded latency: 10 pairs at 10 msg/s each.
record echo-unloaded      echo  --url ws://127.0.0.1:$echo_port --pairs 10 --rate 10 --duration $dur
record relay-unloaded     relay --gateway $S --pairs 10 --rate 10 --duration $dur
record relay-unloaded-x   relay --gateway $G1 --gateway $G2 --cross --pairs 10 --rate 10 --duration $dur
record relay-unloaded-node relay --gateway $N --pairs 10 --rate 10 --duration $dur
# 10,000 msg/s across two gateways (100 pairs x 100 msg/s).
record echo-10k           echo  --url ws://127.0.0.1:$echo_port --pairs $pairs --rate 100 --duration $dur
record relay-10k-x        relay --gateway $G1 --gateway $G2 --cross --pairs $pairs --rate 100 --duration $dur
# The tool's own ceiling at the sweep's top rates: the echo floor keeps up.
for total in $(echo $sweep | tr ' ' '\n' | tail -n 2); do
  record "echo-$total" echo --url ws://127.0.0.1:$echo_port --pairs $pairs --rate $((total / pairs)) --duration $dur
done
# Throughput: the highest offered rate with p99 under 50 ms and no loss.
for target in single:$S node:$N; do
  name=${target%%:*}; url=${target#*:}
  for total in $sweep; do
    record "sweep-$name-$total" relay --gateway $url --pairs $pairs --rate $((total / pairs)) --duration $dur
    if ! python3 bench/report.py --passes "$out/sweep-$name-$total.json"; then break; fi
  done
done
record storm-$storm_small      storm --gateway $S --users $storm_small
record storm-$storm_small-node storm --gateway $N --users $storm_small --timeout 180
record storm-$storm_big        storm --gateway $S --users $storm_big
record churn                   calls --gateway $S --workers 20 --duration $dur
record churn-node              calls --gateway $N --workers 20 --duration $dur
# CPU per call at one offered rate: every process of ours (and NATS) beside Node's one.
loadgen_calls=(-- ./target/release/meetup-loadgen calls --workers 20 --rate $rate --duration $dur)
record_cpu churn-rate          --pid gateway=$single_pid "${loadgen_calls[@]}" --gateway $S
record_cpu churn-rate-node     --pid node=$node_pid "${loadgen_calls[@]}" --gateway $N
record_cpu churn-rate-cluster  --pid nats=$nats_pid --pid presence=$presence_pid --pid calls=$calls_pid \
  --pid gateway-1=${gw_pids[0]} --pid gateway-2=${gw_pids[1]} "${loadgen_calls[@]}" --gateway $G1 --gateway $G2
# The floor: the raw echo server moving 16 frames (8 round trips) per call at that rate.
record_cpu echo-floor          --pid echo=$echo_pid -- ./target/release/meetup-loadgen echo --url ws://127.0.0.1:$echo_port \
  --pairs 20 --rate $((rate * 8 / 20)) --duration $dur
record presence-grpc           presence --url http://127.0.0.1:$p_port --rate $rps --duration $dur --list-every 25
record calls-grpc              calls-grpc --url http://127.0.0.1:$c_port --rate $rps --duration $dur

# Presence deltas: storms of delta clients, each on a fresh gateway, from
# several source addresses (last: the biggest may exhaust the machine).
for n in $delta_storms; do
  read -r url pid < <(fresh_gateway)
  record storm-delta-$n storm --gateway $url --users $n --presence delta --sources 4 --timeout 60; stop_pid $pid
done
# As many idle websockets as this machine's file descriptor limit lets one
# process hold, from several loopback source addresses; CPU at idle over 20 s.
# Last: its tens of thousands of closed connections linger in TIME_WAIT.
read -r url pid < <(fresh_gateway)
record idle-many idle --gateway $url --pid $pid --users $many --concurrency 200 --sources 8 --settle 5 --cpu-window 20; stop_pid $pid

step "report"
python3 bench/report.py --machine "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)" "$out" > docs/benchmarks.md.new
mv docs/benchmarks.md.new docs/benchmarks.md
echo "wrote docs/benchmarks.md" >&2
