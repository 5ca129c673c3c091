//! `meetup-presence`: the presence gRPC service as its own process.

use std::net::SocketAddr;

use clap::Parser;
use meetup_platform::service::{Background, ServiceArgs};

#[derive(Debug, Parser)]
#[command(
    name = "meetup-presence",
    about = "MeetUp presence gRPC service",
    version
)]
struct Config {
    /// Address of the gRPC API.
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9101")]
    metrics_listen: SocketAddr,
    /// Most sessions (sockets) one user id may hold, cluster-wide.
    #[arg(long, env = "MAX_SOCKETS_PER_USER", default_value_t = 10)]
    max_sockets_per_user: usize,
    #[command(flatten)]
    common: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    meetup_platform::service::run(
        "presence",
        config.listen,
        config.metrics_listen,
        &config.common,
        |state, bus| async move {
            let store = meetup_presence::PresenceStore::new(&state, config.max_sockets_per_user)
                .with_resume_grace(common.resume_grace());
            let mut background = Background::default();
            background.spawn(meetup_presence::gauges(store.clone(), background.stopped()));
            background.spawn(meetup_presence::expire_away(
                store.clone(),
                meetup_platform::service::EXPIRE_EVERY,
                background.stopped(),
            ));
            if let Some(interval) = common.sweep_interval(&state) {
                background.spawn(meetup_presence::sweep(
                    store.clone(),
                    interval,
                    common.bucket_settings().lease_ttl,
                    background.stopped(),
                ));
            }
            let token = common.internal_api_token.clone();
            Ok((meetup_presence::api(store, bus, token), background))
        },
    )
    .await
}
