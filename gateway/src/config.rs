//! The gateway's configuration: read once at start from flags and environment
//! variables, then checked as a whole so that a set-up that cannot work fails at
//! once with one line saying why.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use meetup_platform::subjects;
use meetup_platform::telemetry::LogFormat;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "meetup-gateway",
    about = "MeetUp Socket.IO edge gateway. With nothing configured it runs the whole system in one process.",
    version
)]
pub struct Config {
    /// Interface of the HTTP + Socket.IO server.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port of the HTTP + Socket.IO server (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,
    /// Web origins whose pages may open sockets (and get CORS grants),
    /// comma-separated: `scheme://host[:port]`, `https://*.example.com` for
    /// subdomains, `*` for any (unsafe).
    #[arg(
        long,
        env = "CLIENT_URL",
        default_value = "http://localhost:3000",
        value_delimiter = ','
    )]
    pub client_urls: Vec<String>,
    /// gRPC address(es) of the presence service replicas, comma-separated (a name
    /// with several addresses counts as several); unset runs one in-process.
    #[arg(long, env = "PRESENCE_URL")]
    pub presence_url: Option<String>,
    /// gRPC address(es) of the call service replicas; unset runs one in-process.
    #[arg(long, env = "CALLS_URL")]
    pub calls_url: Option<String>,
    /// gRPC address of the history service; unset keeps the call history in-process.
    #[arg(long, env = "HISTORY_URL")]
    pub history_url: Option<String>,
    /// In-process call history: `sqlite://path`, `sqlite::memory:` or `postgres://...`.
    #[arg(
        long,
        env = "HISTORY_DATABASE_URL",
        default_value = "sqlite://data/history.db"
    )]
    pub history_database_url: String,
    /// NATS servers, comma-separated; unset keeps the state and the bus in this
    /// process (one gateway only).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Copies of each JetStream bucket this gateway creates when missing
    /// (1 on one NATS node, 3 on a three-node cluster).
    #[arg(long, env = "JETSTREAM_REPLICAS", default_value_t = 1)]
    pub jetstream_replicas: usize,
    /// This gateway's id, unique in the cluster (letters, digits, - and _).
    #[arg(long, env = "GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Where the in-process presence service serves its gRPC API. Loopback by
    /// default: the API can end calls and unregister users, so it is opened to
    /// the network only when asked for (and then it wants INTERNAL_API_TOKEN).
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "127.0.0.1:50051")]
    pub presence_listen: SocketAddr,
    /// Where the in-process call service serves its gRPC API (loopback by default,
    /// as above).
    #[arg(long, env = "CALLS_LISTEN", default_value = "127.0.0.1:50052")]
    pub calls_listen: SocketAddr,
    /// Largest client event payload accepted, in bytes of JSON.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 65_536)]
    pub max_payload_bytes: usize,
    /// Largest Engine.IO message; a larger one closes the connection.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1_048_576)]
    pub max_message_bytes: u64,
    /// Events a socket may have waiting to be handled; more are refused.
    #[arg(long, env = "SOCKET_QUEUE", default_value_t = 1024)]
    pub socket_queue: usize,
    /// Packets buffered per socket on their way out.
    #[arg(long, env = "SOCKET_BUFFER", default_value_t = 8192)]
    pub socket_buffer: usize,
    /// Bytes a websocket reads from the network at a time. Signaling frames are
    /// small (an ICE candidate is ~300 B); a larger one (an SDP offer) takes a
    /// few reads. Kept by every connection, so small by default.
    #[arg(long, env = "WS_READ_BUFFER_BYTES", default_value_t = 512)]
    pub ws_read_buffer_bytes: usize,
    /// Events a socket may send per second on average.
    #[arg(long, env = "EVENTS_PER_SEC", default_value_t = 100)]
    pub events_per_sec: u32,
    /// Events a socket may send in a burst.
    #[arg(long, env = "EVENTS_BURST", default_value_t = 400)]
    pub events_burst: u32,
    /// Refused events within 10 s after which the socket is disconnected.
    #[arg(long, env = "ABUSE_DISCONNECT_AFTER", default_value_t = 200)]
    pub abuse_disconnect_after: u32,
    /// New Socket.IO connections per second per client IP (twice that in a burst).
    #[arg(long, env = "CONNECTIONS_PER_IP_PER_SEC", default_value_t = 20)]
    pub connections_per_ip_per_sec: u32,
    /// Take the client IP from `X-Forwarded-For` (behind a trusted load balancer).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// The balancers' networks (CIDRs, comma-separated): with TRUST_FORWARDED_FOR,
    /// the client is the rightmost `X-Forwarded-For` address outside them. Unset:
    /// only the direct peer is trusted.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::edge::forwarded::Cidr>,
    /// In-process presence service: most sockets one user id may hold.
    #[arg(long, env = "MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub max_sockets_per_user: usize,
    /// In-process call service: most sessions in one call.
    #[arg(long, env = "MAX_CALL_PARTICIPANTS", default_value_t = 16)]
    pub max_call_participants: usize,
    /// In-process call service: most live calls one user may have started.
    #[arg(long, env = "MAX_CALLS_PER_USER", default_value_t = 5)]
    pub max_calls_per_user: usize,
    /// In-process call service: how long an invitation rings before it is
    /// missed, in milliseconds.
    #[arg(long, env = "RING_TIMEOUT_MS", default_value_t = 45_000)]
    pub ring_timeout_ms: u64,
    /// In-process call service: how many chat messages a call keeps.
    #[arg(long, env = "CALL_CHAT_HISTORY", default_value_t = 50)]
    pub call_chat_history: usize,
    /// HS256 secret: when set, browsers must present a JWT signed with it.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// RS256 or ES256 public key (PEM text or a file path): when set, browsers
    /// must present a JWT signed with the matching private key.
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY", hide_env_values = true)]
    pub auth_jwt_public_key: Option<String>,
    /// Required `iss` of tokens, if any.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// Required `aud` of tokens, if any.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
    /// Clock skew forgiven when checking a token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "AUTH_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub auth_jwt_leeway_secs: u64,
    /// Token claim that gives the username (else the client's own).
    #[arg(long, env = "AUTH_USERNAME_CLAIM", default_value = "name")]
    pub auth_username_claim: String,
    /// Bearer token for the services' gRPC APIs (and required by the in-process ones).
    #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
    pub internal_api_token: Option<String>,
    /// Deadline of each call to the presence and call services, in milliseconds.
    #[arg(long, env = "RPC_TIMEOUT_MS", default_value_t = 5000)]
    pub rpc_timeout_ms: u64,
    /// How often this gateway renews its lease and probes the services, in ms.
    #[arg(long, env = "GATEWAY_HEARTBEAT_MS", default_value_t = 1000)]
    pub gateway_heartbeat_ms: u64,
    /// Lifetime of a gateway's lease, in ms: a gateway that has not renewed it for
    /// this long is dead to the cluster and its users are removed. Must be more
    /// than twice the heartbeat.
    #[arg(long, env = "GATEWAY_TIMEOUT_MS", default_value_t = 3000)]
    pub gateway_timeout_ms: u64,
    /// How long a registered socket that went away without saying goodbye
    /// keeps its presence and calls (its session is away) for a client to
    /// resume it, in ms; 0: cleaned up at once. Give every process the same value.
    #[arg(long, env = "RESUME_GRACE_MS", default_value_t = meetup_platform::service::DEFAULT_RESUME_GRACE_MS)]
    pub resume_grace_ms: u64,
    /// Most relays kept for an away session, delivered when it resumes.
    #[arg(long, env = "RESUME_BUFFER", default_value_t = 256)]
    pub resume_buffer: usize,
    /// STUN URLs given to browsers (`GET /ice-servers`, `ice-servers` event), comma-separated.
    #[arg(long, env = "ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// TURN URLs given to browsers with time-limited credentials, comma-separated.
    #[arg(long, env = "TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// Secret shared with the TURN server (coturn `static-auth-secret`).
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Lifetime of TURN credentials, in seconds.
    #[arg(long, env = "TURN_TTL_SECS", default_value_t = 86_400)]
    pub turn_ttl_secs: u64,
    /// How long shutdown may take before the process exits anyway, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Timing of the liveness protocol.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often this gateway renews its lease and probes the services.
    pub heartbeat: Duration,
    /// Lifetime of the lease: past it without renewal, this gateway is dead.
    pub timeout: Duration,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{0} is set but NATS_URL is not: remote services keep their state in NATS JetStream, set NATS_URL too"
    )]
    RemoteWithoutNats(&'static str),
    #[error("GATEWAY_ID {0:?} must be 1 to 64 letters, digits, '-' or '_'")]
    BadGatewayId(String),
    #[error("CLIENT_URL: {0}")]
    BadOrigin(#[from] crate::edge::origin::OriginError),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("GATEWAY_TIMEOUT_MS must be more than twice GATEWAY_HEARTBEAT_MS")]
    TimeoutTooShort,
    #[error("ICE_SERVERS / TURN_URLS entry {0:?} must start with stun:, stuns:, turn: or turns:")]
    BadIceServer(String),
    #[error("TURN_URLS is set but TURN_SECRET is not: TURN credentials cannot be issued")]
    TurnWithoutSecret,
    #[error("RESUME_GRACE_MS must be at most 4294967295 (49 days)")]
    ResumeGraceTooLong,
}

impl Config {
    pub fn resume_grace(&self) -> Duration {
        Duration::from_millis(self.resume_grace_ms)
    }

    /// Checks the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.resume_grace_ms > u64::from(u32::MAX) {
            return Err(ConfigError::ResumeGraceTooLong);
        }
        if self.nats_url.is_none() {
            if self.presence_url.is_some() {
                return Err(ConfigError::RemoteWithoutNats("PRESENCE_URL"));
            }
            if self.calls_url.is_some() {
                return Err(ConfigError::RemoteWithoutNats("CALLS_URL"));
            }
        }
        if let Some(id) = &self.gateway_id
            && !subjects::is_valid_token(id)
        {
            return Err(ConfigError::BadGatewayId(id.clone()));
        }
        if let Err(error) = crate::edge::origin::AllowedOrigins::parse(&self.client_urls) {
            return Err(ConfigError::BadOrigin(error));
        }
        for (name, value) in [
            ("MAX_PAYLOAD_BYTES", self.max_payload_bytes as u64),
            ("MAX_MESSAGE_BYTES", self.max_message_bytes),
            ("SOCKET_QUEUE", self.socket_queue as u64),
            ("SOCKET_BUFFER", self.socket_buffer as u64),
            ("WS_READ_BUFFER_BYTES", self.ws_read_buffer_bytes as u64),
            ("RPC_TIMEOUT_MS", self.rpc_timeout_ms),
            ("GATEWAY_HEARTBEAT_MS", self.gateway_heartbeat_ms),
            ("EVENTS_PER_SEC", u64::from(self.events_per_sec)),
            (
                "CONNECTIONS_PER_IP_PER_SEC",
                u64::from(self.connections_per_ip_per_sec),
            ),
            ("MAX_SOCKETS_PER_USER", self.max_sockets_per_user as u64),
            ("MAX_CALL_PARTICIPANTS", self.max_call_participants as u64),
            ("MAX_CALLS_PER_USER", self.max_calls_per_user as u64),
            ("RING_TIMEOUT_MS", self.ring_timeout_ms),
            ("CALL_CHAT_HISTORY", self.call_chat_history as u64),
            ("RESUME_BUFFER", self.resume_buffer as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !non_empty(&self.turn_urls).is_empty()
            && self.turn_secret.as_deref().unwrap_or("").is_empty()
        {
            return Err(ConfigError::TurnWithoutSecret);
        }
        for url in self
            .ice_server_urls()
            .into_iter()
            .chain(non_empty(&self.turn_urls))
        {
            if !["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err(ConfigError::BadIceServer(url));
            }
        }
        if self.gateway_timeout_ms <= 2 * self.gateway_heartbeat_ms {
            return Err(ConfigError::TimeoutTooShort);
        }
        Ok(())
    }

    /// The configured gateway id, or a fresh random one.
    pub fn gateway_id(&self) -> String {
        self.gateway_id
            .clone()
            .unwrap_or_else(|| format!("gw-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff))
    }

    /// The STUN URLs, without empty entries (`ICE_SERVERS=""`).
    pub fn ice_server_urls(&self) -> Vec<String> {
        non_empty(&self.ice_servers)
    }

    pub fn ice(&self) -> crate::edge::turn::IceConfig {
        crate::edge::turn::IceConfig {
            stun_urls: self.ice_server_urls(),
            turn_urls: non_empty(&self.turn_urls),
            turn_secret: self.turn_secret.clone().filter(|s| !s.is_empty()),
            turn_ttl: Duration::from_secs(self.turn_ttl_secs),
        }
    }

    pub fn auth(&self) -> crate::edge::auth::AuthSettings {
        crate::edge::auth::AuthSettings {
            secret: self.auth_jwt_secret.clone(),
            public_key: self.auth_jwt_public_key.clone(),
            issuer: self.auth_jwt_issuer.clone(),
            audience: self.auth_jwt_audience.clone(),
            username_claim: self.auth_username_claim.clone(),
            leeway_secs: self.auth_jwt_leeway_secs,
        }
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    pub fn liveness(&self) -> Liveness {
        Liveness {
            heartbeat: Duration::from_millis(self.gateway_heartbeat_ms),
            timeout: Duration::from_millis(self.gateway_timeout_ms),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// A comma-separated list without its empty entries.
fn non_empty(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["meetup-gateway"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("parses")
    }

    #[test]
    fn defaults_run_embedded() {
        let config = parse(&[]);
        assert!(config.validate().is_ok());
        assert_eq!(config.port, 3001);
        // The internal APIs are not on the network unless asked for.
        assert!(config.presence_listen.ip().is_loopback());
        assert!(config.calls_listen.ip().is_loopback());
        assert_eq!(
            config.client_urls,
            vec!["http://localhost:3000".to_string()]
        );
    }

    #[test]
    fn trusted_proxies_are_cidrs() {
        let config = parse(&["--trusted-proxies", "10.0.0.0/8,fd00::/8"]);
        assert_eq!(config.trusted_proxies.len(), 2);
        let bad = Config::try_parse_from(["meetup-gateway", "--trusted-proxies", "10.0.0.0/33"]);
        assert!(bad.is_err());
    }

    #[test]
    fn remote_services_need_nats() {
        let err = parse(&["--presence-url", "http://p:50051"])
            .validate()
            .expect_err("must fail");
        assert!(err.to_string().contains("NATS_URL"));
        assert!(
            parse(&[
                "--calls-url",
                "http://c:50052",
                "--nats-url",
                "nats://n:4222"
            ])
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn gateway_ids_and_origins_are_checked() {
        assert!(parse(&["--gateway-id", "a.b"]).validate().is_err());
        assert!(parse(&["--gateway-id", "gw-1"]).validate().is_ok());
        let config = parse(&["--client-urls", "http://a.test,http://b.test"]);
        assert_eq!(config.client_urls.len(), 2);
        assert!(config.validate().is_ok());
        assert!(
            parse(&["--client-urls", "https://*.a.test,*"])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--client-urls", "a.test"]).validate().is_err());
        assert!(
            parse(&["--client-urls", "http://a.test/app"])
                .validate()
                .is_err()
        );
        assert!(parse(&["--max-payload-bytes", "0"]).validate().is_err());
        assert!(
            parse(&[
                "--gateway-heartbeat-ms",
                "1000",
                "--gateway-timeout-ms",
                "2000"
            ])
            .validate()
            .is_err()
        );
    }
}
