//! `meetup-server`: the composition root of the `meetup-gateway` binary. It
//! decides from the configuration what runs where, starts it, hands the gateway
//! library (`meetup-gateway`) its backends, and stops what it started once the
//! gateway is done.
//!
//! With nothing configured, the whole system runs in this one process (the
//! embedded mode): the presence, call and history services (`local`), the
//! in-memory state store, the in-process bus and relay log. Each setting picks
//! the remote backend instead: `NATS_URL` (bus, store and relay log on NATS),
//! `PRESENCE_URL`, `CALLS_URL`, `HISTORY_URL` (the services' replicas).
//!
//! Every such choice is an enum with the variants `Local` (in this process) and
//! `Remote` (another process): `Bus`, `Bucket`, `RelayLog`, `Transport`.
//!
//! Where to look: `local` (the services started in this process),
//! `history_feed` (what feeds the history of this process).

#![forbid(unsafe_code)]

pub mod history_feed;
pub mod local;

use std::time::Duration;

use meetup_gateway::backends;
use meetup_gateway::{Backends, Config, Transports};
use meetup_platform::Bus;
use meetup_platform::relay_log::RelayLog;
use meetup_platform::store::{BucketSettings, StateStore};
use tokio::net::TcpListener;

use crate::local::LocalServices;

/// Runs the gateway as `config` says on `listener` until `shutdown` resolves,
/// then stops what was started for it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let system = System::start(&config).await?;
    let result = meetup_gateway::run(config, system.backends.clone(), listener, shutdown).await;
    system.stop().await;
    tracing::info!("stopped");
    result
}

/// The gateway's backends, and the services this process runs for them.
pub struct System {
    pub backends: Backends,
    local: LocalServices,
}

impl System {
    /// Connects to what `config` names and starts the rest here.
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
        let relay_log = RelayLog::for_bus(
            &bus,
            config.resume_buffer,
            meetup_gateway::resume::kept_for(config.resume_grace()),
            config.jetstream_replicas,
        )
        .await?;
        let mut local = LocalServices::default();
        let presence = match &config.presence_url {
            Some(urls) => backends::remote(urls, config, local.stopped()).await?,
            None => local.presence(config, &store, &bus).await?,
        };
        let calls = match &config.calls_url {
            Some(urls) => backends::remote(urls, config, local.stopped()).await?,
            None => local.calls(config, &store).await?,
        };
        warn_if_local_apis_exposed(config);
        let history = match &config.history_url {
            Some(url) => backends::remote_history(url, config)?,
            None => local.history(config, &store).await?,
        };
        let services = Transports {
            presence,
            calls,
            history,
        };
        let backends = Backends::new(
            services,
            config.internal_api_token.clone(),
            bus,
            store,
            relay_log,
        )?;
        Ok(System { backends, local })
    }

    /// Stops the services of this process, then the bus.
    pub async fn stop(self) {
        self.local.stop().await;
        self.backends.bus.drain().await;
    }
}

/// The in-process services' APIs are as dangerous on the network as the
/// standalone ones: same warning.
fn warn_if_local_apis_exposed(config: &Config) {
    let token = config.internal_api_token.as_deref();
    if config.presence_url.is_none() {
        meetup_platform::grpc::warn_if_exposed("presence", config.presence_listen, token);
    }
    if config.calls_url.is_none() {
        meetup_platform::grpc::warn_if_exposed("calls", config.calls_listen, token);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use meetup_platform::grpc::AttachBearer;
    use meetup_proto::calls::v1::GetCallRequest;
    use meetup_proto::history::v1::ListUserCallsRequest;
    use meetup_proto::presence::v1::RegisterSessionRequest;
    use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
    use tonic::transport::Endpoint;
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
        let reason = meetup_platform::reason::of(status).map(|r| r.as_str().to_owned());
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
            "--history-database-url=sqlite::memory:".to_owned(),
        ])
        .expect("config");
        let system = System::start(&config).await.expect("backends");
        let backends = &system.backends;

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
        // The history too, through the same gRPC API.
        let calls = backends
            .history
            .clone()
            .list_user_calls(ListUserCallsRequest {
                user_id: "u1".into(),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .expect("the history answers");
        assert!(calls.into_inner().calls.is_empty());
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

        system.stop().await;
    }
}
