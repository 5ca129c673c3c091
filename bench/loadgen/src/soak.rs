//! The `resume` scenario: a soak of calls that survive disconnects. Pairs of
//! users in calls across the gateways relay ICE candidates both ways, while
//! every user's connection is dropped (no goodbye) at random every few seconds
//! and comes back a moment later through a random gateway, resuming with its
//! token and the `seq` of the last relay it received. At the end: how many calls
//! are alive both ways, every relay delivered or reported as not recovered, and
//! the time from reconnecting to the `resumed` ack.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::report::{histogram, progress, record, summary};
use crate::sio::Conn;

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<String>,
    /// Calls, each between two users on different gateways.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Mean seconds between two drops of one user's connection.
    #[arg(long, default_value_t = 5.0)]
    pub drop_every: f64,
    /// Longest a dropped user stays away before reconnecting, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub away_for: f64,
    /// Relays per second each user sends to its peer.
    #[arg(long, default_value_t = 2.0)]
    pub relay_rate: f64,
}

const ACK: Duration = Duration::from_secs(15);

/// What one user received: the numbers of its peer's relays, and the last `seq`.
#[derive(Default)]
struct Inbox {
    got: BTreeSet<u64>,
    duplicates: u64,
    last_seq: u64,
}

/// One user: its connection (none while dropped), token and what it saw.
struct User {
    id: String,
    peer: String,
    call: String,
    conn: tokio::sync::Mutex<Option<Conn>>,
    token: Mutex<String>,
    inbox: Arc<Mutex<Inbox>>,
    /// Relays it sent that were acknowledged.
    acked: Mutex<BTreeSet<u64>>,
    /// Resumes that reported something may have been lost.
    not_recovered: Mutex<u64>,
}

fn rand_unit() -> f64 {
    rand::random::<f64>()
}

async fn connect(url: &str, inbox: &Arc<Mutex<Inbox>>) -> anyhow::Result<Conn> {
    let inbox = inbox.clone();
    Conn::connect(url, move |event, data| {
        if event != "webrtc-ice-candidate" {
            return;
        }
        let Ok(payload) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seq) = payload["seq"].as_u64() {
            inbox.last_seq = inbox.last_seq.max(seq);
        }
        if let Some(n) = payload["candidate"]["n"].as_u64()
            && !inbox.got.insert(n)
        {
            inbox.duplicates += 1;
        }
    })
    .await
}

/// `user-joined`; returns the ack.
async fn join(conn: &Conn, user: &User, resume: bool) -> anyhow::Result<Value> {
    let mut payload = json!({ "id": user.id, "username": user.id, "resumeToken": null });
    if resume {
        let token = user.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last_seq = user
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_seq;
        payload["resumeToken"] = json!(token);
        payload["lastSeq"] = json!(last_seq);
    }
    let ack: Value = serde_json::from_str(
        &conn
            .emit_ack_raw("user-joined", &payload.to_string(), ACK)
            .await?,
    )?;
    anyhow::ensure!(ack["ok"] == true, "user-joined refused: {ack}");
    if let Some(token) = ack["resumeToken"].as_str() {
        *user.token.lock().unwrap_or_else(|p| p.into_inner()) = token.to_owned();
    }
    Ok(ack)
}

async fn ack_ok(conn: &Conn, event: &str, payload: Value) -> anyhow::Result<()> {
    let ack = conn.emit_ack_raw(event, &payload.to_string(), ACK).await?;
    anyhow::ensure!(ack.contains("\"ok\":true"), "{event} refused: {ack}");
    Ok(())
}

