//! Serves one gRPC service together with `grpc.health.v1` and server reflection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// Runs `service` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight and returns.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    S: tower::Service<Request<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(S::NAME, ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(meetup_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Server::builder()
        // Small responses must not wait for Nagle (40 ms with delayed ACKs).
        .tcp_nodelay(true)
        .layer(crate::metrics::GrpcMetricsLayer)
        .layer(crate::tracing_context::TraceGrpcServerLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Server side of `INTERNAL_API_TOKEN`: when a token is configured, every call
/// must carry `authorization: Bearer <token>`, else it fails UNAUTHENTICATED.
#[derive(Clone, Debug, Default)]
pub struct RequireBearer {
    expected: Option<std::sync::Arc<str>>,
}

impl RequireBearer {
    pub fn new(token: Option<String>) -> Self {
        RequireBearer {
            expected: token.filter(|t| !t.is_empty()).map(Into::into),
        }
    }
}

impl tonic::service::Interceptor for RequireBearer {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(tonic::Status::unauthenticated("invalid bearer token")),
            None => Err(tonic::Status::unauthenticated("missing bearer token")),
        }
    }
}

/// Client side of `INTERNAL_API_TOKEN`: adds the bearer token to every call.
#[derive(Clone, Debug, Default)]
pub struct AttachBearer {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl AttachBearer {
    /// Fails when the token cannot be sent as a header value.
    pub fn new(token: Option<String>) -> anyhow::Result<Self> {
        let header = match token.filter(|t| !t.is_empty()) {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| anyhow::anyhow!("INTERNAL_API_TOKEN must be printable ASCII"))?,
            ),
            None => None,
        };
        Ok(AttachBearer { header })
    }
}

impl tonic::service::Interceptor for AttachBearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The W3C trace context a change made by this request should carry: the
/// server span handling it (a child of the caller's), else what the request
/// carries (`traceparent` metadata), else "".
pub fn traceparent<T>(request: &tonic::Request<T>) -> String {
    crate::tracing_context::current_traceparent().unwrap_or_else(|| {
        request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    })
}

/// Says loudly when a gRPC API is open to the network without a token: the
/// presence and call APIs can end calls and unregister users, so anyone who can
/// reach a non-loopback address could do that. Returns true when it warned.
pub fn warn_if_exposed(service: &str, addr: SocketAddr, token: Option<&str>) -> bool {
    let exposed = !addr.ip().is_loopback() && token.is_none_or(str::is_empty);
    if exposed {
        tracing::warn!(
            service,
            %addr,
            "gRPC API listens on a non-loopback address without INTERNAL_API_TOKEN: anyone who reaches it can change presence and calls"
        );
    }
    exposed
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn only_open_non_loopback_apis_are_warned_about() {
        let any: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:50051".parse().expect("addr");
        let local6: SocketAddr = "[::1]:50051".parse().expect("addr");
        assert!(warn_if_exposed("presence", any, None));
        assert!(warn_if_exposed("presence", any, Some("")));
        assert!(!warn_if_exposed("presence", any, Some("t")));
        assert!(!warn_if_exposed("presence", local, None));
        assert!(!warn_if_exposed("presence", local6, None));
    }

    #[test]
    fn bearer_tokens_are_required_only_when_configured() {
        let mut open = RequireBearer::new(None);
        assert!(open.call(tonic::Request::new(())).is_ok());

        let mut guarded = RequireBearer::new(Some("s3cret".into()));
        let missing = guarded.call(tonic::Request::new(())).expect_err("no token");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);

        let mut wrong = AttachBearer::new(Some("nope".into())).expect("ascii");
        let request = wrong.call(tonic::Request::new(())).expect("attached");
        assert!(guarded.call(request).is_err());

        let mut right = AttachBearer::new(Some("s3cret".into())).expect("ascii");
        let request = right.call(tonic::Request::new(())).expect("attached");
        assert!(guarded.call(request).is_ok());
    }
}
