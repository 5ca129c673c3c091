//! The call service: call rooms, who was invited, and which sessions take part.
//! The state is one key per call in the calls bucket of the shared store, which
//! every gateway watches; this service is stateless, so any number of replicas
//! serve it, and each one sweeps the sessions of gateways whose lease expired.

#![forbid(unsafe_code)]

pub mod error;
pub mod registry;
pub mod service;

use std::future::Future;
use std::time::Duration;

use meetup_platform::grpc::RequireBearer;
use meetup_proto::calls::v1::call_service_server::CallServiceServer;
use tonic::service::interceptor::InterceptedService;

pub use error::CallError;
pub use registry::{CallLimits, CallRegistry};
pub use service::CallGrpc;

/// The call gRPC API: with `api_token`, every call must carry it as a bearer
/// token. Served over the network by `meetup_platform::service::run`, or called in process
/// (`meetup_platform::grpc::in_process`).
pub type CallsApi = InterceptedService<CallServiceServer<CallGrpc>, RequireBearer>;

pub fn api(registry: CallRegistry, api_token: Option<String>) -> CallsApi {
    CallServiceServer::with_interceptor(CallGrpc::new(registry), RequireBearer::new(api_token))
}

/// Every `interval`: takes the sessions of gateways whose lease is gone out of
/// their calls, and deletes the records of calls ended long ago.
pub async fn sweep(
    registry: CallRegistry,
    interval: Duration,
    lease_ttl: Duration,
    stop: impl Future<Output = ()>,
) {
    meetup_platform::service::sweep_every(
        interval,
        lease_ttl,
        "calls sweep",
        |view| {
            let registry = registry.clone();
            async move {
                let mut view = view.lock().await;
                registry.sweep(&mut view, registry::ENDED_RETENTION).await
            }
        },
        stop,
    )
    .await;
}

/// Takes out of their calls, every `interval`, the away sessions whose time
/// ran out. Runs with or without NATS: it needs no lease.
pub async fn expire_away(
    registry: CallRegistry,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    meetup_platform::service::expire_every(
        interval,
        "calls_away_expired",
        "Away participants taken out of their calls because nobody resumed them in time",
        "expiring away participants",
        || {
            let registry = registry.clone();
            async move { registry.expire_away().await }
        },
        stop,
    )
    .await;
}

/// Registers this service's state gauges in the process metrics and keeps them
/// current until `stop`.
pub async fn gauges(registry: CallRegistry, stop: impl Future<Output = ()>) {
    use prometheus_client::metrics::gauge::Gauge;
    let calls_live = Gauge::<i64>::default();
    meetup_platform::metrics::register("calls_live", "Live calls", calls_live.clone());
    let calls_participants = Gauge::<i64>::default();
    meetup_platform::metrics::register(
        "calls_participants",
        "Sessions in live calls",
        calls_participants.clone(),
    );
    meetup_platform::service::every(
        Duration::from_secs(5),
        || {
            let registry = registry.clone();
            let (live, participants) = (calls_live.clone(), calls_participants.clone());
            async move {
                if let Ok(counts) = registry.counts().await {
                    live.set(i64::from(counts.active_calls));
                    participants.set(i64::from(counts.participants));
                }
            }
        },
        stop,
    )
    .await;
}
