//! The history service: one record per call (who started it, who was invited or
//! took part, and what became of each), kept in PostgreSQL or SQLite, fed by
//! the call snapshots of a durable JetStream consumer, served over gRPC.
//!
//! Where to look: `record` (the domain types), `store` (SQL, one code path for
//! both databases), `source` (JetStream ingest), `service` (the gRPC API and its
//! wire conversions), `error` (the one mapping to gRPC statuses).

#![forbid(unsafe_code)]

pub mod error;
pub mod metrics;
pub mod record;
pub mod service;
pub mod source;
pub mod store;

use std::future::Future;
use std::time::Duration;

use meetup_proto::history::v1::history_service_server::HistoryServiceServer;

pub use error::HistoryError;
pub use record::{
    Applied, AttendeeSnapshot, CallPage, CallSnapshot, Forgotten, Millis, MissedCalls, Outcome,
    UserRef,
};
pub use service::HistoryGrpc;
pub use store::HistoryStore;

/// The history gRPC API; with `api_token`, every API call must carry it as a
/// bearer token. Served with health and reflection by `meetup-history`.
pub type HistoryApi = tonic::service::interceptor::InterceptedService<
    HistoryServiceServer<HistoryGrpc>,
    meetup_platform::grpc::RequireBearer,
>;

pub fn api(store: HistoryStore, api_token: Option<String>) -> HistoryApi {
    HistoryServiceServer::with_interceptor(
        HistoryGrpc::new(store),
        meetup_platform::grpc::RequireBearer::new(api_token),
    )
}

/// Removes the records older than `retention` now and then every `every`,
/// until `shutdown`. Failures are logged and retried at the next round.
pub async fn prune_periodically(
    store: HistoryStore,
    retention: Duration,
    every: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let prune = async {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let cutoff = service::now_ms() - retention.as_millis() as i64;
            match store.prune(cutoff).await {
                Ok(0) => {}
                Ok(removed) => {
                    metrics::get().pruned(removed);
                    tracing::info!(removed, "old call records pruned");
                }
                Err(error) => tracing::warn!(%error, "pruning failed"),
            }
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = prune => {}
    }
}
