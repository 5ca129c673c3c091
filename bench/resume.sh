#!/usr/bin/env bash
# Calls that survive disconnects, measured: a soak of calls across a cluster of
# two gateways (two replicas of each service, nats-server with JetStream) while
# every user's connection is dropped without goodbye every few seconds and comes
# back through a random gateway, resuming with its token and lastSeq. Writes
# bench/results/resume/soak.json; its figures are in docs/benchmarks.md
# ("Resume soak"). All traffic stays on 127.0.0.1; the run is bounded (60 s).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}            # QUICK=1: 10 calls for 10 s, to check the script itself
out=bench/results/resume
rm -rf "$out" && mkdir -p "$out"
nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
if [ "$QUICK" = 1 ]; then calls=10; dur=10; else calls=100; dur=60; fi

# shellcheck source=bench/cluster-lib.sh
source bench/cluster-lib.sh

step "build (release)"
nice -n 10 cargo build --release --locked -p meetup-server -p meetup-presence -p meetup-calls -p meetup-loadgen
"$nats_bin" --version >&2

start_cluster
measure soak "${watch[@]}" -- resume --gateway "${gateways[0]}" --gateway "${gateways[1]}" \
  --calls "$calls" --duration "$dur" --drop-every 5 --away-for 2 --relay-rate 2
stop_stack
python3 -m json.tool "$out/soak.json" >&2
