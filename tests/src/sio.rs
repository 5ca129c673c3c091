//! The test-side Socket.IO client: the load generator's native client, plus a
//! record of every event received and bounded waits on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use meetup_loadgen::sio::{Conn, ConnectOptions};
use serde_json::Value;
use tokio::sync::Notify;

/// One event received from the server.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: String,
    pub data: Value,
}

#[derive(Default)]
struct Inbox {
    events: Mutex<Vec<Received>>,
    arrived: Notify,
}

/// A connected Socket.IO client that records what it receives; the connection
/// closes when it is dropped.
pub struct SioClient {
    conn: Conn,
    inbox: Arc<Inbox>,
}

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

impl SioClient {
    /// Connects to the default namespace of the gateway at `http_base`
    /// (`http://127.0.0.1:3001`).
    pub async fn connect(http_base: &str) -> anyhow::Result<Self> {
        Self::connect_with_auth(http_base, None).await
    }

    /// [`SioClient::connect`] with the handshake's `auth` object
    /// (`{ "calling": true }`).
    pub async fn connect_with_auth(http_base: &str, auth: Option<&Value>) -> anyhow::Result<Self> {
        let inbox = Arc::new(Inbox::default());
        let recorder = inbox.clone();
        let options = ConnectOptions {
            auth: auth.map(Value::to_string),
            ..ConnectOptions::default()
        };
        let conn = Conn::connect_with(http_base, &options, move |event, data| {
            recorder
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Received {
                    event: event.to_owned(),
                    data: serde_json::from_str(data).unwrap_or(Value::Null),
                });
            recorder.arrived.notify_waiters();
        })
        .await?;
        Ok(SioClient { conn, inbox })
    }

    /// Drops the connection without a goodbye, as a network failure would.
    pub fn drop_transport(self) {
        self.conn.drop_transport();
    }

    /// Emits an event without an acknowledgement.
    pub fn emit(&self, event: &str, data: &Value) {
        self.conn.emit_raw(event, &data.to_string());
    }

    /// Emits an event and waits for its acknowledgement.
    pub async fn emit_ack(&self, event: &str, data: &Value) -> anyhow::Result<Value> {
        self.emit_ack_within(event, data, ACK_TIMEOUT).await
    }

    /// [`SioClient::emit_ack`], waiting at most `timeout` for the ack.
    pub async fn emit_ack_within(
        &self,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let raw = self
            .conn
            .emit_ack_raw(event, &data.to_string(), timeout)
            .await?;
        Ok(serde_json::from_str(&raw)?)
    }

    /// Waits for the first event named `event` (received at or after position
    /// `since`, see [`SioClient::mark`]) that satisfies `pred`.
    pub async fn wait_for(
        &self,
        event: &str,
        since: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = self
                .events()
                .into_iter()
                .skip(since)
                .find(|r| r.event == event && pred(&r.data))
            {
                return Ok(found.data);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got: Vec<String> = self
                    .events()
                    .into_iter()
                    .skip(since)
                    .map(|r| r.event)
                    .collect();
                bail!("no {event} within {timeout:?}; got {got:?}");
            }
        }
    }

    /// Waits until the server closes the connection.
    pub async fn wait_closed(&self, timeout: Duration) -> anyhow::Result<()> {
        self.conn.wait_closed(timeout).await
    }

    /// Acks that arrived for no waiting emit (a second ack for one emit); 0 when
    /// every ack came at most once.
    pub fn stray_acks(&self) -> u64 {
        self.conn.stray_acks()
    }

    /// True once the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Position in the received events, for [`SioClient::wait_for`].
    pub fn mark(&self) -> usize {
        self.inbox.events.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Received> {
        self.inbox
            .events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}
