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
pub use registry::CallRegistry;
pub use service::CallGrpc;

/// Serves the call gRPC API (with health and reflection) until `shutdown`.
pub async fn run(
    listener: TcpListener,
    registry: CallRegistry,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = CallServiceServer::new(CallGrpc::new(registry));
    meetup_runtime::grpc::serve(listener, service, shutdown).await
}
