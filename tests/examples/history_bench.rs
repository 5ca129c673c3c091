//! History service benchmark, run by hand (not in CI):
//!
//! ```text
//! cargo build --release -p meetup-history --bins
//! cargo run --release -p meetup-tests --example history_bench [-- <calls>]
//! ```
//!
//! On a PostgreSQL the harness starts (fsync off, like every test database):
//! 1. bulk-loads `<calls>` (default 1,000,000) generated call records (10,000
//!    users, 2 attendees each) with `generate_series`, as the store lays them out;
//! 2. `ListUserCalls` latency through the store (the query the gRPC method
//!    runs, attendees included): first pages and deep pages (keyset token);
//! 3. ingest rate: snapshots applied one at a time as the consumer does, first
//!    through the store directly, then end to end (JetStream KV -> the
//!    `meetup-history` binary's durable consumer -> PostgreSQL).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use meetup_history::source::wire;
use meetup_history::{AttendeeSnapshot, CallSnapshot, HistoryStore, Outcome, UserRef};
use meetup_tests::postgres::{PostgresServer, bin_dir};
use meetup_tests::{NatsServer, Process, bin_path, listening_addrs};
use prost::Message;

const USERS: u64 = 10_000;
const T0: i64 = 1_600_000_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pg = PostgresServer::start().await?;
    let url = pg.url("meetup");
    let store = HistoryStore::connect(&url).await?;

    let started = Instant::now();
    psql(&pg, &generate_sql(calls))?;
    // As autovacuum would have by then: hint bits set, visibility map built.
    psql(&pg, "VACUUM ANALYZE")?;
    println!(
        "generated and vacuumed {calls} calls ({} attendee rows) in {:.1} s",
        calls * 2,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(store.count_calls().await?, calls);

    // ListUserCalls, one query at a time, random users.
    let mut first = Vec::new();
    let mut deep = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let user = format!("u{}", rng % USERS);
        let t = Instant::now();
        let mut page = store.list_user_calls(&user, 20, None).await?;
        first.push(t.elapsed());
        if page.calls.len() != 20 {
            bail!("{user} has {} calls", page.calls.len());
        }
        for _ in 0..4 {
            let token = page.next.clone().context("more pages")?;
            let t = Instant::now();
            page = store.list_user_calls(&user, 20, Some(&token)).await?;
            deep.push(t.elapsed());
        }
    }
    report("ListUserCalls, first page of 20", &mut first);
    report("ListUserCalls, pages 2-5 of 20 (keyset token)", &mut deep);

    // Ingest through the store: 3 revisions of each new call, one at a time.
    let n = 5_000;
    let t = Instant::now();
    for i in 0..n {
        for version in 1..=3 {
            store.apply(&snapshot(i, version)).await?;
        }
    }
    let took = t.elapsed().as_secs_f64();
    println!(
        "ingest through the store: {} snapshots in {took:.2} s = {:.0} snapshots/s",
        n * 3,
        f64::from(n * 3) / took
    );

    // End to end: JetStream KV (every revision kept) -> meetup-history -> PostgreSQL.
    let nats = NatsServer::start().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "meetup_calls".into(),
            history: 64,
            ..Default::default()
        })
        .await?;
    let n = 5_000u32;
    for i in 0..n {
        for version in 1..=3 {
            let record = to_wire(&snapshot(100_000 + i, version));
            kv.put(
                format!("c.{}", record_id(&record)),
                record.encode_to_vec().into(),
            )
            .await?;
        }
    }
    let history = Process::spawn(
        "history",
        &bin_path("meetup-history")?,
        &[],
        &[
            ("HISTORY_LISTEN", "127.0.0.1:0".to_owned()),
            ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("HISTORY_DATABASE_URL", url.clone()),
            ("NATS_URL", nats.url()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            // The generated calls are years old: keep them.
            ("HISTORY_RETENTION_DAYS", "0".to_owned()),
        ],
    )?;
    listening_addrs(&history, &["history"]).await?;
    let t = Instant::now();
    loop {
        let stream = js.get_stream("KV_meetup_calls").await?;
        if let Ok(info) = stream.consumer_info("meetup-history").await
            && info.num_pending == 0
            && info.num_ack_pending == 0
            && info.delivered.stream_sequence >= u64::from(n * 3)
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("consumer did not drain\n{}", history.output());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t.elapsed().as_secs_f64();
    println!(
        "ingest end to end (JetStream consumer, backlog of {}): {took:.2} s = {:.0} snapshots/s",
        n * 3,
        f64::from(n * 3) / took
    );
    Ok(())
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

fn psql(pg: &PostgresServer, sql: &str) -> anyhow::Result<()> {
    let output = std::process::Command::new(bin_dir()?.join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "meetup", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Calls g0000001..: initiator u(i % USERS), attendees two other users (one
/// missed a third of the time), a second apart.
fn generate_sql(calls: u64) -> String {
    format!(
        "INSERT INTO calls (call_id, initiator_id, initiator_username, is_video, created_at_ms, ended_at_ms, version)
           SELECT 'g' || lpad(i::text, 8, '0'), 'u' || (i % {USERS}), 'user ' || (i % {USERS}),
                  i % 2, {T0} + i * 1000, {T0} + i * 1000 + 60000, 3
           FROM generate_series(1, {calls}) i;
         INSERT INTO attendees (call_id, user_id, username, position, invited_at_ms, joined_at_ms, left_at_ms, outcome, created_at_ms)
           SELECT 'g' || lpad(i::text, 8, '0'), 'u' || ((i * 7 + 1) % {USERS}), 'user', 0,
                  {T0} + i * 1000, {T0} + i * 1000 + 1000, {T0} + i * 1000 + 60000, 'answered', {T0} + i * 1000
           FROM generate_series(1, {calls}) i;
         INSERT INTO attendees (call_id, user_id, username, position, invited_at_ms, joined_at_ms, left_at_ms, outcome, created_at_ms)
           SELECT 'g' || lpad(i::text, 8, '0'), 'u' || ((i * 13 + 2) % {USERS}), 'user', 1,
                  {T0} + i * 1000, NULL, NULL, CASE WHEN i % 3 = 0 THEN 'missed' ELSE 'declined' END, {T0} + i * 1000
           FROM generate_series(1, {calls}) i;
         INSERT INTO user_calls (user_id, call_id, created_at_ms)
           SELECT initiator_id, call_id, created_at_ms FROM calls
           UNION SELECT user_id, call_id, created_at_ms FROM attendees;"
    )
}

fn snapshot(i: u32, version: u64) -> CallSnapshot {
    let created = T0 + 2_000_000_000 + i64::from(i) * 1000;
    let user = |n: u32| UserRef {
        id: format!("u{}", u64::from(n) % USERS),
        username: format!("user {n}"),
    };
    let outcome = match version {
        1 => Outcome::Ringing,
        2 => Outcome::Answered,
        _ => Outcome::Answered,
    };
    CallSnapshot {
        call_id: format!("b{i:08}"),
        initiator: user(i),
        is_video: false,
        created_at: created,
        ended_at: (version == 3).then_some(created + 60_000),
        version,
        attendees: vec![
            AttendeeSnapshot {
                user: user(i * 7 + 1),
                invited_at: Some(created),
                joined_at: (version > 1).then_some(created + 1_000),
                left_at: (version == 3).then_some(created + 60_000),
                outcome,
            },
            AttendeeSnapshot {
                user: user(i * 13 + 2),
                invited_at: Some(created),
                joined_at: None,
                left_at: None,
                outcome: if version == 3 {
                    Outcome::Missed
                } else {
                    Outcome::Ringing
                },
            },
        ],
    }
}

fn record_id(record: &wire::CallRecord) -> String {
    record
        .call
        .as_ref()
        .map(|c| c.id.clone())
        .unwrap_or_default()
}

fn to_wire(s: &CallSnapshot) -> wire::CallRecord {
    let ts = |ms: i64| prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    };
    let user = |u: &UserRef| wire::CallUser {
        id: u.id.clone(),
        username: u.username.clone(),
    };
    wire::CallRecord {
        call: Some(wire::Call {
            id: s.call_id.clone(),
            initiator: Some(user(&s.initiator)),
            is_video: s.is_video,
            created_at: Some(ts(s.created_at)),
            version: s.version,
            ended_at: s.ended_at.map(ts),
            attendees: s
                .attendees
                .iter()
                .map(|a| wire::Attendee {
                    user: Some(user(&a.user)),
                    invited_at: a.invited_at.map(ts),
                    joined_at: a.joined_at.map(ts),
                    left_at: a.left_at.map(ts),
                    outcome: match a.outcome {
                        Outcome::Ringing => 1,
                        Outcome::Answered => 2,
                        Outcome::Declined => 3,
                        Outcome::Missed => 4,
                        Outcome::Cancelled => 5,
                        Outcome::Busy => 6,
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
