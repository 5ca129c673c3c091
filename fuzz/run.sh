#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECS each, default 15) on the
# stable toolchain, and fails on the first crash. Longer runs: see "Fuzzing" in
# the README, e.g. FUZZ_SECS=600 ./fuzz/run.sh, or one target by name:
#   ./fuzz/run.sh bus_message
#
# cargo-fuzz wants nightly-only compiler flags (sanitizer coverage);
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. --sanitizer none: the
# code under test forbids `unsafe`, and AddressSanitizer costs ~3x the executions.
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECS:-15}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(client_payload bus_message jwt_token forwarded_for)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none -O
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" logs
  printf '\n--> %s (%ss)\n' "$target" "$secs"
  # corpus/ grows across runs (not committed); seeds/ are the committed starting
  # points, including inputs that once crashed.
  set +e
  cargo fuzz run --sanitizer none -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$target.log" 2>&1
  status=$?
  set -e
  grep -E 'DONE|number_of_executed_units|panicked|SUMMARY|Test unit written|ERROR' "logs/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "logs/$target.log" >&2
    echo "fuzz target $target failed (exit $status): the crashing input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
