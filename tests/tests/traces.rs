//! Distributed traces: one `start-call` across two gateways is one trace whose
//! spans chain from the browser event on the caller's gateway, through the gRPC
//! call and the call service, over the bus to the callee's gateway and its emit.
//! The spans are received by a small OTLP/gRPC collector of the test's own.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meetup_tests::Cluster;
use meetup_tests::sio::SioClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;

const EVENT: Duration = Duration::from_secs(10);

/// One span as received.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
}

/// The collector: OTLP/gRPC `TraceService/Export`, keeping every span.
#[derive(Clone, Default)]
struct Collector(Arc<Collected>);

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| text(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        attributes: text(&span.attributes),
                    });
                }
            }
        }
        self.0
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(received);
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a free loopback port; returns the endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    }

    /// Waits until `find` succeeds on the spans received so far.
    async fn wait_for<T>(
        &self,
        what: &str,
        mut find: impl FnMut(&[ReceivedSpan]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + EVENT;
        loop {
            let arrived = self.0.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let spans = self.0.spans.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(found) = find(&spans) {
                    return found;
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let spans = self.0.spans.lock().unwrap_or_else(|p| p.into_inner());
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}: {} {:?}", s.service, s.name, s.attributes))
                    .collect();
                panic!("{what}: not received; spans so far:\n{}", names.join("\n"));
            }
        }
    }
}

use meetup_tests::unique_id as id;

async fn user(url: &str, user_id: &str) -> SioClient {
    let client = SioClient::connect(url).await.expect("connects");
    let ack = client
        .emit_ack(
            "user-joined",
            &json!({ "id": user_id, "username": user_id }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    client
}

/// The span named `name` in `service` whose parent is `parent` (same trace).
fn child<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    service: &str,
    name: &str,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.service == service
            && s.name == name
            && s.trace_id == parent.trace_id
            && s.parent_span_id == parent.span_id
    })
}

#[tokio::test]
async fn one_start_call_is_one_trace_from_the_caller_s_event_to_the_callee_s_socket() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        // Export every 50 ms instead of 5 s: the test waits on the spans.
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ];
    let cluster = Cluster::start_with_env(2, &otel, &otel)
        .await
        .expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    let since = b.mark();
    let ack = a
        .emit_ack(
            "start-call",
            &json!({ "id": call_id, "initiator": {}, "participants": [{ "id": b_id }], "isVideo": true }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    b.wait_for("incoming-call", since, EVENT, |p| p["callId"] == call_id)
        .await
        .expect("b is invited");

    let (caller_gw, callee_gw) = (&cluster.gateways[0].id, &cluster.gateways[1].id);
    let method = "/meetup.calls.v1.CallService/StartCall";
    let chain = collector
        .wait_for("the chain of spans of start-call", |spans| {
            let event = spans.iter().find(|s| {
                s.service == "meetup-gateway"
                    && s.name == "socket start-call"
                    && s.parent_span_id.is_empty()
            })?;
            let client = child(spans, event, "meetup-gateway", method)?;
            let server = child(spans, client, "meetup-calls", method)?;
            let bus = spans.iter().find(|s| {
                s.name == "bus meetup_calls"
                    && s.attributes.get("gateway_id") == Some(callee_gw)
                    && s.trace_id == server.trace_id
                    && s.parent_span_id == server.span_id
            })?;
            let emit = child(spans, bus, "meetup-gateway", "emit incoming-call")?;
            Some([event, client, server, bus, emit].map(Clone::clone))
        })
        .await;
    let [event, client, server, bus, emit] = chain;
    assert_eq!(
        event.attributes.get("event").map(String::as_str),
        Some("start-call")
    );
    assert_eq!(
        client.attributes.get("rpc.method").map(String::as_str),
        Some(method)
    );
    assert_eq!(server.service, "meetup-calls");
    assert_ne!(bus.attributes.get("gateway_id"), Some(caller_gw));
    assert_eq!(
        emit.attributes.get("event").map(String::as_str),
        Some("incoming-call")
    );
    // The caller's gateway handled the same event in the same trace.
    collector
        .wait_for("the caller's gateway's bus span", |spans| {
            spans
                .iter()
                .find(|s| {
                    s.name == "bus meetup_calls"
                        && s.attributes.get("gateway_id") == Some(caller_gw)
                        && s.trace_id == event.trace_id
                })
                .map(|_| ())
        })
        .await;
}
