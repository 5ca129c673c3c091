//! The presence and call services as the gateway reaches them: remote replicas
//! (`PRESENCE_URL`, `CALLS_URL`: several addresses, or a name with several
//! addresses, balanced with fail-over) or services started in this process, each
//! still serving its gRPC API so that other internal services can call it while
//! the gateway calls it directly (no socket, no HTTP/2); and the state store the
//! gateway watches (JetStream over NATS, or the in-memory one it shares with the
//! in-process services).

use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use futures::TryFutureExt;
use futures::future::{Either, ErrInto};
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_runtime::Bus;
use meetup_runtime::grpc::retry::Retry;
use meetup_runtime::grpc::{AttachBearer, InProcess, in_process};
use meetup_runtime::store::{BucketSettings, StateStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
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
type Traced = meetup_runtime::tracing_context::TraceGrpcClient<Retry<Transport>>;

/// How the gateway reaches a service: the channel balanced over its replicas,
/// or the service of this process, called directly through the same layers
/// and interceptor as over the network, with the same deadline.
#[derive(Clone, Debug)]
pub enum Transport {
    Remote(Channel),
    InProcess(InProcess),
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
            Transport::Remote(channel) => channel.poll_ready(cx).map_err(Into::into),
            Transport::InProcess(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Remote(channel) => Either::Left(channel.call(request).err_into()),
            Transport::InProcess(service) => Either::Right(service.call(request)),
        }
    }
}

/// Largest response accepted from a service (a presence snapshot of ~1M users).
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

pub struct Backends {
    pub presence: PresenceClient,
    pub calls: CallsClient,
    pub bus: Bus,
    pub store: StateStore,
    embedded: Vec<JoinHandle<()>>,
    stop_embedded: watch::Sender<bool>,
}

