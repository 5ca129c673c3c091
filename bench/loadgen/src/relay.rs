//! The `relay` scenario: pairs of users in calls, each sender relaying ICE
//! candidates to its peer at a fixed rate, open loop; one-way latency from each
//! message's intended send time. The `echo` variant sends the same messages to a
//! raw WebSocket echo server and measures the round trip: the physical floor, and
//! proof that the tool itself keeps up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{self, histogram, record, summary};
use crate::sio::Conn;

#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Gateway base URLs; clients are spread over them in turn.
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<String>,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Put each receiver on the next gateway (relays cross gateways).
    #[arg(long)]
    pub cross: bool,
    /// Size of the candidate string in bytes (a real one is 100 to 250).
    #[arg(long, default_value_t = 180)]
    pub payload_bytes: usize,
}

struct Receiver {
    latencies: Mutex<Histogram<u64>>,
    received: AtomicU64,
    out_of_order: AtomicU64,
    last_seq: AtomicU64,
}

/// The candidate a sender sends: its sequence and intended send time ride inside.
fn candidate(seq: u64, intended_ns: u64, pad: &str) -> String {
    format!(
        r#"{{"seq":{seq},"t":{intended_ns},"candidate":"{pad}","sdpMid":"0","sdpMLineIndex":0}}"#
    )
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            latencies: Mutex::new(histogram()),
            received: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
        }
    }
}

fn observe(receiver: &Receiver, epoch: Instant, data: &str) {
    let Ok(value) = serde_json::from_str::<Value>(data) else {
        return;
    };
    // A relayed payload carries the candidate object; the echo returns it bare.
    let candidate = value
        .get("candidate")
        .filter(|c| c.is_object())
        .unwrap_or(&value);
    let (Some(seq), Some(t)) = (candidate["seq"].as_u64(), candidate["t"].as_u64()) else {
        return;
    };
    let now = epoch.elapsed().as_nanos() as u64;
    if let Ok(mut h) = receiver.latencies.lock() {
        record(&mut h, Duration::from_nanos(now.saturating_sub(t)));
    }
    receiver.received.fetch_add(1, Ordering::Relaxed);
    let previous = receiver.last_seq.swap(seq + 1, Ordering::Relaxed);
    if seq + 1 < previous {
        receiver.out_of_order.fetch_add(1, Ordering::Relaxed);
    }
}

async fn register(conn: &Conn, id: &str) -> anyhow::Result<()> {
    let ack = conn
        .emit_ack_raw(
            "user-joined",
            &json!({ "id": id, "username": id }).to_string(),
            Duration::from_secs(30),
        )
        .await?;
    anyhow::ensure!(ack.contains("\"ok\":true"), "user-joined refused: {ack}");
    Ok(())
}

