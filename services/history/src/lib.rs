//! The history service: one record per call (who started it, who was invited or
//! took part, and what became of each), kept in PostgreSQL or SQLite, fed by
//! the call snapshots of a durable JetStream consumer, served over gRPC.
//!
//! Where to look: `record` (the domain types), `wire` (the one conversion
//! between them and the gRPC API's records), `error` (the one mapping to gRPC
//! statuses); with the `store` feature (on by default): `store` (SQL, one code
//! path for both databases), `source` (JetStream ingest), `service` (the gRPC
//! API), `metrics`.
//!
//! Without `store` the crate is the model alone, with no database code: what
//! the gateway reads the API's records into (`default-features = false`).

#![forbid(unsafe_code)]

pub mod error;
#[cfg(feature = "store")]
pub mod metrics;
pub mod record;
#[cfg(feature = "store")]
pub mod service;
#[cfg(feature = "store")]
pub mod source;
#[cfg(feature = "store")]
pub mod store;
pub mod wire;

#[cfg(feature = "store")]
use std::future::Future;
#[cfg(feature = "store")]
use std::time::Duration;

#[cfg(feature = "store")]
use meetup_proto::history::v1::history_service_server::HistoryServiceServer;

pub use error::HistoryError;
pub use record::{
    Applied, AttendeeSnapshot, CallPage, CallSnapshot, Forgotten, Millis, MissedCalls, Outcome,
    UserRef, now_ms,
};
#[cfg(feature = "store")]
pub use service::HistoryGrpc;
#[cfg(feature = "store")]
pub use store::HistoryStore;

#[cfg(feature = "store")]
/// The history gRPC API; with `api_token`, every API call must carry it as a
/// bearer token. Served with health and reflection by `meetup-history`.
pub type HistoryApi = tonic::service::interceptor::InterceptedService<
    HistoryServiceServer<HistoryGrpc>,
    meetup_platform::grpc::RequireBearer,
>;

#[cfg(feature = "store")]
pub fn api(store: HistoryStore, api_token: Option<String>) -> HistoryApi {
    HistoryServiceServer::with_interceptor(
        HistoryGrpc::new(store),
        meetup_platform::grpc::RequireBearer::new(api_token),
    )
}

#[cfg(feature = "store")]
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
            let cutoff = now_ms() - retention.as_millis() as i64;
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
