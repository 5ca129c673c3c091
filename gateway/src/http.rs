//! Plain HTTP: the status counters of the original (`GET /`), liveness and
//! readiness probes, and CORS for browsers on the allowed origins.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::gateway::Gateway;

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gw)
}

/// Counts are cluster-wide: they come from the mirror of the services' state.
async fn status(State(gw): State<Gateway>) -> Json<serde_json::Value> {
    let (online_users, active_calls) = gw.replica().counts();
    Json(json!({
        "message": "MeetUp signaling server is running",
        "onlineUsers": online_users,
        "activeCalls": active_calls,
    }))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(gw): State<Gateway>) -> impl IntoResponse {
    let (presence_up, calls_up) = gw.backends_up();
    let reason = if !gw.bus().is_connected() {
        Some("message bus disconnected")
    } else if !presence_up {
        Some("presence service unreachable")
    } else if !calls_up {
        Some("call service unreachable")
    } else if !gw.replica().is_synced() {
        Some("presence or call service not reachable yet")
    } else {
        None
    };
    match reason {
        None => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not-ready", "reason": reason })),
        ),
    }
}

/// CORS grant for the configured origins only, with credentials, like the original.
pub fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
}
