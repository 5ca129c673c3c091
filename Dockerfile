# syntax=docker/dockerfile:1
#
# One image with the four MeetUp binaries: meetup-gateway, meetup-presence,
# meetup-calls and meetup-history. docker-compose.yml picks which one each container runs.
#
#   docker build -t meetup .
#   docker run --rm -p 3001:3001 meetup      # the whole system in one process
#
# Needs BuildKit (the default builder of current Docker): the cargo registry and
# the target directory live in cache mounts, so a rebuild after a source change
# recompiles only the workspace crates, not the dependencies.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------
# The gateway embeds the browser build of socket.io-client for its /demo page
# (gateway/build.rs looks for gateway/demo/node_modules; the Rust image has no
# npm). Installed here from gateway/demo's lock file; if the workspace has no
# such lock file this stage yields an empty node_modules and nothing else.
FROM node:22-bookworm-slim AS demo-assets
WORKDIR /demo
RUN --mount=type=bind,source=gateway,target=/gateway \
    --mount=type=cache,id=meetup-npm,target=/root/.npm,sharing=locked \
    mkdir -p node_modules \
 && if [ -f /gateway/demo/package-lock.json ]; then \
      cp /gateway/demo/package.json /gateway/demo/package-lock.json . \
      && npm ci --no-audit --no-fund --loglevel=error; \
    fi

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# The whole workspace (less what .dockerignore leaves out): every member's
# manifest has to be there for cargo to load the workspace, tests/ included.
COPY . .
COPY --from=demo-assets /demo/node_modules gateway/demo/node_modules
# Already installed above: gateway/build.rs must not try npm itself.
ENV MEETUP_SKIP_DEMO_NPM=1

# `-p` for each binary: the workspace's default-members is only meetup-server
# (which builds `meetup-gateway`), so a bare `cargo build` at the root would not
# build the services.
# The target dir is a cache mount, gone after this step: copy the binaries out
# in the same RUN.
RUN --mount=type=cache,id=meetup-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=meetup-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=meetup-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
        -p meetup-server -p meetup-presence -p meetup-calls -p meetup-history \
 && mkdir -p /out \
 && cp target/release/meetup-gateway target/release/meetup-presence target/release/meetup-calls \
       target/release/meetup-history /out/

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: for a NATS or gRPC endpoint behind TLS.
# curl: the containers' health checks (gateway GET /readyz, and grpc-health below).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# grpc-health HOST:PORT [SERVICE]: exits 0 only if the server answers
# grpc.health.v1.Health/Check for SERVICE with SERVING. A single unary gRPC call
# made by curl over cleartext HTTP/2, so no grpc_health_probe binary is needed.
COPY --chmod=0755 <<'EOF' /usr/local/bin/grpc-health
#!/bin/bash
set -euo pipefail
addr=${1:?usage: grpc-health HOST:PORT [SERVICE]}
service=${2:-}
len=${#service}
if (( len > 125 )); then echo "grpc-health: service name too long" >&2; exit 1; fi
# HealthCheckRequest { string service = 1 } is 0x0a <len> <name>, nothing if empty.
msg_len=0
if (( len > 0 )); then msg_len=$(( len + 2 )); fi
request() {
  # gRPC frame: flag 0 (not compressed), big-endian u32 length, the message.
  printf '\000\000\000\000'
  printf "\\$(printf '%03o' "$msg_len")"
  if (( len > 0 )); then
    printf '\012'
    printf "\\$(printf '%03o' "$len")"
    printf '%s' "$service"
  fi
}
reply=$(request | curl -sS --fail --max-time 3 --http2-prior-knowledge \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @- "http://${addr}/grpc.health.v1.Health/Check" \
  | od -An -tx1 | tr -d ' \n') || reply=""
# HealthCheckResponse { status: SERVING (1) }, framed: 00 00000002 08 01.
if [[ $reply == 00000000020801 ]]; then exit 0; fi
echo "grpc-health: ${addr} ${service:-(server)} is not SERVING (reply: ${reply:-none})" >&2
exit 1
EOF

RUN groupadd --system --gid 10001 meetup \
 && useradd --system --uid 10001 --gid meetup --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin meetup

COPY --from=builder /out/ /usr/local/bin/

# The working directory is writable by the MeetUp user: the embedded gateway
# keeps its call history in ./data/history.db (HISTORY_DATABASE_URL's default).
RUN mkdir -p /var/lib/meetup && chown 10001:10001 /var/lib/meetup
WORKDIR /var/lib/meetup

USER 10001:10001

# 3001: gateway HTTP + Socket.IO. 50051 / 50052 / 50053: presence / calls / history gRPC.
EXPOSE 3001 50051 50052 50053

# No ENTRYPOINT, so compose (or `docker run meetup meetup-presence`) names the
# binary. The default is the gateway because, with no PRESENCE_URL, CALLS_URL or
# NATS_URL, it runs the whole system (presence, calls, in-process bus) embedded.
CMD ["meetup-gateway"]
