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

# shellcheck source=bench/cluster-lib.sh
source bench/cluster-lib.sh

step "build (release)"
nice -n 10 cargo build --release --locked -p meetup-server -p meetup-presence -p meetup-calls -p meetup-loadgen
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