/// Runs the relay scenario and returns its results.
pub async fn run(args: &RelayArgs) -> anyhow::Result<Value> {
    let run_id = format!(
        "{:x}",
        std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
    );
    let epoch = Instant::now();
    let g = args.gateways.len();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut keep = Vec::new();
    for i in 0..args.pairs {
        let (from, to) = (format!("lg-{run_id}-s{i}"), format!("lg-{run_id}-r{i}"));
        let call = format!("lg-{run_id}-c{i}");
        let receiver = Arc::new(Receiver::default());
        let sink = receiver.clone();
        let rx_gateway = &args.gateways[(i + usize::from(args.cross)) % g];
        let rx = Conn::connect(rx_gateway, move |event, data| {
            if event == "webrtc-ice-candidate" {
                observe(&sink, epoch, data);
            }
        })
        .await
        .with_context(|| format!("receiver {i} connect"))?;
        let tx = Conn::connect(&args.gateways[i % g], |_, _| {})
            .await
            .with_context(|| format!("sender {i} connect"))?;
        register(&rx, &to).await?;
        register(&tx, &from).await?;
        let start = json!({ "id": call, "initiator": { "id": from, "username": from }, "participants": [{ "id": to, "username": to }], "isVideo": true });
        tx.emit_ack_raw("start-call", &start.to_string(), Duration::from_secs(30))
            .await?;
        let join = json!({ "callId": call, "user": { "id": to, "username": to } });
        rx.emit_ack_raw("join-call", &join.to_string(), Duration::from_secs(30))
            .await?;
        senders.push((tx, call, to));
        receivers.push(receiver);
        keep.push(rx);
    }
    let pad = "x".repeat(args.payload_bytes);
    let duration = Duration::from_secs_f64(args.duration);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for (index, (tx, call, target)) in senders.into_iter().enumerate() {
        let (pad, sent) = (pad.clone(), sent.clone());
        // Spread the senders' phases over one period.
        let phase = period.mul_f64(index as f64 / args.pairs as f64);
        tasks.push(tokio::spawn(async move {
            let first = tokio::time::Instant::from_std(start + phase);
            let mut ticks = tokio::time::interval_at(first, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0u64;
            loop {
                let tick = ticks.tick().await.into_std();
                if tick.duration_since(start) >= duration {
                    break;
                }
                let intended = tick.duration_since(epoch).as_nanos() as u64;
                let payload = format!(
                    r#"{{"callId":"{call}","targetUserId":"{target}","candidate":{}}}"#,
                    candidate(seq, intended, &pad)
                );
                tx.emit_raw("webrtc-ice-candidate", &payload);
                seq += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            tx
        }));
    }
    let total_received = || {
        receivers
            .iter()
            .map(|r| r.received.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while start.elapsed() < duration || Instant::now() < start {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let elapsed = Instant::now()
            .saturating_duration_since(start)
            .min(duration);
        report::progress(
            "relay",
            elapsed,
            duration,
            &format!(
                "sent {} received {}",
                sent.load(Ordering::Relaxed),
                total_received()
            ),
        );
    }
    let mut senders = Vec::new();
    for task in tasks {
        senders.push(task.await?);
    }
    // Let the tail arrive: until everything is in, or 3 s of nothing new.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    let mut last = total_received();
    let mut quiet_since = Instant::now();
    while total_received() < sent.load(Ordering::Relaxed) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = total_received();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut all = histogram();
    for r in &receivers {
        if let Ok(h) = r.latencies.lock() {
            let _ = all.add(&*h);
        }
    }
    let sent = sent.load(Ordering::Relaxed);
    let received = total_received();
    let out_of_order: u64 = receivers
        .iter()
        .map(|r| r.out_of_order.load(Ordering::Relaxed))
        .sum();
    drop(senders);
    drop(keep);
    Ok(json!({
        "scenario": "relay",
        "gateways": args.gateways,
        "pairs": args.pairs,
        "cross_gateway": args.cross,
        "rate_per_sender": args.rate,
        "duration_s": args.duration,
        "offered_per_s": sent as f64 / args.duration,
        "delivered_per_s": received as f64 / args.duration,
        "sent": sent,
        "received": received,
        "lost": sent.saturating_sub(received),
        "out_of_order": out_of_order,
        "latency": summary(&all),
    }))
}

/// The same traffic against a raw WebSocket echo server: round trips.
pub async fn run_echo(
    url: &str,
    pairs: usize,
    rate: f64,
    duration_s: f64,
    payload_bytes: usize,
) -> anyhow::Result<Value> {
    let epoch = Instant::now();
    let pad = "x".repeat(payload_bytes);
    let duration = Duration::from_secs_f64(duration_s);
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(300);
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut receivers = Vec::new();
    for index in 0..pairs {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("echo connect {url}"))?;
        let (mut sink, mut stream) = ws.split();
        let receiver = Arc::new(Receiver::default());
        receivers.push(receiver.clone());
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                observe(&receiver, epoch, text.as_str());
            }
        });
        let (pad, sent) = (pad.clone(), sent.clone());
        let phase = period.mul_f64(index as f64 / pairs as f64);
        tasks.push(tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::from_std(start + phase), period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0;
            loop {
                let tick = ticks.tick().await.into_std();
                if tick.duration_since(start) >= duration {
                    break;
                }
                let intended = tick.duration_since(epoch).as_nanos() as u64;
                if sink
                    .send(Message::text(candidate(seq, intended, &pad)))
                    .await
                    .is_err()
                {
                    break;
                }
                seq += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        }));
    }
    let mut sinks = Vec::new();
    for task in tasks {
        sinks.push(task.await?);
    }
    let total = || {
        receivers
            .iter()
            .map(|r| r.received.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while total() < sent.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = histogram();
    for r in &receivers {
        if let Ok(h) = r.latencies.lock() {
            let _ = all.add(&*h);
        }
    }
    let sent = sent.load(Ordering::Relaxed);
    let received = total();
    drop(sinks);
    Ok(json!({
        "scenario": "echo",
        "target": url,
        "pairs": pairs,
        "rate_per_sender": rate,
        "duration_s": duration_s,
        "offered_per_s": sent as f64 / duration_s,
        "delivered_per_s": received as f64 / duration_s,
        "sent": sent,
        "received": received,
        "lost": sent.saturating_sub(received),
        "round_trip": summary(&all),
    }))
}

/// A raw WebSocket echo server: every text message goes straight back.
pub async fn echo_server(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                let (mut sink, mut stream) = ws.split();
                while let Some(Ok(message)) = stream.next().await {
                    if message.is_text() && sink.send(message).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}
