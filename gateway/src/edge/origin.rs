//! Which web pages may open a socket: the `Origin` check on every Socket.IO
//! request (the Engine.IO handshake, long-polling and the websocket upgrade).
//!
//! CORS only keeps a foreign page from reading polling responses; a WebSocket
//! is not covered by CORS at all, so without this check any page a user visits
//! could open a socket to the gateway in the user's browser (cross-site
//! WebSocket hijacking). Browsers always send `Origin` on a websocket upgrade
//! and on cross-origin requests, and a page cannot forge it. Requests without
//! an `Origin` (other services, load generators, native apps) pass: they are
//! not a browser acting for a user.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

/// One entry of `CLIENT_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `*`: any origin (unsafe: any page may open sockets for its visitors).
    Any,
    /// `scheme://host[:port]`, compared exactly (the port made explicit).
    Exact(Origin),
    /// `scheme://*.domain[:port]`: any subdomain of `domain`, not `domain` itself.
    Subdomains {
        scheme: String,
        domain: String,
        port: u16,
    },
}

/// A web origin, normalized: lowercase scheme and host, the port explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an origin: scheme://host[:port] (like https://app.example.com), \
     https://*.example.com for its subdomains, or * for any origin"
)]
pub struct OriginError(String);

/// Parses `scheme://host[:port]` with nothing after it (no path, no user).
fn parse_origin(text: &str) -> Option<Origin> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal (`[::1]`) holds colons of its own.
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (rest, default_port),
    };
    if host.is_empty() || host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None;
    }
    Some(Origin {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

impl std::str::FromStr for Allowed {
    type Err = OriginError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "*" {
            return Ok(Allowed::Any);
        }
        let error = || OriginError(text.to_owned());
        let origin = parse_origin(text).ok_or_else(error)?;
        match origin.host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                Ok(Allowed::Subdomains {
                    scheme: origin.scheme,
                    domain: domain.to_owned(),
                    port: origin.port,
                })
            }
            Some(_) => Err(error()),
            None if origin.host.contains('*') => Err(error()),
            None => Ok(Allowed::Exact(origin)),
        }
    }
}

impl Allowed {
    fn admits(&self, origin: &Origin) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Exact(allowed) => allowed == origin,
            Allowed::Subdomains {
                scheme,
                domain,
                port,
            } => {
                *scheme == origin.scheme
                    && *port == origin.port
                    && origin
                        .host
                        .strip_suffix(domain.as_str())
                        .and_then(|sub| sub.strip_suffix('.'))
                        .is_some_and(|sub| !sub.is_empty())
            }
        }
    }
}

/// The origins `CLIENT_URL` allows.
#[derive(Debug, Clone)]
pub struct AllowedOrigins {
    allowed: Vec<Allowed>,
}

impl AllowedOrigins {
    /// Parses each entry of `CLIENT_URL`; the first that is not an origin is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, OriginError> {
        let allowed = entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(AllowedOrigins { allowed })
    }

    /// True when `*` is among them.
    pub fn allows_any(&self) -> bool {
        self.allowed.contains(&Allowed::Any)
    }

    /// Whether a page of `origin` is allowed (the CORS grant).
    pub fn admits_origin(&self, origin: &axum::http::HeaderValue) -> bool {
        match origin.to_str().ok().and_then(parse_origin) {
            Some(origin) => self.allowed.iter().any(|a| a.admits(&origin)),
            None => self.allows_any(),
        }
    }

    /// Whether a request with these headers may go on: no `Origin`, an allowed
    /// one, or the gateway's own (the page it serves at `/demo`: `Origin`
    /// names the host the request was sent to).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        // `null` (sandboxed frames, file: pages) and anything unparsable: refused.
        let Some(parsed) = origin.to_str().ok().and_then(parse_origin) else {
            return self.allows_any();
        };
        self.admits_origin(origin) || same_origin(&parsed, headers)
    }
}

/// True when `origin` is the host (and port) the request was addressed to.
fn same_origin(origin: &Origin, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => match port.parse::<u16>() {
            Ok(port) => (name, port),
            Err(_) => return false,
        },
        _ => (host, if origin.scheme == "https" { 443 } else { 80 }),
    };
    name.eq_ignore_ascii_case(&origin.host) && port == origin.port
}

/// The check as a layer's state: the allowed origins and when each refused
/// origin was last logged.
#[derive(Debug)]
pub struct OriginCheck {
    allowed: AllowedOrigins,
    // A std Mutex is fine: never held across an `.await`.
    logged: Mutex<HashMap<String, Instant>>,
}

