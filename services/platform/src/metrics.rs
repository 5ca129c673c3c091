//! Prometheus metrics of the process: one registry for everything in it (in the
//! embedded mode the gateway and both services share one `/metrics`), a tower
//! layer that counts gRPC calls by method and status, and a small HTTP server
//! for processes that have no other HTTP port.

use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::codegen::http;

pub type Labels = Vec<(&'static str, String)>;

type Refresh = Box<dyn Fn() + Send + Sync>;

struct Global {
    registry: Mutex<Registry>,
    /// Run before each scrape, to set gauges that mirror state.
    refreshers: Mutex<Vec<Refresh>>,
}

static GLOBAL: LazyLock<Global> = LazyLock::new(|| Global {
    registry: Mutex::new(Registry::with_prefix("meetup")),
    refreshers: Mutex::new(Vec::new()),
});

/// Registers a metric in the process registry.
pub fn register(name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
    GLOBAL
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .register(name, help, metric);
}

/// Runs `refresh` before every scrape (to copy state into gauges).
pub fn on_scrape(refresh: impl Fn() + Send + Sync + 'static) {
    GLOBAL
        .refreshers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(refresh));
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    for refresh in GLOBAL
        .refreshers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        refresh();
    }
    let mut out = String::new();
    let registry = GLOBAL.registry.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(error) = encode(&mut out, &registry) {
        tracing::error!(%error, "metrics encoding failed");
    }
    out
}

/// Latency buckets from 50 µs to about 1.6 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(metrics_response));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The `/metrics` response, for any axum router.
pub async fn metrics_response() -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(),
    )
}

struct RpcMetrics {
    calls: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
}

static RPC: LazyLock<RpcMetrics> = LazyLock::new(|| {
    let metrics = RpcMetrics {
        calls: Family::default(),
        latency: Family::new_with_constructor(latency_histogram),
    };
    register(
        "grpc_server_calls",
        "gRPC calls served, by method and status code",
        metrics.calls.clone(),
    );
    register(
        "grpc_server_latency_seconds",
        "gRPC call latency until the response headers, by method",
        metrics.latency.clone(),
    );
    metrics
});

/// Tower layer counting gRPC calls by method and status code, with latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LazyLock::force(&RPC);
        GrpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Only the known API paths, so that junk requests cannot grow the label set.
        let path = request.uri().path();
        let method = if path.starts_with("/meetup.") || path.starts_with("/grpc.") {
            path.to_owned()
        } else {
            "other".to_owned()
        };
        let start = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // Errors come as trailers-only responses, with the status in the headers.
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport".to_owned(),
            };
            RPC.calls
                .get_or_create(&vec![("method", method.clone()), ("code", code)])
                .inc();
            RPC.latency
                .get_or_create(&vec![("method", method)])
                .observe(start.elapsed().as_secs_f64());
            response
        })
    }
}
