//! Structured logging for every binary: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches from human-readable lines to one JSON object a line.
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans also go to that OpenTelemetry
//! collector over OTLP/gRPC (the standard `OTEL_*` variables tune the exporter);
//! without it, nothing is exported and nothing is connected to.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "pretty" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("LOG_FORMAT must be text or json, not {other:?}")),
        }
    }
}

/// Libraries that log whole messages below `info` (Socket.IO packets with
/// handshake tokens and SDP, bus payloads, HTTP/2 frames): held at `info`
/// whatever `RUST_LOG` says, so that logs never carry secrets or SDP.
const CHATTY: [&str; 6] = [
    "socketioxide",
    "engineioxide",
    "async_nats",
    "h2",
    "hyper",
    "tungstenite",
];

/// The environment variable that turns trace export on.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// What has to happen at exit: the spans still buffered go out.
#[derive(Debug, Default)]
#[must_use = "call shutdown() at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter. Blocks while it does, so
    /// it runs on a blocking thread (the exporter itself needs the runtime).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "trace exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber (logs go to stdout) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the trace exporter, with
/// `service_name` as the OpenTelemetry `service.name`. Call it inside the Tokio
/// runtime: the gRPC exporter runs on it.
pub fn init(service_name: &str, format: LogFormat) -> Telemetry {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in CHATTY {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Per-layer filters: RUST_LOG decides what is logged, not what is traced.
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(false)
            .boxed(),
    }
    .with_filter(filter);
    let (traces, provider, export_error) = match otlp_endpoint() {
        Some(endpoint) => match tracer_provider(service_name, &endpoint) {
            Ok(provider) => {
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer(service_name.to_owned()))
                    // Our own spans only: the libraries' are noise in a trace.
                    .with_filter(filter_fn(|meta| meta.target().starts_with("meetup")))
                    .with_filter(LevelFilter::INFO);
                (Some(layer), Some(provider), None)
            }
            Err(error) => (None, None, Some(error)),
        },
        None => (None, None, None),
    };
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = Registry::default().with(logs).with(traces).try_init();
    if let Some(error) = export_error {
        tracing::error!(%error, "traces are not exported: cannot set up the OTLP exporter");
    } else if provider.is_some() {
        tracing::info!(service = service_name, "exporting traces over OTLP/gRPC");
    }
    Telemetry { provider }
}

fn otlp_endpoint() -> Option<String> {
    std::env::var(OTLP_ENDPOINT)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

fn tracer_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}