/// A refused origin is logged at most once in this long.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// At most this many refused origins are remembered for the log's rate limit.
const LOGGED_ORIGINS: usize = 1024;

impl OriginCheck {
    pub fn new(allowed: AllowedOrigins) -> Self {
        OriginCheck {
            allowed,
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `origin` is due a log line now (once per origin per minute).
    fn log_due(&self, origin: &str) -> bool {
        let now = Instant::now();
        let Ok(mut logged) = self.logged.lock() else {
            return true;
        };
        if logged.len() >= LOGGED_ORIGINS {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            if logged.len() >= LOGGED_ORIGINS {
                // Flooded with distinct origins: stop logging them until some age out.
                return false;
            }
        }
        match logged.get(origin) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                logged.insert(origin.to_owned(), now);
                true
            }
        }
    }
}

/// Refuses Socket.IO requests from pages of origins that are not allowed, with
/// 403 before the request reaches Engine.IO (so no socket is ever made).
pub async fn check_origin(
    State(check): State<std::sync::Arc<OriginCheck>>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/socket.io") || check.allowed.admits(request.headers()) {
        return next.run(request).await;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
        .unwrap_or_default();
    crate::metrics::get().origin_refused.inc();
    if check.log_due(&origin) {
        tracing::warn!(origin, "socket refused: origin not in CLIENT_URL");
    }
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "code": "origin-not-allowed", "message": "this page's origin may not connect (CLIENT_URL)" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn admits(allowed: &[&str], origin: &str) -> bool {
        AllowedOrigins::parse(allowed)
            .unwrap()
            .admits(&headers(Some(origin), "gateway.internal:3001"))
    }

    #[test]
    fn exact_origins_match_on_scheme_host_and_port() {
        let allowed = ["http://localhost:3000"];
        assert!(admits(&allowed, "http://localhost:3000"));
        assert!(admits(&allowed, "HTTP://LocalHost:3000"));
        for refused in [
            "http://evil.example",
            "http://localhost:3000.evil.example",
            "http://localhost:30001",
            "http://localhost",
            "https://localhost:3000",
            "null",
            "",
            "http://localhost:3000/path",
        ] {
            assert!(!admits(&allowed, refused), "{refused}");
        }
        assert!(admits(
            &["https://app.example.com"],
            "https://app.example.com:443"
        ));
        assert!(admits(
            &["http://a.example", "http://b.example:8080"],
            "http://b.example:8080"
        ));
    }

    #[test]
    fn a_subdomain_pattern_matches_subdomains_only() {
        let allowed = ["https://*.example.com"];
        assert!(admits(&allowed, "https://a.example.com"));
        assert!(admits(&allowed, "https://a.b.example.com"));
        for refused in [
            "https://example.com",
            "https://example.com.evil.net",
            "https://evilexample.com",
            "http://a.example.com",
            "https://a.example.com:8443",
        ] {
            assert!(!admits(&allowed, refused), "{refused}");
        }
    }

    #[test]
    fn any_origin_only_when_asked_and_no_origin_always_passes() {
        assert!(admits(&["*"], "http://evil.example"));
        assert!(admits(&["*"], "null"));
        let allowed = AllowedOrigins::parse(&["http://localhost:3000"]).unwrap();
        assert!(allowed.admits(&headers(None, "gateway.internal:3001")));
    }

    #[test]
    fn the_gateway_s_own_origin_passes() {
        let allowed = AllowedOrigins::parse(&["http://localhost:3000"]).unwrap();
        assert!(allowed.admits(&headers(Some("http://127.0.0.1:3001"), "127.0.0.1:3001")));
        assert!(allowed.admits(&headers(Some("https://meet.example"), "meet.example")));
        assert!(allowed.admits(&headers(Some("http://[::1]:3001"), "[::1]:3001")));
        assert!(!allowed.admits(&headers(Some("http://127.0.0.1:3002"), "127.0.0.1:3001")));
        assert!(!allowed.admits(&headers(Some("http://evil.example"), "127.0.0.1:3001")));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "localhost:3000",
            "ftp://x.example",
            "http://",
            "http://x.example/app",
            "http://*.",
            "http://a.*.example",
            "http://x.example:port",
        ] {
            assert!(AllowedOrigins::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_origin_is_logged_once_a_minute() {
        let check = OriginCheck::new(AllowedOrigins::parse(&["http://a.example"]).unwrap());
        assert!(check.log_due("http://evil.example"));
        assert!(!check.log_due("http://evil.example"));
        assert!(check.log_due("http://other.example"));
    }
}