impl Backends {
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let bus = match &config.nats_url {
            Some(url) => Bus::connect_nats(url, "meetup-gateway", Duration::from_secs(10)).await?,
            None => Bus::local(),
        };
        let settings = BucketSettings {
            replicas: config.jetstream_replicas.max(1),
            lease_ttl: config.liveness().timeout,
        };
        let store = StateStore::for_bus(&bus, settings).await?;
        let (stop_embedded, stop) = watch::channel(false);
        let mut embedded = Vec::new();
        let presence = match &config.presence_url {
            Some(urls) => Transport::Remote(balanced(urls, config, stopped(stop.clone())).await?),
            None => {
                let listener = bind(config.presence_listen, "PRESENCE_LISTEN").await?;
                tracing::info!(service = "presence", addr = %listener.local_addr()?, "listening");
                let presence =
                    meetup_presence::PresenceStore::new(&store, config.max_sockets_per_user)
                        .with_resume_grace(config.resume_grace());
                embedded.push(tokio::spawn(meetup_presence::gauges(
                    presence.clone(),
                    stopped(stop.clone()),
                )));
                embedded.push(tokio::spawn(meetup_presence::expire_away(
                    presence.clone(),
                    meetup_runtime::service::EXPIRE_EVERY,
                    stopped(stop.clone()),
                )));
                let api =
                    meetup_presence::api(presence, bus.clone(), config.internal_api_token.clone());
                let server =
                    meetup_runtime::grpc::serve(listener, api.clone(), stopped(stop.clone()));
                embedded.push(tokio::spawn(serve_embedded("presence", server)));
                Transport::InProcess(in_process(api, config.rpc_timeout()))
            }
        };
        let calls = match &config.calls_url {
            Some(urls) => Transport::Remote(balanced(urls, config, stopped(stop.clone())).await?),
            None => {
                let listener = bind(config.calls_listen, "CALLS_LISTEN").await?;
                tracing::info!(service = "calls", addr = %listener.local_addr()?, "listening");
                let registry = meetup_calls::CallRegistry::new(
                    &store,
                    meetup_calls::CallLimits {
                        max_participants: config.max_call_participants,
                        max_calls_per_user: config.max_calls_per_user,
                        resume_grace: config.resume_grace(),
                        ring_timeout: Duration::from_millis(config.ring_timeout_ms.max(1)),
                        chat_history: config.call_chat_history.max(1),
                    },
                );
                embedded.push(tokio::spawn(meetup_calls::gauges(
                    registry.clone(),
                    stopped(stop.clone()),
                )));
                embedded.push(tokio::spawn(meetup_calls::expire_away(
                    registry.clone(),
                    meetup_runtime::service::EXPIRE_EVERY,
                    stopped(stop.clone()),
                )));
                let api = meetup_calls::api(registry, config.internal_api_token.clone());
                let server =
                    meetup_runtime::grpc::serve(listener, api.clone(), stopped(stop.clone()));
                embedded.push(tokio::spawn(serve_embedded("calls", server)));
                Transport::InProcess(in_process(api, config.rpc_timeout()))
            }
        };
        let bearer = AttachBearer::new(config.internal_api_token.clone())?;
        // Snapshots of a large cluster exceed tonic's 4 MB default.
        let presence = PresenceServiceClient::with_interceptor(
            Traced::new(Retry::new(presence)),
            bearer.clone(),
        )
        .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let calls = CallServiceClient::with_interceptor(Traced::new(Retry::new(calls)), bearer)
            .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        Ok(Backends {
            presence,
            calls,
            bus,
            store,
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use meetup_proto::calls::v1::GetCallRequest;
    use meetup_proto::presence::v1::RegisterSessionRequest;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    /// Open connections that the listener on 127.0.0.1:`port` accepted.
    fn accepted(port: u16) -> usize {
        let local = format!("0100007F:{port:04X}");
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            // The local address, and ESTABLISHED.
            .filter(|fields| fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"01"))
            .count()
    }

    fn register(session_id: &str) -> RegisterSessionRequest {
        RegisterSessionRequest {
            user_id: "u1".into(),
            username: "Ann".into(),
            gateway_id: "gw-1".into(),
            session_id: session_id.into(),
            ..Default::default()
        }
    }

    /// What the gateway's ack mapping looks at.
    fn seen(status: &tonic::Status) -> (tonic::Code, String, Option<String>) {
        let reason = meetup_runtime::reason::of(status).map(|r| r.as_str().to_owned());
        (status.code(), status.message().to_owned(), reason)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_gateway_calls_its_services_in_process_and_others_still_reach_them_over_tcp() {
        let (presence_port, calls_port) = (free_port(), free_port());
        let config = Config::try_parse_from([
            "meetup-gateway".to_owned(),
            format!("--presence-listen=127.0.0.1:{presence_port}"),
            format!("--calls-listen=127.0.0.1:{calls_port}"),
            "--internal-api-token=s3cret".to_owned(),
            "--max-sockets-per-user=1".to_owned(),
        ])
        .expect("config");
        let backends = Backends::start(&config).await.expect("backends");

        // The gateway's own calls are answered, or refused with their reason,
        // without a connection to either listener.
        let presence = backends.presence.clone();
        presence
            .clone()
            .register_session(register("s1"))
            .await
            .expect("registered");
        let in_process = presence
            .clone()
            .register_session(register("s2"))
            .await
            .expect_err("one socket per user");
        let no_call = backends
            .calls
            .clone()
            .get_call(GetCallRequest {
                call_id: "nope".into(),
            })
            .await
            .expect_err("no such call");
        assert_eq!(no_call.code(), tonic::Code::NotFound);
        assert_eq!((accepted(presence_port), accepted(calls_port)), (0, 0));

        // Another service over TCP gets the same answer, with the token only,
        // and the health service.
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{presence_port}"))
            .expect("url")
            .connect()
            .await
            .expect("connected");
        let bearer = AttachBearer::new(Some("s3cret".into())).expect("token");
        let over_tcp = PresenceServiceClient::with_interceptor(channel.clone(), bearer)
            .register_session(register("s3"))
            .await
            .expect_err("one socket per user");
        assert_eq!(seen(&over_tcp), seen(&in_process));
        assert_eq!(
            seen(&in_process).2.as_deref(),
            Some("too-many-sockets"),
            "{in_process:?}"
        );
        let anonymous = PresenceServiceClient::new(channel.clone())
            .register_session(register("s1"))
            .await
            .expect_err("no token");
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        let health = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "meetup.presence.v1.PresenceService".into(),
            })
            .await
            .expect("health");
        assert_eq!(health.into_inner().status(), ServingStatus::Serving);
        // (Which also shows that `accepted` sees connections.)
        assert!(accepted(presence_port) > 0);

        backends.stop().await;
    }
}
