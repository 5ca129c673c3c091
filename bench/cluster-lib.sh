# Shared by bench/replicas.sh and bench/resume.sh (sourced): starting a cluster of
# release binaries on 127.0.0.1 (nats-server with JetStream, service replicas, two
# gateways), measuring one load generator run with the CPU time of each process,
# and stopping everything. The sourcing script sets $out (results directory)
# and $nats_bin, and runs from the repository root.

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

