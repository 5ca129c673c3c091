//! A small native Socket.IO client (Socket.IO v5 over Engine.IO v4, websocket
//! transport) for the Rust end-to-end tests: connect, emit with or without an
//! acknowledgement, and wait for events with a bounded timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

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
    closed: std::sync::atomic::AtomicBool,
}

type PendingAcks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A connected Socket.IO client; the connection closes when it is dropped.
pub struct SioClient {
    out: mpsc::UnboundedSender<Message>,
    inbox: Arc<Inbox>,
    acks: PendingAcks,
    next_ack: AtomicU64,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for SioClient {
    fn drop(&mut self) {
        // Both halves of the websocket go, so the TCP connection closes.
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SioClient {
    /// Connects to the default namespace of the gateway at `http_base`
    /// (`http://127.0.0.1:3001`).
    pub async fn connect(http_base: &str) -> anyhow::Result<Self> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            http_base.replacen("http", "ws", 1)
        );
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        .context("websocket connect timed out")??;
        let (mut sink, mut stream) = ws.split();
        // Engine.IO open packet, then the Socket.IO connect handshake.
        match stream.next().await {
            Some(Ok(Message::Text(open))) if open.starts_with('0') => {}
            other => bail!("expected an Engine.IO open packet, got {other:?}"),
        }
        sink.send(Message::text("40")).await?;
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(connect))) if connect.starts_with("40") => break,
                Some(Ok(Message::Text(ping))) if ping.as_str() == "2" => {
                    sink.send(Message::text("3")).await?;
                }
                other => bail!("expected a Socket.IO connect packet, got {other:?}"),
            }
        }
        let (out, mut to_send) = mpsc::unbounded_channel::<Message>();
        let inbox = Arc::new(Inbox::default());
        let acks: PendingAcks = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = {
            let (inbox, acks, out) = (inbox.clone(), acks.clone(), out.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let text = text.as_str();
                    if text == "2" {
                        let _ = out.send(Message::text("3"));
                    } else if let Some(packet) = text.strip_prefix("42") {
                        if let Some(received) = parse_event(packet) {
                            inbox
                                .events
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(received);
                            inbox.arrived.notify_waiters();
                        }
                    } else if let Some(packet) = text.strip_prefix("43") {
                        let digits: String =
                            packet.chars().take_while(char::is_ascii_digit).collect();
                        let args: Value =
                            serde_json::from_str(&packet[digits.len()..]).unwrap_or(Value::Null);
                        if let Ok(id) = digits.parse::<u64>()
                            && let Some(tx) =
                                acks.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
                        {
                            let _ = tx.send(args.get(0).cloned().unwrap_or(Value::Null));
                        }
                    } else if text.starts_with("41") || text.starts_with('1') {
                        break;
                    }
                }
                inbox.closed.store(true, Ordering::SeqCst);
                inbox.arrived.notify_waiters();
                // Pending acks will never come: fail them now.
                acks.lock().unwrap_or_else(|p| p.into_inner()).clear();
            })
        };
        Ok(SioClient {
            out,
            inbox,
            acks,
            next_ack: AtomicU64::new(1),
            tasks: [writer, reader],
        })
    }

    /// Emits an event without an acknowledgement.
    pub fn emit(&self, event: &str, data: &Value) {
        let packet = format!("42{}", Value::Array(vec![Value::from(event), data.clone()]));
        let _ = self.out.send(Message::text(packet));
    }

    /// Emits an event and waits for its acknowledgement.
    pub async fn emit_ack(&self, event: &str, data: &Value) -> anyhow::Result<Value> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let packet = format!(
            "42{id}{}",
            Value::Array(vec![Value::from(event), data.clone()])
        );
        self.out
            .send(Message::text(packet))
            .map_err(|_| anyhow::anyhow!("connection closed"))?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .with_context(|| format!("no ack for {event} within 10 s"))?
            .context("connection closed before the ack")
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
                bail!(
                    "no {event} within {timeout:?}; got {:?}",
                    self.events()
                        .iter()
                        .skip(since)
                        .map(|r| &r.event)
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits until the server closes the connection.
    pub async fn wait_closed(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.inbox.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!("connection still open after {timeout:?}");
            }
        }
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

fn parse_event(packet: &str) -> Option<Received> {
    let args: Value = serde_json::from_str(packet).ok()?;
    let mut args = match args {
        Value::Array(args) => args.into_iter(),
        _ => return None,
    };
    let event = args.next()?.as_str()?.to_owned();
    Some(Received {
        event,
        data: args.next().unwrap_or(Value::Null),
    })
}
