//! `meetup-calls`: the call-room gRPC service as its own process.

use std::net::SocketAddr;

use clap::Parser;
use meetup_platform::service::{Background, ServiceArgs};

#[derive(Debug, Parser)]
#[command(
    name = "meetup-calls",
    about = "MeetUp call-room gRPC service",
    version
)]
struct Config {
    /// Address of the gRPC API.
    #[arg(long, env = "CALLS_LISTEN", default_value = "0.0.0.0:50052")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9102")]
    metrics_listen: SocketAddr,
    /// Most sessions in one call.
    #[arg(long, env = "MAX_CALL_PARTICIPANTS", default_value_t = 16)]
    max_call_participants: usize,
    /// Most live calls one user may have started.
    #[arg(long, env = "MAX_CALLS_PER_USER", default_value_t = 5)]
    max_calls_per_user: usize,
    /// How long an invitation rings before it is missed, in milliseconds.
    #[arg(long, env = "RING_TIMEOUT_MS", default_value_t = 45_000)]
    ring_timeout_ms: u64,
    /// How many chat messages a call keeps (and a joiner gets).
    #[arg(long, env = "CALL_CHAT_HISTORY", default_value_t = 50)]
    call_chat_history: usize,
    #[command(flatten)]
    common: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    let limits = meetup_calls::CallLimits {
        max_participants: config.max_call_participants,
        max_calls_per_user: config.max_calls_per_user,
        resume_grace: common.resume_grace(),
        ring_timeout: std::time::Duration::from_millis(config.ring_timeout_ms.max(1)),
        chat_history: config.call_chat_history.max(1),
    };
    meetup_platform::service::run(
        "calls",
        config.listen,
        config.metrics_listen,
        &config.common,
        |state, _bus| async move {
            let registry = meetup_calls::CallRegistry::new(&state, limits);
            let mut background = Background::default();
            background.spawn(meetup_calls::gauges(registry.clone(), background.stopped()));
            background.spawn(meetup_calls::expire_away(
                registry.clone(),
                meetup_platform::service::EXPIRE_EVERY,
                background.stopped(),
            ));
            if let Some(interval) = common.sweep_interval(&state) {
                background.spawn(meetup_calls::sweep(
                    registry.clone(),
                    interval,
                    common.bucket_settings().lease_ttl,
                    background.stopped(),
                ));
            }
            let token = common.internal_api_token.clone();
            Ok((meetup_calls::api(registry, token), background))
        },
    )
    .await
}
