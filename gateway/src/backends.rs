//! The presence and call services as the gateway reaches them: remote processes
//! (`PRESENCE_URL`, `CALLS_URL`) or services started in this process, each still
//! serving its gRPC API so that other internal services can call it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_runtime::grpc::AttachBearer;
use meetup_runtime::{Bus, OrderedPublisher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;

/// gRPC clients that carry `INTERNAL_API_TOKEN` when one is set.
/// Each call is traced (`TraceGrpcClient`).
pub type PresenceClient = PresenceServiceClient<InterceptedService<TracedChannel, AttachBearer>>;
pub type CallsClient = CallServiceClient<InterceptedService<TracedChannel, AttachBearer>>;
type TracedChannel = meetup_runtime::tracing_context::TraceGrpcClient<Channel>;

/// Largest response accepted from a service (a presence snapshot of ~1M users).
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

pub struct Backends {
    pub presence: PresenceClient,
    pub calls: CallsClient,
    pub bus: Bus,
    embedded: Vec<JoinHandle<()>>,
    stop_embedded: watch::Sender<bool>,
}

impl Backends {
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let bus = match &config.nats_url {
            Some(url) => Bus::connect_nats(url, "meetup-gateway", Duration::from_secs(10)).await?,
            None => Bus::local(),
        };
        let (stop_embedded, stop) = watch::channel(false);
        let mut embedded = Vec::new();
        let presence_url = match &config.presence_url {
            Some(url) => url.clone(),
            None => {
                let listener = bind(config.presence_listen, "PRESENCE_LISTEN").await?;
                let url = local_url(listener.local_addr()?);
                tracing::info!(service = "presence", addr = %listener.local_addr()?, "listening");
                let store = meetup_presence::PresenceStore::new(
                    OrderedPublisher::start(bus.clone()),
                    config.max_sockets_per_user,
                );
                meetup_presence::register_metrics(&store);
                embedded.push(tokio::spawn(serve_embedded(
                    "presence",
                    meetup_presence::run(
                        listener,
                        store,
                        config.internal_api_token.clone(),
                        stopped(stop.clone()),
                    ),
                )));
                url
            }
        };
        let calls_url = match &config.calls_url {
            Some(url) => url.clone(),
            None => {
                let listener = bind(config.calls_listen, "CALLS_LISTEN").await?;
                let url = local_url(listener.local_addr()?);
                tracing::info!(service = "calls", addr = %listener.local_addr()?, "listening");
                let registry = meetup_calls::CallRegistry::new(
                    OrderedPublisher::start(bus.clone()),
                    meetup_calls::CallLimits {
                        max_participants: config.max_call_participants,
                        max_calls_per_user: config.max_calls_per_user,
                    },
                );
                meetup_calls::register_metrics(&registry);
                embedded.push(tokio::spawn(serve_embedded(
                    "calls",
                    meetup_calls::run(
                        listener,
                        registry,
                        config.internal_api_token.clone(),
                        stopped(stop.clone()),
                    ),
                )));
                url
            }
        };
        let bearer = AttachBearer::new(config.internal_api_token.clone())?;
        // Snapshots of a large cluster exceed tonic's 4 MB default.
        let presence = PresenceServiceClient::with_interceptor(
            channel(&presence_url, config)?,
            bearer.clone(),
        )
        .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let calls = CallServiceClient::with_interceptor(channel(&calls_url, config)?, bearer)
            .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        Ok(Backends {
            presence,
            calls,
            bus,
            embedded,
            stop_embedded,
        })
    }

    /// Stops the in-process services, if any, after the gateway is done with them.
    pub async fn stop(self) {
        let _ = self.stop_embedded.send(true);
        for handle in self.embedded {
            let _ = handle.await;
        }
        self.bus.drain().await;
    }
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {name}={addr} for the in-process service"))
}

async fn serve_embedded(name: &'static str, server: impl Future<Output = anyhow::Result<()>>) {
    if let Err(error) = server.await {
        tracing::error!(service = name, %error, "in-process service failed");
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The address to reach a listener of this process from this process.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

fn channel(url: &str, config: &Config) -> anyhow::Result<TracedChannel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service address {url:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.rpc_timeout())
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    // Lazy: the gateway starts even while a service is down, and reconnects by itself.
    Ok(TracedChannel::new(endpoint.connect_lazy()))
}
