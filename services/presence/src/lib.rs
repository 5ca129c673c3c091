//! The presence service: who is online, and through which sessions (sockets) on
//! which gateways. The state is one key per user in the presence bucket of the
//! shared store; this service is stateless, so any number of replicas serve it,
//! and each one sweeps the sessions of gateways whose lease has expired.
//!
//! Where to look: `store` is the state (split by concern: sessions, away,
//! expiry, gateways, reading, follow; and the index of the bucket each replica
//! keeps from its watch, which the expiry, the sweep and the counts ask);
//! `service` is the gRPC API over it;
//! `push` carries application events to a user's sockets; the jobs that run
//! beside the API (`sweep`, `expire_away`, `gauges`) are below.

#![forbid(unsafe_code)]

pub mod error;
pub mod push;
pub mod service;
pub mod store;

use std::future::Future;
use std::time::Duration;

use meetup_platform::Bus;
use meetup_platform::grpc::RequireBearer;
use meetup_proto::presence::v1::presence_service_server::PresenceServiceServer;
use tonic::service::interceptor::InterceptedService;

pub use error::PresenceError;
pub use service::PresenceGrpc;
pub use store::PresenceStore;

/// The presence gRPC API: with `api_token`, every call must carry it as a bearer
/// token. Served over the network by `meetup_platform::service::run`, or called in process
/// (`meetup_platform::grpc::in_process`).
pub type PresenceApi = InterceptedService<PresenceServiceServer<PresenceGrpc>, RequireBearer>;

/// `bus` carries the application events of `SendToUser` to the gateways.
pub fn api(store: PresenceStore, bus: Bus, api_token: Option<String>) -> PresenceApi {
    PresenceServiceServer::with_interceptor(
        PresenceGrpc::new(store, bus),
        RequireBearer::new(api_token),
    )
}

/// Removes, every `interval`, the sessions of gateways whose lease has been gone
/// for one interval (the call service removes them from calls one interval
/// earlier, so their peers hear `user-left-call` before `user-left`).
pub async fn sweep(
    store: PresenceStore,
    interval: Duration,
    lease_ttl: Duration,
    stop: impl Future<Output = ()>,
) {
    meetup_platform::service::sweep_every(
        interval,
        lease_ttl,
        "presence sweep",
        |view| {
            let store = store.clone();
            async move { store.sweep(&mut *view.lock().await, interval).await }
        },
        stop,
    )
    .await;
}

/// Removes, every `interval`, the away sessions whose time ran out one
/// interval ago (the call service takes them out of their calls one interval
/// earlier). Runs with or without NATS: it needs no lease.
pub async fn expire_away(store: PresenceStore, interval: Duration, stop: impl Future<Output = ()>) {
    meetup_platform::service::expire_every(
        interval,
        "presence_away_expired",
        "Away sessions removed because nobody resumed them in time",
        "expiring away sessions",
        || {
            let store = store.clone();
            async move { store.expire_away(interval).await }
        },
        stop,
    )
    .await;
}

/// Registers this service's state gauges in the process metrics and keeps them
/// current until `stop`.
pub async fn gauges(store: PresenceStore, stop: impl Future<Output = ()>) {
    use prometheus_client::metrics::gauge::Gauge;
    let online_users = Gauge::<i64>::default();
    meetup_platform::metrics::register(
        "presence_online_users",
        "Users online in the cluster",
        online_users.clone(),
    );
    let sessions = Gauge::<i64>::default();
    meetup_platform::metrics::register(
        "presence_sessions",
        "Sessions (sockets) registered",
        sessions.clone(),
    );
    meetup_platform::service::every(
        Duration::from_secs(5),
        || {
            let store = store.clone();
            let (online_users, sessions) = (online_users.clone(), sessions.clone());
            async move {
                if let Ok(counts) = store.counts().await {
                    online_users.set(i64::from(counts.online_users));
                    sessions.set(i64::from(counts.sessions));
                }
            }
        },
        stop,
    )
    .await;
}