pub async fn run(args: &SoakArgs) -> anyhow::Result<Value> {
    let run_id = format!("{:x}", std::process::id());
    let g = args.gateways.len();
    let mut users: Vec<Arc<User>> = Vec::new();
    for c in 0..args.calls {
        let call = format!("soak-{run_id}-{c}");
        let (a, b) = (format!("soak-{run_id}-{c}a"), format!("soak-{run_id}-{c}b"));
        for (id, peer) in [(&a, &b), (&b, &a)] {
            users.push(Arc::new(User {
                id: id.clone(),
                peer: peer.clone(),
                call: call.clone(),
                conn: tokio::sync::Mutex::new(None),
                token: Mutex::new(String::new()),
                inbox: Arc::default(),
                acked: Mutex::default(),
                not_recovered: Mutex::new(0),
            }));
        }
    }
    // Everyone in a call: a on one gateway, b on the next.
    for (i, pair) in users.chunks(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        let conn_a = connect(&args.gateways[i % g], &a.inbox).await?;
        let conn_b = connect(&args.gateways[(i + 1) % g], &b.inbox).await?;
        join(&conn_a, a, false).await?;
        join(&conn_b, b, false).await?;
        let start = json!({ "id": a.call, "initiator": {}, "participants": [{ "id": b.id }], "isVideo": true });
        ack_ok(&conn_a, "start-call", start).await?;
        ack_ok(
            &conn_b,
            "join-call",
            json!({ "callId": a.call, "user": {} }),
        )
        .await?;
        *a.conn.lock().await = Some(conn_a);
        *b.conn.lock().await = Some(conn_b);
    }
    let resume_latency = Arc::new(Mutex::new(histogram()));
    let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64))); // drops, resumed, recovered, failed
    let duration = Duration::from_secs_f64(args.duration);
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for user in &users {
        // Relays to the peer at a fixed rate while connected.
        let (u, rate) = (user.clone(), args.relay_rate);
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_secs_f64(1.0 / rate.max(0.01));
            let mut n = 0u64;
            while begin.elapsed() < duration {
                tokio::time::sleep(every).await;
                let conn = u.conn.lock().await;
                let Some(conn) = conn.as_ref() else { continue };
                n += 1;
                let relay =
                    json!({ "callId": u.call, "targetUserId": u.peer, "candidate": { "n": n } });
                if let Ok(ack) = conn
                    .emit_ack_raw("webrtc-ice-candidate", &relay.to_string(), ACK)
                    .await
                    && ack.contains("\"ok\":true")
                {
                    u.acked.lock().unwrap_or_else(|p| p.into_inner()).insert(n);
                }
            }
        }));
        // Drops and resumes.
        let (u, gateways) = (user.clone(), args.gateways.clone());
        let (drop_every, away_for) = (args.drop_every, args.away_for);
        let (latency, counts) = (resume_latency.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let pause = Duration::from_secs_f64(drop_every * (0.5 + rand_unit()));
                if begin.elapsed() + pause >= duration {
                    break;
                }
                tokio::time::sleep(pause).await;
                if let Some(conn) = u.conn.lock().await.take() {
                    conn.drop_transport();
                }
                counts.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
                tokio::time::sleep(Duration::from_secs_f64(away_for * rand_unit())).await;
                let url = &gateways[rand::random::<u64>() as usize % gateways.len()];
                let reconnected = Instant::now();
                let resumed = async {
                    let conn = connect(url, &u.inbox).await?;
                    let ack = join(&conn, &u, true).await?;
                    anyhow::Ok((conn, ack))
                };
                match resumed.await {
                    Ok((conn, ack)) => {
                        record(
                            &mut latency.lock().unwrap_or_else(|p| p.into_inner()),
                            reconnected.elapsed(),
                        );
                        {
                            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                            if ack["resumed"] == true {
                                c.1 += 1;
                            }
                            if ack["recovered"] == true {
                                c.2 += 1;
                            } else {
                                *u.not_recovered.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                            }
                        }
                        *u.conn.lock().await = Some(conn);
                    }
                    Err(error) => {
                        eprintln!("\n{}: resume failed: {error:#}", u.id);
                        counts.lock().unwrap_or_else(|p| p.into_inner()).3 += 1;
                        break;
                    }
                }
            }
        }));
    }
    while begin.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let drops = counts.lock().unwrap_or_else(|p| p.into_inner()).0;
        progress(
            "resume soak",
            begin.elapsed(),
            duration,
            &format!("{drops} drops"),
        );
    }
    for task in tasks {
        task.await?;
    }
    // Let the last relays land, then check every call both ways.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut alive = 0;
    for pair in users.chunks(2) {
        let mut both = true;
        for (from, to) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
            let conn = from.conn.lock().await;
            let probe = u64::MAX - 1;
            let sent = match conn.as_ref() {
                Some(conn) => {
                    let relay = json!({ "callId": from.call, "targetUserId": to.id, "candidate": { "n": probe } });
                    ack_ok(conn, "webrtc-ice-candidate", relay).await.is_ok()
                }
                None => false,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut arrived = false;
            while sent && Instant::now() < deadline {
                if to
                    .inbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .got
                    .contains(&probe)
                {
                    arrived = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            both &= arrived;
        }
        alive += usize::from(both);
    }
    let (mut sent, mut delivered, mut reported, mut lost, mut duplicates) = (0, 0, 0, 0, 0);
    for user in &users {
        let Some(peer) = users.iter().find(|p| p.id == user.peer) else {
            continue;
        };
        let acked = user.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let inbox = peer.inbox.lock().unwrap_or_else(|p| p.into_inner());
        let missing = acked.iter().filter(|n| !inbox.got.contains(n)).count() as u64;
        sent += acked.len() as u64;
        delivered += acked.len() as u64 - missing;
        duplicates += inbox.duplicates;
        // Missing relays are fine only where the receiver was told so.
        if *peer.not_recovered.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
            reported += missing;
        } else {
            lost += missing;
        }
    }
    let (drops, resumed, recovered, failed) = *counts.lock().unwrap_or_else(|p| p.into_inner());
    let latency: Histogram<u64> = resume_latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(json!({
        "scenario": "resume",
        "gateways": args.gateways,
        "calls": args.calls,
        "duration_s": args.duration,
        "drop_every_s": args.drop_every,
        "drops": drops,
        "resumed": resumed,
        "recovered": recovered,
        "resume_failures": failed,
        "calls_alive_both_ways": alive,
        "relays_acked": sent,
        "relays_delivered": delivered,
        "relays_missing_reported_not_recovered": reported,
        "relays_lost_silently": lost,
        "relays_duplicated": duplicates,
        "reconnect_to_resumed": summary(&latency),
    }))
}
