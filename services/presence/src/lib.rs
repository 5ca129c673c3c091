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

/// Serves the presence gRPC API (with health and reflection) until `shutdown`.
pub async fn run(
    listener: TcpListener,
    store: PresenceStore,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = PresenceServiceServer::new(PresenceGrpc::new(store));
    meetup_runtime::grpc::serve(listener, service, shutdown).await
}
