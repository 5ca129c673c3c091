#!/usr/bin/env bash
# Replicas with the state in JetStream: RPC/s of one and of two replicas of each
# service, call churn, the join storm and relay latency across a cluster of two
# gateways. Writes bench/results/replicas/*.json and the "Replicas (state in
# JetStream)" section of docs/benchmarks.md.
#
# Each measurement gets a fresh nats-server (JetStream, its own store directory,
# bucket replicas 1), so no run inherits the records of the one before. CPU time
# of every process (nats-server, each replica, each gateway, the load generator)
# is recorded per run (bench/cpu_time.py), to show where the time goes.
# All traffic stays on 127.0.0.1; every run is bounded in size and time.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}            # QUICK=1: small sizes, to check the script itself
out=bench/results/replicas
rm -rf "$out" && mkdir -p "$out"
nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}

if [ "$QUICK" = 1 ]; then dur=2; rates="1000 2000"; storm=200; else
  dur=10; rates="2000 4000 6000 8000 10000 12500 15000 20000"; storm=2000; fi

pids=()           # every process this script started, for the exit trap
stack=()          # the processes of the current stack
stack_dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${stack_dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }
spawn() { "$@" >/dev/null 2>&1 & local pid=$!; pids+=("$pid"); stack+=("$pid"); }
# measure NAME PID-NAME=PID... -- loadgen arguments: one result, CPU times added.
# A run that fails leaves {"error": ...} and the script goes on.
measure() {
  local name=$1; shift; local watched=()
  while [ "$1" != -- ]; do watched+=(--pid "$1"); shift; done; shift
  step "$name"
  local status=0
  timeout 300 python3 bench/cpu_time.py "${watched[@]}" -- ./target/release/meetup-loadgen "$@" > "$out/$name.json" || status=$?
  if [ "$status" != 0 ]; then echo "{\"error\": \"load generator exited with $status\"}" > "$out/$name.json"; fi
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r.get(k) for k in ("offered_per_s","completed_ok_per_s","outcomes","latency","cpu_busy") if k in r}))' "$out/$name.json" >&2
}
stop_stack() {
  for p in "${stack[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${stack[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${stack_dirs[@]}"; do rm -rf "$d"; done
  stack=(); stack_dirs=(); watch=()
}

# start_nats: a fresh nats-server with JetStream; sets $nats_url and adds nats=PID to $watch.
start_nats() {
  local port mon dir; port=$(free_port); mon=$(free_port); dir=$(mktemp -d /tmp/meetup-bench-nats.XXXXXX)
  stack_dirs+=("$dir")
  spawn "$nats_bin" -a 127.0.0.1 -p "$port" -m "$mon" -js -sd "$dir"
  watch+=("nats=${stack[-1]}")
  wait_http "http://127.0.0.1:$mon/healthz?js-enabled-only=true"
  nats_url=nats://127.0.0.1:$port
}
# start_service presence|calls N SWEEP_MS: replica N; appends its URL to $urls.
start_service() {
  local service=$1 n=$2 sweep=$3 port metrics listen_var
  port=$(free_port); metrics=$(free_port)
  if [ "$service" = presence ]; then listen_var=PRESENCE_LISTEN; else listen_var=CALLS_LISTEN; fi
  spawn env RUST_LOG=warn NATS_URL="$nats_url" JETSTREAM_REPLICAS=1 SWEEP_INTERVAL_MS="$sweep" \
    GATEWAY_TIMEOUT_MS=30000 MAX_SOCKETS_PER_USER=100 MAX_CALLS_PER_USER=100 \
    "$listen_var=127.0.0.1:$port" METRICS_LISTEN=127.0.0.1:$metrics ./target/release/meetup-$service
  watch+=("$service-$n=${stack[-1]}")
  # /metrics is bound after the gRPC listener: when it answers, the API does too.
  wait_http "http://127.0.0.1:$metrics/metrics"
  urls+=("http://127.0.0.1:$port")
}

step "build (release)"
nice -n 10 cargo build --release --locked -p meetup-gateway -p meetup-presence -p meetup-calls -p meetup-loadgen
"$nats_bin" --version >&2

