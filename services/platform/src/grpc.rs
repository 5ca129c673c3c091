//! Serves one gRPC service together with `grpc.health.v1` and server reflection,
//! and lets this process call that same service without a socket ([`in_process`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tower::ServiceExt;
use tower::layer::util::{Identity, Stack};
use tower::util::BoxCloneSyncService;

use crate::metrics::GrpcMetricsLayer;
use crate::tracing_context::TraceGrpcServerLayer;

pub mod retry;

/// The layers every call to a gRPC API of this process goes through, whether it
/// came over the network ([`serve`]) or from this process ([`in_process`]):
/// metrics by method and status, then the caller's trace context.
fn server_layers()
-> tower::ServiceBuilder<Stack<TraceGrpcServerLayer, Stack<GrpcMetricsLayer, Identity>>> {
    tower::ServiceBuilder::new()
        .layer(GrpcMetricsLayer)
        .layer(TraceGrpcServerLayer)
}

/// Runs `service` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight and returns. Health says SERVING throughout.
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
    let (_always, serving) = watch::channel(true);
    serve_while(listener, service, serving, shutdown).await
}

/// [`serve`], with the health of `service` (and of the whole server) SERVING
/// while `serving` is true and NOT_SERVING otherwise: a process that waits for
/// its state store, or lost it, tells its balancers and probes so.
pub async fn serve_while<S>(
    listener: TcpListener,
    service: S,
    mut serving: watch::Receiver<bool>,
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
    let status = |up: bool| {
        if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let up = *serving.borrow_and_update();
    health.set_service_status(S::NAME, status(up)).await;
    health.set_service_status("", status(up)).await;
    // Follows `serving` until its sender is gone (the server's future is
    // dropped with the process, so the task ends with it).
    let follower = tokio::spawn(async move {
        while serving.changed().await.is_ok() {
            let up = *serving.borrow_and_update();
            health.set_service_status(S::NAME, status(up)).await;
            health.set_service_status("", status(up)).await;
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(meetup_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let served = Server::builder()
        // Small responses must not wait for Nagle (40 ms with delayed ACKs).
        .tcp_nodelay(true)
        .layer(server_layers())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    follower.abort();
    served?;
    Ok(())
}

/// A gRPC API that is served before it exists: it answers UNAVAILABLE
/// ("starting") until [`Gate::open`] gives it the real service, so a process
/// listens (and answers its health checks) while it waits for its state store.
pub struct Gate<S> {
    inner: Arc<OnceLock<S>>,
}

impl<S> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            inner: self.inner.clone(),
        }
    }
}

impl<S> Default for Gate<S> {
    fn default() -> Self {
        Gate {
            inner: Arc::new(OnceLock::new()),
        }
    }
}

impl<S> Gate<S> {
    /// From now on every call goes to `service`. A second open is ignored.
    pub fn open(&self, service: S) {
        let _ = self.inner.set(service);
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<Body>> for Gate<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.inner.get() {
            Some(service) => {
                let call = service.clone().oneshot(request);
                Box::pin(async move { call.await.map(|response| response.map(Body::new)) })
            }
            None => {
                let status = tonic::Status::unavailable("starting: waiting for the state store");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// A gRPC API of this process as a client transport: a tonic client over it
/// calls the service directly (no socket, no HTTP/2), through the same layers
/// as over the network, so metrics, traces, interceptors and errors are the
/// same. Like a channel's `Endpoint::timeout`, each call has `deadline` until
/// its response, then fails `Cancelled` "Timeout expired".
pub type InProcess = BoxCloneSyncService<Request<Body>, Response<Body>, tonic::codegen::StdError>;

/// `service` (the one [`serve`] gets) as an [`InProcess`] transport.
pub fn in_process<S, B>(service: S, deadline: Duration) -> InProcess
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let service = server_layers()
        .service(service)
        .map_future(move |response| async move {
            // A handler that panics fails its call, as over the network (where
            // the server's task dies, not the caller's).
            let response = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(response));
            match tokio::time::timeout(deadline, response).await {
                Ok(Ok(Ok(response))) => Ok(response.map(Body::new)),
                Ok(Ok(Err(never))) => match never {},
                Ok(Err(_panic)) => {
                    tracing::error!("a gRPC handler panicked; the call fails");
                    Err(tonic::Status::internal("the service failed on this request").into())
                }
                Err(_) => Err(tonic::TimeoutExpired(()).into()),
            }
        });
    BoxCloneSyncService::new(service)
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

    #[tokio::test]
    async fn an_in_process_call_past_its_deadline_fails_as_over_a_channel() {
        let slow = tower::service_fn(|_: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let error = in_process(slow, Duration::from_millis(10))
            .oneshot(Request::new(Body::empty()))
            .await
            .expect_err("past the deadline");
        // What a tonic client makes of it, as of a channel's `Endpoint::timeout`.
        let status = tonic::Status::from_error(error);
        assert_eq!(status.code(), tonic::Code::Cancelled);
        assert_eq!(status.message(), "Timeout expired");
    }

    #[tokio::test]
    async fn an_in_process_handler_that_panics_fails_its_call_not_the_caller() {
        let broken = tower::service_fn(|_: Request<Body>| async {
            if std::hint::black_box(true) {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let error = in_process(broken, Duration::from_secs(5))
            .oneshot(Request::new(Body::empty()))
            .await
            .expect_err("the handler panicked");
        let status = tonic::Status::from_error(error);
        assert_eq!(status.code(), tonic::Code::Internal);
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
