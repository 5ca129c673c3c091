//! The event bus between the services and the gateways: NATS in a cluster, or an
//! in-process bus when everything runs in one process (the embedded default).
//!
//! Both deliver messages of one publisher in the order they were published, which
//! is what the signaling ordering guarantees rest on.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

pub use crate::local::LocalBus;

/// One message received from the bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
    /// W3C trace context of the change this message carries (a NATS header).
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("bus publish failed: {0}")]
    Publish(String),
    #[error("bus subscribe failed: {0}")]
    Subscribe(String),
    #[error("bus flush failed: {0}")]
    Flush(String),
}

/// The servers of a `NATS_URL`: comma-separated, blanks ignored.
fn server_list(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A cheap-to-clone handle on the bus: in this process, or on the NATS server.
#[derive(Clone, Debug)]
pub enum Bus {
    Local(LocalBus),
    Remote(async_nats::Client),
}

impl Bus {
    /// An in-process bus (embedded mode).
    pub fn local() -> Self {
        Bus::Local(LocalBus::default())
    }

    /// Connects to NATS. `url` lists one or more servers, comma-separated (the
    /// client library takes one URL per entry, not a list in one string). The
    /// client reconnects by itself for ever after the first connection, to any
    /// server listed; the first one is retried until `timeout`.
    pub async fn connect_nats(url: &str, name: &str, timeout: Duration) -> Result<Self, BusError> {
        let servers = server_list(url);
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    other => tracing::info!(event = %other, "nats event"),
                }
            });
        let connect = async_nats::connect_with_options(servers, options);
        let client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| BusError::Connect {
                url: url.to_owned(),
                reason: format!("no connection within {timeout:?}"),
            })?
            .map_err(|e| BusError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Bus::Remote(client))
    }

    /// Publishes in the trace of the current span.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        let traceparent = crate::tracing_context::current_traceparent();
        self.publish_traced(subject, payload, traceparent).await
    }

    /// Publishes with the given trace context (a `traceparent` NATS header).
    pub async fn publish_traced(
        &self,
        subject: String,
        payload: Bytes,
        traceparent: Option<String>,
    ) -> Result<(), BusError> {
        match self {
            Bus::Local(bus) => {
                bus.publish(subject, payload, traceparent);
                Ok(())
            }
            Bus::Remote(client) => {
                let result = match traceparent {
                    Some(traceparent) => {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(crate::tracing_context::TRACEPARENT, traceparent.as_str());
                        client.publish_with_headers(subject, headers, payload).await
                    }
                    None => client.publish(subject, payload).await,
                };
                result.map_err(|e| BusError::Publish(e.to_string()))
            }
        }
    }

    /// Waits until everything published so far has reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Bus::Local(_) => Ok(()),
            Bus::Remote(client) => client
                .flush()
                .await
                .map_err(|e| BusError::Flush(e.to_string())),
        }
    }

    /// Subscribes to a subject; NATS wildcards (`*`, `>`) work on both buses.
    pub async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        match self {
            Bus::Local(bus) => Ok(Subscription::Local(bus.subscribe(subject))),
            Bus::Remote(client) => client
                .subscribe(subject)
                .await
                .map(|s| Subscription::Remote(Box::new(s)))
                .map_err(|e| BusError::Subscribe(e.to_string())),
        }
    }

    /// True while the bus can carry messages.
    /// Logs a warning when the NATS server this process is connected to is
    /// older than [`MIN_NATS_SERVER`] (nothing while not connected yet).
    pub fn warn_if_old_server(&self) {
        let Bus::Remote(client) = self else {
            return;
        };
        let version = client.server_info().version;
        if is_older_than_minimum(&version) {
            tracing::warn!(
                version,
                minimum = MIN_NATS_SERVER,
                "nats-server is older than this system is meant for (README: Start-up order)"
            );
        }
    }

    pub fn is_connected(&self) -> bool {
        match self {
            Bus::Local(_) => true,
            Bus::Remote(client) => {
                client.connection_state() == async_nats::connection::State::Connected
            }
        }
    }

    /// Sends what is buffered and stops; used on shutdown.
    pub async fn drain(&self) {
        if let Bus::Remote(client) = self
            && let Err(error) = client.drain().await
        {
            tracing::warn!(%error, "nats drain failed");
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Local(_) => "in-process",
            Bus::Remote(_) => "nats",
        }
    }
}

/// A stream of the messages of one subscription.
#[derive(Debug)]
pub enum Subscription {
    Local(mpsc::UnboundedReceiver<BusMessage>),
    Remote(Box<async_nats::Subscriber>),
}

impl Stream for Subscription {
    type Item = BusMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Subscription::Local(rx) => rx.poll_recv(cx),
            Subscription::Remote(sub) => Pin::new(sub.as_mut()).poll_next(cx).map(|m| {
                m.map(|m| BusMessage {
                    traceparent: m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(crate::tracing_context::TRACEPARENT))
                        .map(|v| v.as_str().to_owned()),
                    subject: m.subject.to_string(),
                    payload: m.payload,
                })
            }),
        }
    }
}

/// The oldest nats-server release this system is meant for: the JetStream
/// fixes that followed Jepsen's analysis of 2.12.1 (acknowledged writes lost in
/// some failures) are in it.
pub const MIN_NATS_SERVER: &str = "2.12.3";

/// Whether a server's `version` (`2.11.4`, `v2.12.3`, `2.13.0-beta.1`) is older
/// than [`MIN_NATS_SERVER`]. An unreadable version counts as older.
fn is_older_than_minimum(version: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64, u64)> {
        let v = v.trim().trim_start_matches('v');
        let core = v.split(['-', '+']).next()?;
        let mut numbers = core.split('.').map(|n| n.parse::<u64>().ok());
        Some((
            numbers.next()??,
            numbers.next()??,
            numbers.next().flatten().unwrap_or(0),
        ))
    }
    match (parts(version), parts(MIN_NATS_SERVER)) {
        (Some(found), Some(minimum)) => found < minimum,
        _ => true,
    }
}

/// The pause before reconnect attempt `attempts` to NATS: 0, then 100 ms more
/// each time up to 1 s (the library's default grows to several seconds), so
/// that a process waiting for NATS is ready within about a second of it.
pub fn reconnect_delay(attempts: usize) -> std::time::Duration {
    std::time::Duration::from_millis((attempts as u64 * 100).min(1000))
}

#[cfg(test)]
mod tests {
    use super::server_list;

    #[test]
    fn servers_older_than_the_minimum_are_told_apart() {
        use super::is_older_than_minimum as old;
        for older in ["2.9.25", "2.11.4", "v2.12.2", "garbage", ""] {
            assert!(old(older), "{older}");
        }
        for newer in ["2.12.3", "v2.12.4", "2.13.0", "2.15.1", "3.0.0-rc.1"] {
            assert!(!old(newer), "{newer}");
        }
    }

    #[test]
    fn nats_url_lists_several_servers() {
        assert_eq!(
            server_list("nats://a:4222, nats://b:4222,,nats://c:4222 "),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(server_list("nats://a:4222"), ["nats://a:4222"]);
    }
}