# 1. RPC/s: each service alone on its own NATS, one replica and two, at rising
# offered rates; at each rate one replica then two (close in time, so both see
# the same machine), each until its first rate not sustained. No sweeps: the
# load generator's sessions name a gateway that holds no lease, which a sweep
# would (rightly) remove under its feet. The presence mix never lists
# (--list-every 0): a ListUsers is a scan of the whole bucket, not a per-replica cost.
for service in presence calls; do
  scenario=$service; [ "$service" = calls ] && scenario=calls-grpc
  failed=()
  for rate in $rates; do
    for replicas in 1 2; do
      [[ " ${failed[*]} " == *" $replicas "* ]] && continue
      watch=(); urls=()
      start_nats
      for n in $(seq 1 "$replicas"); do start_service "$service" "$n" 0; done
      name="rpc-$service-x$replicas-$rate"
      measure "$name" "${watch[@]}" -- "$scenario" --url "$(IFS=,; echo "${urls[*]}")" \
        --rate "$rate" --duration "$dur" --list-every 0
      stop_stack
      python3 bench/report.py --rpc-passes "$out/$name.json" || failed+=("$replicas")
    done
    [ "${#failed[@]}" = 2 ] && break
  done
done

# 2. The cluster: two replicas of each service, two gateways listing both, as
# in production (sweeps every 500 ms). Limits that would rightly refuse a load
# generator on one IP are opened up, as in bench/run.sh.
gw_env=(EVENTS_PER_SEC=100000 EVENTS_BURST=100000 CONNECTIONS_PER_IP_PER_SEC=100000
        MAX_SOCKETS_PER_USER=100 MAX_CALLS_PER_USER=100 SOCKET_QUEUE=8192 RUST_LOG=warn
        GATEWAY_TIMEOUT_MS=30000 JETSTREAM_REPLICAS=1)
start_cluster() {
  watch=(); urls=()
  start_nats
  start_service presence 1 500; start_service presence 2 500
  local presence_urls; presence_urls=$(IFS=,; echo "${urls[*]}"); urls=()
  start_service calls 1 500; start_service calls 2 500
  local calls_urls; calls_urls=$(IFS=,; echo "${urls[*]}")
  gateways=()
  for n in 1 2; do
    local port; port=$(free_port)
    spawn env "${gw_env[@]}" PORT=$port HOST=127.0.0.1 NATS_URL="$nats_url" GATEWAY_ID=bench-gw-$n \
      PRESENCE_URL="$presence_urls" CALLS_URL="$calls_urls" \
      PRESENCE_LISTEN=127.0.0.1:0 CALLS_LISTEN=127.0.0.1:0 ./target/release/meetup-gateway
    watch+=("gateway-$n=${stack[-1]}")
    gateways+=("http://127.0.0.1:$port")
  done
  for g in "${gateways[@]}"; do wait_http "$g/readyz"; done
}

step "start: echo server"
echo_port=$(free_port)
./target/release/meetup-loadgen echo-server --listen 127.0.0.1:$echo_port >/dev/null 2>&1 & pids+=($!)
wait_port "$echo_port"
measure echo-unloaded -- echo --url ws://127.0.0.1:$echo_port --pairs 10 --rate 10 --duration "$dur"

start_cluster
measure relay-unloaded-x "${watch[@]}" -- relay --gateway "${gateways[0]}" --gateway "${gateways[1]}" --cross \
  --pairs 10 --rate 10 --duration "$dur"
measure "storm-$storm-x" "${watch[@]}" -- storm --gateway "${gateways[0]}" --gateway "${gateways[1]}" --users "$storm" --timeout 60
stop_stack

start_cluster
measure churn-x "${watch[@]}" -- calls --gateway "${gateways[0]}" --gateway "${gateways[1]}" --workers 20 --duration "$dur"
stop_stack

step "report"
python3 bench/report.py --replicas "$out" --machine "$(nproc) cores, $(uname -sr), $("$nats_bin" --version)" \
  --splice docs/benchmarks.md
echo "updated docs/benchmarks.md" >&2
