//! The gateway's spans in a distributed trace (exported only with
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): one per browser event, one per bus message
//! handled (a child of the service span that caused it, via its `traceparent`),
//! and one per emit to sockets. The chain of one `start-call` across two gateways:
//! `socket start-call` -> `grpc client` -> `grpc server` (calls service) ->
//! `bus meetup.v1.events.calls` (each gateway) -> `emit incoming-call`.

use meetup_platform::BusMessage;
use meetup_platform::tracing_context::set_remote_parent;

/// The span of one event from a browser: its handling, up to its answer.
pub fn socket_event(event: &str, session_id: &str) -> tracing::Span {
    tracing::info_span!(
        "socket event",
        otel.name = %format!("socket {event}"),
        otel.kind = "server",
        event,
        session_id,
    )
}

/// The span of one bus message this gateway handles, continuing the trace of
/// the change it carries.
pub fn bus_message(message: &BusMessage, gateway_id: &str) -> tracing::Span {
    change(&message.subject, message.traceparent.as_deref(), gateway_id)
}

/// The span of one change this gateway takes in from `source` (a bus subject,
/// or a watched state record), as a child of the span that made the change when
/// `traceparent` names it ("" or `None`: a trace of its own).
pub fn change(source: &str, traceparent: Option<&str>, gateway_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "bus message",
        otel.name = %format!("bus {source}"),
        otel.kind = "consumer",
        subject = source,
        gateway_id,
    );
    set_remote_parent(&span, traceparent);
    span
}

/// The span of one emit to local sockets.
pub fn emit(event: &str) -> tracing::Span {
    tracing::info_span!("emit", otel.name = %format!("emit {event}"), event)
}
