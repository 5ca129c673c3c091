//! A lean native Socket.IO client (Socket.IO v5 over Engine.IO v4, websocket
//! transport): every incoming event is handed to a callback as raw JSON, acks
//! resolve futures, and nothing is buffered that the caller did not ask for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type PendingAcks = Arc<Mutex<HashMap<u64, oneshot::Sender<String>>>>;

/// A connected client; the connection closes when it is dropped.
pub struct Conn {
    out: mpsc::UnboundedSender<Message>,
    acks: PendingAcks,
    next_ack: AtomicU64,
    /// Acks whose id was not waited for: a second ack for one emit, or a stray.
    stray_acks: Arc<AtomicU64>,
    closed: Arc<(AtomicBool, Notify)>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Conn {
    /// Says goodbye as `socket.disconnect()` does (a Socket.IO disconnect
    /// packet, then a websocket close): the server cleans up at once instead
    /// of keeping the session for a resume. The writer sends them and ends;
    /// the connection closes when both halves have gone.
    fn drop(&mut self) {
        let _ = self.out.send(Message::text("41"));
        let _ = self.out.send(Message::Close(None));
        self.tasks[1].abort();
    }
}

/// The Engine.IO websocket URL of a gateway's base URL (`http://host:port`).
pub fn websocket_url(base: &str) -> String {
    format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.trim_end_matches('/').replacen("http", "ws", 1)
    )
}

/// How a [`Conn`] connects, beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The handshake's `auth` object, as JSON text (`{"presence":"delta"}`).
    pub auth: Option<String>,
    /// The local address to connect from: many connections spread over
    /// 127.0.0.2, 127.0.0.3, ... do not run out of ephemeral ports.
    pub source: Option<IpAddr>,
}

/// Opens the TCP connection, from `source` when given.
async fn tcp_connect(url: &str, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .context("no host in the URL")?;
    let target = tokio::net::lookup_host(authority)
        .await?
        .next()
        .context("the host has no address")?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Connects to the default namespace; `on_event(name, data)` gets every
    /// server event with its first argument as raw JSON, on the reading task.
    pub async fn connect(
        base_url: &str,
        on_event: impl FnMut(&str, &str) + Send + 'static,
    ) -> anyhow::Result<Self> {
        Self::connect_with(base_url, &ConnectOptions::default(), on_event).await
    }

    /// [`Conn::connect`], with a handshake `auth` object and a source address.
    pub async fn connect_with(
        base_url: &str,
        options: &ConnectOptions,
        mut on_event: impl FnMut(&str, &str) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let url = websocket_url(base_url);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(15), async {
            let stream = tcp_connect(&url, options.source).await?;
            anyhow::Ok(tokio_tungstenite::client_async(url.as_str(), stream).await?)
        })
        .await
        .context("websocket connect timed out")??;
        let (mut sink, mut stream) = ws.split();
        match stream.next().await {
            Some(Ok(Message::Text(open))) if open.starts_with('0') => {}
            other => bail!("expected an Engine.IO open packet, got {other:?}"),
        }
        let connect = format!("40{}", options.auth.as_deref().unwrap_or(""));
        sink.send(Message::text(connect)).await?;
        // Events the server sent before its connect packet (a broadcast racing
        // the handshake): socket.io-client buffers them, and so does this.
        let mut early = Vec::new();
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) if text.starts_with("40") => break,
                Some(Ok(Message::Text(text))) if text.starts_with("42") => early.push(text),
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    sink.send(Message::text("3")).await?
                }
                Some(Ok(Message::Text(text))) if text.starts_with("44") => {
                    bail!("connection refused: {}", text.as_str())
                }
                other => bail!("expected a Socket.IO connect packet, got {other:?}"),
            }
        }
        let (out, mut to_send) = mpsc::unbounded_channel::<Message>();
        let acks: PendingAcks = Arc::default();
        let closed: Arc<(AtomicBool, Notify)> = Arc::default();
        let stray_acks: Arc<AtomicU64> = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let reader = {
            let (acks, out, closed, stray) = (
                acks.clone(),
                out.clone(),
                closed.clone(),
                stray_acks.clone(),
            );
            tokio::spawn(async move {
                let early = futures::stream::iter(early.into_iter().map(|t| Ok(Message::Text(t))));
                let mut stream = early.chain(stream);
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let text = text.as_str();
                    if text == "2" {
                        let _ = out.send(Message::text("3"));
                    } else if let Some(packet) = text.strip_prefix("42") {
                        if let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(packet)
                            && let Some(name) = args
                                .first()
                                .and_then(|n| serde_json::from_str::<&str>(n.get()).ok())
                        {
                            on_event(name, args.get(1).map_or("null", |d| d.get()));
                        }
                    } else if let Some(packet) = text.strip_prefix("43") {
                        let digits = packet.bytes().take_while(u8::is_ascii_digit).count();
                        let data = serde_json::from_str::<Vec<&RawValue>>(&packet[digits..])
                            .ok()
                            .and_then(|args| args.first().map(|a| a.get().to_owned()))
                            .unwrap_or_else(|| "null".to_owned());
                        let waiting = packet[..digits].parse::<u64>().ok().and_then(|id| {
                            acks.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
                        });
                        match waiting {
                            Some(tx) => {
                                let _ = tx.send(data);
                            }
                            None => {
                                stray.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else if text.starts_with("41") || text.starts_with('1') {
                        break;
                    }
                }
                closed.0.store(true, Ordering::SeqCst);
                closed.1.notify_waiters();
                // Pending acks will never come: fail them now.
                acks.lock().unwrap_or_else(|p| p.into_inner()).clear();
            })
        };
        Ok(Conn {
            out,
            acks,
            next_ack: AtomicU64::new(1),
            stray_acks,
            closed,
            tasks: [writer, reader],
        })
    }

    /// Drops the connection without a goodbye, as a network failure would:
    /// the server sees its transport close and keeps the session for a resume.
    pub fn drop_transport(self) {
        for task in &self.tasks {
            task.abort();
        }
        // Drop sends its goodbye into a channel nobody reads any more.
    }

    /// Emits `event` with `payload` (JSON text), without an ack.
    pub fn emit_raw(&self, event: &str, payload: &str) {
        let _ = self
            .out
            .send(Message::text(format!("42[\"{event}\",{payload}]")));
    }

    /// Emits with an ack and returns the ack's first argument as JSON text.
    pub async fn emit_ack_raw(
        &self,
        event: &str,
        payload: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Closed already: the reader has failed every pending ack and will not
        // see this one (it sets `closed` before it clears them).
        if self.is_closed() {
            self.acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            bail!("connection closed");
        }
        self.out
            .send(Message::text(format!("42{id}[\"{event}\",{payload}]")))
            .map_err(|_| anyhow::anyhow!("connection closed"))?;
        tokio::time::timeout(timeout, rx)
            .await
            .with_context(|| format!("no ack for {event} within {timeout:?}"))?
            .context("connection closed before the ack")
    }

    /// Acks received that nobody waited for (a duplicate, or an unknown id).
    pub fn stray_acks(&self) -> u64 {
        self.stray_acks.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.0.load(Ordering::SeqCst)
    }

    /// Waits until the server closes the connection, at most `timeout`.
    pub async fn wait_closed(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.closed.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("connection still open after {timeout:?}");
            }
        }
    }
}
