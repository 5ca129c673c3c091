//! The presence service: who is online, and through which sessions (sockets) on
//! which gateways. Every change is published on the bus as a `PresenceEvent` so that
//! every gateway keeps a replica.

#![forbid(unsafe_code)]

pub mod error;
pub mod service;
pub mod store;

use std::future::Future;

use meetup_proto::presence::v1::presence_service_server::PresenceServiceServer;
use tokio::net::TcpListener;

pub use error::PresenceError;
pub use service::PresenceGrpc;
pub use store::PresenceStore;

/// Serves the presence gRPC API (with health and reflection) until `shutdown`; with
/// `api_token`, every API call must carry it as a bearer token.
pub async fn run(
    listener: TcpListener,
    store: PresenceStore,
    api_token: Option<String>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = PresenceServiceServer::with_interceptor(
        PresenceGrpc::new(store),
        meetup_runtime::grpc::RequireBearer::new(api_token),
    );
    meetup_runtime::grpc::serve(listener, service, shutdown).await
}

/// Registers this service's state gauges in the process metrics.
pub fn register_metrics(store: &PresenceStore) {
    use prometheus_client::metrics::gauge::Gauge;
    let presence_online_users = Gauge::<i64>::default();
    meetup_runtime::metrics::register(
        "presence_online_users",
        "Users online in the cluster",
        presence_online_users.clone(),
    );
    let presence_sessions = Gauge::<i64>::default();
    meetup_runtime::metrics::register(
        "presence_sessions",
        "Sessions (sockets) registered",
        presence_sessions.clone(),
    );
    let store = store.clone();
    meetup_runtime::metrics::on_scrape(move || {
        let counts = store.counts();
        presence_online_users.set(i64::from(counts.online_users));
        presence_sessions.set(i64::from(counts.sessions));
    });
}
