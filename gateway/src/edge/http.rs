//! Plain HTTP: the status counters of the original (`GET /`), liveness and
//! readiness probes, and CORS for browsers on the allowed origins.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use std::net::IpAddr;

use crate::edge::forwarded::TrustedProxies;
use crate::edge::origin::AllowedOrigins;
use crate::state::Gateway;

pub fn router(gw: Gateway) -> Router {
    let html = || asset("text/html; charset=utf-8", DEMO_HTML.as_bytes());
    Router::new()
        .route("/", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(meetup_platform::metrics::metrics_response))
        .route("/ice-servers", get(ice_servers))
        .route("/demo", get(html))
        .route("/demo/", get(html))
        .route(
            "/demo/demo.js",
            get(|| asset("text/javascript; charset=utf-8", DEMO_JS.as_bytes())),
        )
        .route(
            "/demo/demo.css",
            get(|| asset("text/css; charset=utf-8", DEMO_CSS.as_bytes())),
        )
        .route(
            "/demo/meetup.js",
            get(|| asset("text/javascript; charset=utf-8", CLIENT_JS.as_bytes())),
        )
        .route(
            "/demo/socket.io.min.js",
            get(|| asset("text/javascript; charset=utf-8", SOCKET_IO_JS)),
        )
        .with_state(gw)
}

#[derive(Debug, serde::Deserialize)]
struct IceQuery {
    #[serde(rename = "userId")]
    user_id: Option<String>,
    token: Option<String>,
}

/// The STUN and TURN servers browsers should use, in `RTCConfiguration` form,
/// with TURN credentials (the same list each socket gets in the `ice-servers`
/// event when it registers). With authentication on, the credentials are for the
/// token's user only (`Authorization: Bearer` or `?token=`); else for `?userId=`.
async fn ice_servers(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<IceQuery>,
) -> Response {
    let user_id = match gw.auth() {
        Some(auth) => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or(query.token);
            match token.map(|t| auth.verify(&t)) {
                Some(Ok(claims)) => claims.sub,
                Some(Err(reason)) => return unauthorized(&reason),
                None => return unauthorized("missing token"),
            }
        }
        None => query
            .user_id
            .filter(|id| !id.is_empty() && id.len() <= crate::protocol::inbound::MAX_FIELD_BYTES)
            .unwrap_or_else(|| "anonymous".to_owned()),
    };
    Json(gw.ice().for_user(&user_id)).into_response()
}

fn unauthorized(reason: &str) -> Response {
    let message = format!("authentication failed: {reason}");
    let body = json!({ "code": "unauthorized", "message": message });
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

// The demo page, embedded so that the binary serves it wherever it runs.
const DEMO_HTML: &str = include_str!("../../demo/index.html");
const DEMO_JS: &str = include_str!("../../demo/demo.js");
const DEMO_CSS: &str = include_str!("../../demo/demo.css");
/// The typed client module (`clients/js`), which the demo page is built on.
const CLIENT_JS: &str = include_str!("../../../clients/js/meetup.js");
#[cfg(demo_bundle)]
const SOCKET_IO_JS: &[u8] = include_bytes!(env!("DEMO_SOCKET_IO_JS"));
#[cfg(not(demo_bundle))]
const SOCKET_IO_JS: &[u8] =
    b"console.error('socket.io-client was not bundled: run npm ci in gateway/demo and rebuild');";

async fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// Counts are cluster-wide: they come from the mirror of the services' state.
async fn status(State(gw): State<Gateway>) -> Json<serde_json::Value> {
    let (online_users, active_calls) = gw.mirror().counts();
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
    } else if !gw.mirror().is_synced() {
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

/// CORS grant for the allowed origins only, with credentials, like the original.
pub fn cors(origins: AllowedOrigins) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.admits_origin(origin)
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
}

/// Limits new Socket.IO connections per client IP; requests of established
/// sessions (`sid=` in the query) pass.
#[derive(Debug)]
pub struct ConnectionLimit {
    pub limiter: crate::edge::limits::IpLimiter,
    pub trust_forwarded_for: bool,
    pub trusted_proxies: TrustedProxies,
}

pub async fn limit_connections(
    State(limit): State<std::sync::Arc<ConnectionLimit>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_new_connection = request.uri().path().starts_with("/socket.io")
        && !request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("sid=")));
    if is_new_connection
        && let Some(ip) = client_ip(&request, &limit)
        && !limit.limiter.allow(ip)
    {
        tracing::debug!(%ip, "connection rate limit");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "code": "rate-limited", "message": "too many new connections from this address" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// The address a connection is counted against: the TCP peer, or behind trusted
/// balancers the client they name (see `forwarded`).
fn client_ip(request: &axum::extract::Request, limit: &ConnectionLimit) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())?;
    if !limit.trust_forwarded_for {
        return Some(peer);
    }
    let forwarded_for = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    Some(limit.trusted_proxies.client_addr(peer, forwarded_for))
}
