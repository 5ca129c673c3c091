//! W3C trace context (`traceparent`) across process boundaries, so that one
//! OpenTelemetry trace follows a browser event through the gateway, the gRPC call,
//! the service and the bus back out to the sockets.
//!
//! Every crossing goes through here: gRPC metadata / HTTP headers (the tower
//! layers below), and a plain `traceparent` string for bus messages and state
//! records, which carry it as a header or a field. With tracing to OpenTelemetry
//! off, spans have no trace context: nothing is written and extraction is a no-op.

use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::{self, HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and field) name of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`, when it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut carrier = OneField(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// The `traceparent` of the current span, for a message that leaves the process.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the remote span named by `traceparent` (a message or
/// record that came in). Nothing happens without one (`None` or ""), or when it
/// does not parse: the span keeps the parent it had.
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| !t.is_empty()) else {
        return;
    };
    let parent = TraceContextPropagator::new().extract(&OneField(Some(traceparent.to_owned())));
    if !parent.span().span_context().is_valid() {
        return;
    }
    // Fails only when the span is disabled (filtered out): nothing to trace then.
    let _ = span.set_parent(parent);
}

/// A carrier of the `traceparent` field alone (`tracestate` is not propagated).
struct OneField(Option<String>);

impl Injector for OneField {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for OneField {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The `traceparent` of HTTP/2 (gRPC) headers.
fn header_traceparent(headers: &HeaderMap) -> Option<&str> {
    headers.get(TRACEPARENT).and_then(|v| v.to_str().ok())
}

/// Client side of gRPC: each call gets a `grpc client` span (child of the span
/// that makes the call) whose context goes out in the `traceparent` header.
#[derive(Debug, Clone)]
pub struct TraceGrpcClient<S> {
    inner: S,
}

impl<S> TraceGrpcClient<S> {
    pub fn new(inner: S) -> Self {
        TraceGrpcClient { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for TraceGrpcClient<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc client",
            otel.name = %method,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = %method,
        );
        if let Some(value) = traceparent_of(&span).and_then(|v| HeaderValue::from_str(&v).ok()) {
            request
                .headers_mut()
                .insert(HeaderName::from_static(TRACEPARENT), value);
        }
        self.inner.call(request).instrument(span)
    }
}

/// Server side of gRPC: each call runs in a `grpc server` span whose parent is
/// the caller's span named by the `traceparent` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceGrpcServerLayer;

impl<S> tower::Layer<S> for TraceGrpcServerLayer {
    type Service = TraceGrpcServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceGrpcServer { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TraceGrpcServer<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceGrpcServer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc server",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
        );
        set_remote_parent(&span, header_traceparent(request.headers()));
        self.inner.call(request).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_nothing_is_propagated() {
        // No OpenTelemetry layer in unit tests: spans carry no trace context.
        let span = tracing::info_span!("untraced");
        assert_eq!(traceparent_of(&span), None);
        set_remote_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        set_remote_parent(&span, Some("garbage"));
        set_remote_parent(&span, Some(""));
        set_remote_parent(&span, None);
    }

    #[test]
    fn a_traceparent_round_trips_through_the_carrier() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let propagator = TraceContextPropagator::new();
        let cx = propagator.extract(&OneField(Some(traceparent.to_owned())));
        let mut out = OneField(None);
        propagator.inject_context(&cx, &mut out);
        assert_eq!(out.0.as_deref(), Some(traceparent));
        let bad = propagator.extract(&OneField(Some("00-zz-zz-01".to_owned())));
        let mut out = OneField(None);
        propagator.inject_context(&bad, &mut out);
        assert_eq!(out.0, None);
    }
}
