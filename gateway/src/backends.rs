//! The backends the gateway is handed by its composition root (`meetup-server`):
//! the presence, call and history services, each reached through a
//! [`Transport`], and the bus, the state store the gateway watches and the relay
//! log of away sessions, each local or remote (`meetup_platform`).
//!
//! A remote service is a set of replicas (`PRESENCE_URL`, `CALLS_URL`: several
//! addresses, or a name with several addresses, balanced with fail-over;
//! `HISTORY_URL`); a local one is the service of this process, called directly
//! through the same layers as over the network (no socket, no HTTP/2).

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use futures::TryFutureExt;
use futures::future::{Either, ErrInto};
use meetup_platform::Bus;
use meetup_platform::grpc::retry::Retry;
use meetup_platform::grpc::{AttachBearer, InProcess};
use meetup_platform::relay_log::RelayLog;
use meetup_platform::store::StateStore;
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::history::v1::history_service_client::HistoryServiceClient;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use tonic::body::Body;
use tonic::codegen::{StdError, http};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::channel::{self, Change};
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;

/// gRPC clients that carry `INTERNAL_API_TOKEN` when one is set.
/// Each call is traced (`TraceGrpcClient`), and sent again when that is safe
/// (`Retry`: refused connections, and replicas gone for methods safe to repeat).
pub type PresenceClient = PresenceServiceClient<InterceptedService<Traced, AttachBearer>>;
pub type CallsClient = CallServiceClient<InterceptedService<Traced, AttachBearer>>;
pub type HistoryClient = HistoryServiceClient<InterceptedService<Traced, AttachBearer>>;
type Traced = meetup_platform::tracing_context::TraceGrpcClient<Retry<Transport>>;

/// How the gateway reaches a service: the service of this process, called
/// directly through the same layers and interceptor as over the network, with
/// the same deadline, or the channel balanced over its replicas.
#[derive(Clone, Debug)]
pub enum Transport {
    Local(InProcess),
    Remote(Channel),
}

impl tower::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = Either<
        ErrInto<channel::ResponseFuture, StdError>,
        <InProcess as tower::Service<http::Request<Body>>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        match self {
            Transport::Local(service) => service.poll_ready(cx),
            Transport::Remote(channel) => channel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Local(service) => Either::Right(service.call(request)),
            Transport::Remote(channel) => Either::Left(channel.call(request).err_into()),
        }
    }
}

/// Largest response accepted from a service (a presence snapshot of ~1M users).
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// How the gateway reaches each of its services.
#[derive(Clone, Debug)]
pub struct Transports {
    pub presence: Transport,
    pub calls: Transport,
    pub history: Transport,
}

/// Everything the gateway runs on.
#[derive(Clone, Debug)]
pub struct Backends {
    pub presence: PresenceClient,
    pub calls: CallsClient,
    pub history: HistoryClient,
    pub bus: Bus,
    pub store: StateStore,
    pub relay_log: Arc<RelayLog>,
}

impl Backends {
    /// The gateway's clients of `services`, each call carrying `api_token`
    /// (`INTERNAL_API_TOKEN`) when there is one.
    pub fn new(
        services: Transports,
        api_token: Option<String>,
        bus: Bus,
        store: StateStore,
        relay_log: RelayLog,
    ) -> anyhow::Result<Self> {
        let bearer = AttachBearer::new(api_token)?;
        // Snapshots of a large cluster exceed tonic's 4 MB default.
        let presence = PresenceServiceClient::with_interceptor(
            Traced::new(Retry::new(services.presence)),
            bearer.clone(),
        )
        .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let calls = CallServiceClient::with_interceptor(
            Traced::new(Retry::new(services.calls)),
            bearer.clone(),
        )
        .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let history = HistoryServiceClient::with_interceptor(
            Traced::new(Retry::new(services.history)),
            bearer,
        );
        Ok(Backends {
            presence,
            calls,
            history,
            bus,
            store,
            relay_log: Arc::new(relay_log),
        })
    }
}

/// A remote service: the replicas `urls` names, balanced, until `stop`.
pub async fn remote(
    urls: &str,
    config: &Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Transport> {
    Ok(Transport::Remote(balanced(urls, config, stop).await?))
}

/// The history service at `HISTORY_URL`, connected on first use.
pub fn remote_history(url: &str, config: &Config) -> anyhow::Result<Transport> {
    let channel = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid HISTORY_URL {url:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.rpc_timeout())
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(Transport::Remote(channel))
}

fn endpoint(url: &str, config: &Config) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service address {url:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.rpc_timeout())
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Every replica address `urls` names: each comma-separated URL, and each
/// address its host name resolves to (a headless Kubernetes service, say).
async fn replica_urls(urls: &str) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut found = std::collections::BTreeSet::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .with_context(|| format!("invalid service address {url:?}"))?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            anyhow::bail!("service address {url:?} needs a scheme and a host");
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let is_ip = host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
        let resolved = if is_ip {
            None
        } else {
            tokio::net::lookup_host((host, port)).await.ok()
        };
        match resolved {
            Some(addrs) => {
                let before = found.len();
                for addr in addrs {
                    found.insert(format!("{scheme}://{addr}"));
                }
                if found.len() == before {
                    found.insert(url.to_owned());
                }
            }
            // An IP, or a name that does not resolve yet: used as it is.
            None => {
                found.insert(url.to_owned());
            }
        }
    }
    if found.is_empty() {
        anyhow::bail!("no service address in {urls:?}");
    }
    Ok(found)
}

/// How often replica addresses are looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(15);

/// A channel balanced over every replica `urls` names (power of two choices;
/// a replica whose connection fails is left out until it is back). Names are
/// resolved again every [`RESOLVE_EVERY`], so replicas may come and go.
async fn balanced(
    urls: &str,
    config: &Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Channel> {
    let (channel, changes) = Channel::balance_channel::<String>(64);
    let mut current = replica_urls(urls).await?;
    for url in &current {
        let _ = changes
            .send(Change::Insert(url.clone(), endpoint(url, config)?))
            .await;
    }
    let (urls, config) = (urls.to_owned(), config.clone());
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(RESOLVE_EVERY) => {}
            }
            let Ok(fresh) = replica_urls(&urls).await else {
                continue;
            };
            for gone in current.difference(&fresh) {
                tracing::info!(url = %gone, "service replica gone");
                let _ = changes.send(Change::Remove(gone.clone())).await;
            }
            for new in fresh.difference(&current) {
                if let Ok(endpoint) = endpoint(new, &config) {
                    tracing::info!(url = %new, "service replica found");
                    let _ = changes.send(Change::Insert(new.clone(), endpoint)).await;
                }
            }
            current = fresh;
        }
    });
    Ok(channel)
}
