//! What every service binary does around its gRPC API: logging, the bus, the
//! listeners, `/metrics`, and an orderly stop on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::telemetry::{self, LogFormat};
use crate::{Bus, OrderedPublisher};

/// Settings every service binary shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// NATS server the events are published on. Without it, events stay in the
    /// process (useful only to load-test the API on its own).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// How long to wait for NATS at start, in seconds.
    #[arg(long, env = "NATS_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub nats_connect_timeout_secs: u64,
    /// Bearer token every API call must carry (unset: no check).
    #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
    pub internal_api_token: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// The shutdown signal handed to the service.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one service: connects the bus, binds `listen` and `metrics_listen`, and
/// calls `serve` with the event publisher, the API listener and the shutdown
/// signal. Returns once `serve` has stopped and the bus is drained.
pub async fn run<Fut>(
    name: &'static str,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    args: &ServiceArgs,
    serve: impl FnOnce(OrderedPublisher, TcpListener, Shutdown) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let telemetry = telemetry::init(&format!("meetup-{name}"), args.log_format);
    let bus = match &args.nats_url {
        Some(url) => {
            let timeout = Duration::from_secs(args.nats_connect_timeout_secs);
            Bus::connect_nats(url, &format!("meetup-{name}"), timeout).await?
        }
        None => {
            tracing::warn!("NATS_URL is not set: events are not published");
            Bus::local()
        }
    };
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(service = name, addr = %listener.local_addr()?, bus = bus.kind(), "listening");
    crate::grpc::warn_if_exposed(
        name,
        listener.local_addr()?,
        args.internal_api_token.as_deref(),
    );
    let metrics = TcpListener::bind(metrics_listen).await?;
    tracing::info!(service = format!("{name}-metrics"), addr = %metrics.local_addr()?, "listening");
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(crate::metrics::serve(metrics, async move {
        let _ = metrics_stopped.await;
    }));
    let result = serve(
        OrderedPublisher::start(bus.clone()),
        listener,
        Box::pin(crate::shutdown::signal()),
    )
    .await;
    let _ = stop_metrics.send(());
    let _ = metrics_server.await;
    bus.drain().await;
    tracing::info!("stopped");
    telemetry.shutdown().await;
    result
}
