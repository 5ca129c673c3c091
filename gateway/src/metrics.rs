//! The gateway's Prometheus metrics, in the process registry (see
//! `meetup_platform::metrics`): connections, users, calls, events in and out by
//! name and outcome, relay latency, refusals by reason, gRPC and bus errors.

use std::sync::LazyLock;
use std::time::Duration;

use meetup_platform::metrics::{Labels, latency_histogram, register};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

pub struct GatewayMetrics {
    pub connections: Gauge,
    pub registered_sockets: Gauge,
    pub online_users: Gauge,
    pub live_calls: Gauge,
    events_in: Family<Labels, Counter>,
    events_out: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    relay_latency: Histogram,
    grpc_errors: Family<Labels, Counter>,
    bus_errors: Family<Labels, Counter>,
    /// Sessions this gateway turned away (their sockets went without goodbye).
    pub sessions_away: Counter,
    sessions_resumed: Family<Labels, Counter>,
    /// Relays kept for away sessions.
    pub relays_kept: Counter,
    /// Kept relays given to resumed sockets.
    pub relays_replayed: Counter,
    /// Socket.IO requests refused for their page's origin.
    pub origin_refused: Counter,
}

static METRICS: LazyLock<GatewayMetrics> = LazyLock::new(|| {
    let metrics = GatewayMetrics {
        connections: Gauge::default(),
        registered_sockets: Gauge::default(),
        online_users: Gauge::default(),
        live_calls: Gauge::default(),
        events_in: Family::default(),
        events_out: Family::default(),
        rejected: Family::default(),
        relay_latency: latency_histogram(),
        grpc_errors: Family::default(),
        bus_errors: Family::default(),
        sessions_away: Counter::default(),
        sessions_resumed: Family::default(),
        relays_kept: Counter::default(),
        relays_replayed: Counter::default(),
        origin_refused: Counter::default(),
    };
    register(
        "gateway_origin_refused",
        "Socket.IO requests refused because their page's origin is not in CLIENT_URL",
        metrics.origin_refused.clone(),
    );
    register(
        "gateway_sessions_away",
        "Sessions turned away by this gateway (socket gone without goodbye, or drained)",
        metrics.sessions_away.clone(),
    );
    register(
        "gateway_sessions_resumed",
        "Away sessions resumed through this gateway, by whether every relay was recovered",
        metrics.sessions_resumed.clone(),
    );
    register(
        "gateway_relays_kept",
        "Relays kept for away sessions",
        metrics.relays_kept.clone(),
    );
    register(
        "gateway_relays_replayed",
        "Kept relays given to resumed sockets",
        metrics.relays_replayed.clone(),
    );
    register(
        "gateway_connections",
        "Sockets connected to this gateway",
        metrics.connections.clone(),
    );
    register(
        "gateway_registered_sockets",
        "Sockets of this gateway that sent user-joined",
        metrics.registered_sockets.clone(),
    );
    register(
        "gateway_online_users",
        "Users online in the whole cluster",
        metrics.online_users.clone(),
    );
    register(
        "gateway_live_calls",
        "Live calls in the whole cluster",
        metrics.live_calls.clone(),
    );
    register(
        "gateway_events_in",
        "Client events handled, by event and outcome (ok or error code)",
        metrics.events_in.clone(),
    );
    register(
        "gateway_events_out",
        "Events emitted to sockets, by event",
        metrics.events_out.clone(),
    );
    register(
        "gateway_rejected_events",
        "Client events refused, by reason",
        metrics.rejected.clone(),
    );
    register(
        "gateway_relay_latency_seconds",
        "From a relay's arrival to its hand-off to the target socket or the bus",
        metrics.relay_latency.clone(),
    );
    register(
        "gateway_grpc_errors",
        "Failed calls to the services, by action and status code",
        metrics.grpc_errors.clone(),
    );
    register(
        "gateway_bus_errors",
        "Failed bus operations, by operation",
        metrics.bus_errors.clone(),
    );
    metrics
});

pub fn get() -> &'static GatewayMetrics {
    &METRICS
}

impl GatewayMetrics {
    pub fn session_resumed(&self, recovered: bool) {
        let recovered = if recovered { "true" } else { "false" };
        self.sessions_resumed
            .get_or_create(&vec![("recovered", recovered.to_owned())])
            .inc();
    }
}

impl GatewayMetrics {
    /// One handled client event; `outcome` is `ok` or the error code.
    pub fn event_in(&self, event: &'static str, outcome: &'static str) {
        self.events_in
            .get_or_create(&vec![
                ("event", event.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        if outcome != "ok" {
            self.rejected
                .get_or_create(&vec![("reason", outcome.to_owned())])
                .inc();
        }
    }

    pub fn event_out(&self, event: &str, sockets: u64) {
        // Event names are the protocol's own (a fixed set), never client input.
        self.events_out
            .get_or_create(&vec![("event", event.to_owned())])
            .inc_by(sockets);
    }

    pub fn relay_handled(&self, elapsed: Duration) {
        self.relay_latency.observe(elapsed.as_secs_f64());
    }

    pub fn grpc_error(&self, action: &'static str, code: tonic::Code) {
        self.grpc_errors
            .get_or_create(&vec![
                ("action", action.to_owned()),
                ("code", format!("{code:?}")),
            ])
            .inc();
    }

    pub fn bus_error(&self, operation: &'static str) {
        self.bus_errors
            .get_or_create(&vec![("operation", operation.to_owned())])
            .inc();
    }
}
