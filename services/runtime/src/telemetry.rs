//! Structured logging for every binary: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches from human-readable lines to one JSON object a line.

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber. Logs go to stdout.
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in CHATTY {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(false).try_init(),
    };
}
