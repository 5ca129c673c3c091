//! `meetup-presence`: the presence gRPC service as its own process.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use meetup_runtime::telemetry::{self, LogFormat};
use meetup_runtime::{Bus, OrderedPublisher};

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
    /// NATS server the events are published on. Without it, events stay in the
    /// process (useful only to load-test the API on its own).
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// How long to wait for NATS at start.
    #[arg(long, env = "NATS_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    nats_connect_timeout_secs: u64,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let bus = match &config.nats_url {
        Some(url) => {
            Bus::connect_nats(
                url,
                "meetup-presence",
                Duration::from_secs(config.nats_connect_timeout_secs),
            )
            .await?
        }
        None => {
            tracing::warn!("NATS_URL is not set: presence events are not published");
            Bus::local()
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(service = "presence", addr = %listener.local_addr()?, bus = bus.kind(), "listening");
    let store = meetup_presence::PresenceStore::new(OrderedPublisher::start(bus.clone()));
    meetup_presence::run(listener, store, meetup_runtime::shutdown::signal()).await?;
    bus.drain().await;
    tracing::info!("stopped");
    Ok(())
}
