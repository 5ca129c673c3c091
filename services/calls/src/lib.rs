//! The call service: call rooms, who was invited, and which sessions take part.
//! Every change is published on the bus as a `CallEvent` so that every gateway
//! keeps a replica and tells its own sockets.

#![forbid(unsafe_code)]

pub mod error;
pub mod registry;
pub mod service;

use std::future::Future;

use meetup_proto::calls::v1::call_service_server::CallServiceServer;
use tokio::net::TcpListener;

pub use error::CallError;
pub use registry::{CallLimits, CallRegistry};
pub use service::CallGrpc;

/// Serves the call gRPC API (with health and reflection) until `shutdown`; with
/// `api_token`, every API call must carry it as a bearer token.
pub async fn run(
    listener: TcpListener,
    registry: CallRegistry,
    api_token: Option<String>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = CallServiceServer::with_interceptor(
        CallGrpc::new(registry),
        meetup_runtime::grpc::RequireBearer::new(api_token),
    );
    meetup_runtime::grpc::serve(listener, service, shutdown).await
}

/// Registers this service's state gauges in the process metrics.
pub fn register_metrics(registry: &CallRegistry) {
    use prometheus_client::metrics::gauge::Gauge;
    let calls_live = Gauge::<i64>::default();
    meetup_runtime::metrics::register("calls_live", "Live calls", calls_live.clone());
    let calls_participants = Gauge::<i64>::default();
    meetup_runtime::metrics::register(
        "calls_participants",
        "Sessions taking part in calls",
        calls_participants.clone(),
    );
    let registry = registry.clone();
    meetup_runtime::metrics::on_scrape(move || {
        let counts = registry.counts();
        calls_live.set(i64::from(counts.active_calls));
        calls_participants.set(i64::from(counts.participants));
    });
}
