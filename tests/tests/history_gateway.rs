//! Call history through the gateway (embedded mode): `get-call-history` shows
//! the registered user's own calls only, whatever the payload says, and
//! `missed-calls` comes after registration when due, and not again once seen.
//!
//! Each scenario runs twice: with the gateway's in-process history, and with a
//! `meetup-history` process behind `HISTORY_URL`. The records are written the
//! way the ingest writes them, through the history store, into the SQLite file
//! the history reads (the call service does not publish call snapshots yet, see
//! issue 9).

use std::time::{Duration, Instant};

use anyhow::bail;
use meetup_history::{AttendeeSnapshot, CallSnapshot, HistoryStore, Outcome, UserRef};
use meetup_tests::sio::SioClient;
use meetup_tests::{GatewayProcess, Process, bin_path, listening_addrs, wait_grpc_health};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    gateway: GatewayProcess,
    /// The history service, in the remote mode.
    _history: Option<Process>,
    store: HistoryStore,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy)]
enum Mode {
    InProcess,
    Remote,
}

async fn setup(name: &str, mode: Mode) -> anyhow::Result<Setup> {
    let dir = std::env::temp_dir().join(format!("meetup-hgw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/history.db", dir.display());
    // Created (and migrated) first, so the processes do not race on it.
    let store = HistoryStore::connect(&url).await?;
    let (history, env) = match mode {
        Mode::InProcess => (None, vec![("HISTORY_DATABASE_URL", url)]),
        Mode::Remote => {
            let history = Process::spawn(
                "history",
                &bin_path("meetup-history")?,
                &[],
                &[
                    ("HISTORY_LISTEN", "127.0.0.1:0".to_owned()),
                    ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
                    ("HISTORY_DATABASE_URL", url),
                    ("LOG_FORMAT", "json".to_owned()),
                    ("RUST_LOG", "info".to_owned()),
                ],
            )?;
            let addr = listening_addrs(&history, &["history"]).await?["history"];
            let history_url = format!("http://{addr}");
            wait_grpc_health(&history_url, "meetup.history.v1.HistoryService").await?;
            (Some(history), vec![("HISTORY_URL", history_url)])
        }
    };
    let gateway = GatewayProcess::start(&format!("gw-{name}"), &env).await?;
    Ok(Setup {
        gateway,
        _history: history,
        store,
        dir,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn user(id: &str) -> UserRef {
    UserRef {
        id: id.to_owned(),
        username: format!("name-{id}"),
    }
}

/// An ended call from `from` to `to`, with `to`'s outcome.
fn ended_call(id: &str, from: &str, to: &[(&str, Outcome)], created: i64) -> CallSnapshot {
    CallSnapshot {
        call_id: id.to_owned(),
        initiator: user(from),
        is_video: false,
        created_at: created,
        ended_at: Some(created + 30_000),
        version: 5,
        attendees: to
            .iter()
            .map(|(who, outcome)| AttendeeSnapshot {
                user: user(who),
                invited_at: Some(created),
                joined_at: (*outcome == Outcome::Answered).then_some(created + 1_000),
                left_at: (*outcome == Outcome::Answered).then_some(created + 30_000),
                outcome: *outcome,
            })
            .collect(),
    }
}

async fn register(gateway: &GatewayProcess, id: &str) -> anyhow::Result<SioClient> {
    let client = SioClient::connect(&gateway.url()).await?;
    let ack = client
        .emit_ack(
            "user-joined",
            &json!({ "id": id, "username": format!("name-{id}") }),
        )
        .await?;
    if ack["ok"] != true {
        bail!("registration failed: {ack}");
    }
    Ok(client)
}

fn call_ids(ack: &Value) -> Vec<String> {
    ack["calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| c["callId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// True when `user_id` started the call or is among its attendees.
fn involves(call: &Value, user_id: &str) -> bool {
    call["initiator"]["id"] == user_id
        || call["attendees"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["id"] == user_id))
}

#[tokio::test]
async fn users_read_only_their_own_history_in_process() -> anyhow::Result<()> {
    own_history_only(setup("own-local", Mode::InProcess).await?).await
}

#[tokio::test]
async fn users_read_only_their_own_history_through_the_service() -> anyhow::Result<()> {
    own_history_only(setup("own-remote", Mode::Remote).await?).await
}

#[tokio::test]
async fn missed_calls_arrive_once_after_registration_in_process() -> anyhow::Result<()> {
    missed_calls_once(setup("missed-local", Mode::InProcess).await?).await
}

#[tokio::test]
async fn missed_calls_arrive_once_after_registration_through_the_service() -> anyhow::Result<()> {
    missed_calls_once(setup("missed-remote", Mode::Remote).await?).await
}

async fn own_history_only(s: Setup) -> anyhow::Result<()> {
    let t = now_ms() - 3_600_000;
    for call in [
        ended_call("bob-1", "alice", &[("bob", Outcome::Answered)], t),
        ended_call("carol-1", "carol", &[("dave", Outcome::Missed)], t + 1_000),
        ended_call("bob-2", "bob", &[("carol", Outcome::Declined)], t + 2_000),
        ended_call("alice-1", "alice", &[("dave", Outcome::Missed)], t + 3_000),
        ended_call(
            "bob-3",
            "erin",
            &[("bob", Outcome::Missed), ("frank", Outcome::Answered)],
            t + 4_000,
        ),
    ] {
        s.store.apply(&call).await?;
    }

    let anonymous = SioClient::connect(&s.gateway.url()).await?;
    let refused = anonymous.emit_ack("get-call-history", &json!({})).await?;
    assert_eq!(refused["error"]["code"], "not-registered");

    let bob = register(&s.gateway, "bob").await?;
    let all = bob.emit_ack("get-call-history", &json!({})).await?;
    assert_eq!(all["ok"], true, "{all}");
    assert_eq!(call_ids(&all), ["bob-3", "bob-2", "bob-1"]);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["calls"][0]["outcome"], "missed");
    assert_eq!(all["calls"][1]["direction"], "outgoing");

    // Whatever names another user, the answer is bob's own calls.
    for payload in [
        json!({ "userId": "carol" }),
        json!({ "id": "carol", "user": { "id": "carol" }, "limit": 100 }),
        json!({ "userId": "alice", "targetUserId": "alice", "callId": "alice-1" }),
    ] {
        let ack = bob.emit_ack("get-call-history", &payload).await?;
        assert_eq!(call_ids(&ack), ["bob-3", "bob-2", "bob-1"], "{payload}");
    }
    // A page token taken from someone else's history only positions bob's own.
    let alice_page = s.store.list_user_calls("alice", 1, None).await?;
    let foreign = alice_page.next.unwrap_or_default();
    let ack = bob
        .emit_ack("get-call-history", &json!({ "before": foreign }))
        .await?;
    assert_eq!(ack["ok"], true, "{ack}");
    let calls = ack["calls"].as_array().cloned().unwrap_or_default();
    assert!(calls.iter().all(|c| involves(c, "bob")), "{ack}");
    // Forged tokens and bad fields are refused.
    for payload in [
        json!({ "before": "forged!" }),
        json!({ "limit": 0 }),
        json!({ "limit": "all" }),
        json!({ "before": 12 }),
        json!("bob"),
    ] {
        let ack = bob.emit_ack("get-call-history", &payload).await?;
        assert_eq!(ack["error"]["code"], "invalid-payload", "{payload}: {ack}");
    }

    // Pages: newest first, `next` leads on without repeats.
    let first = bob
        .emit_ack("get-call-history", &json!({ "limit": 2 }))
        .await?;
    assert_eq!(call_ids(&first), ["bob-3", "bob-2"]);
    let second = bob
        .emit_ack(
            "get-call-history",
            &json!({ "limit": 2, "before": first["next"] }),
        )
        .await?;
    assert_eq!(call_ids(&second), ["bob-1"]);
    assert_eq!(second["next"], Value::Null);

    // Nobody sees a call they were not part of.
    let frank = register(&s.gateway, "frank").await?;
    let ack = frank
        .emit_ack("get-call-history", &json!({ "userId": "bob" }))
        .await?;
    assert_eq!(call_ids(&ack), ["bob-3"]);
    Ok(())
}

async fn missed_calls_once(s: Setup) -> anyhow::Result<()> {
    let t = now_ms() - 3_600_000;
    s.store
        .apply(&ended_call("m1", "alice", &[("dave", Outcome::Missed)], t))
        .await?;
    s.store
        .apply(&ended_call(
            "m2",
            "carol",
            &[("dave", Outcome::Missed), ("erin", Outcome::Answered)],
            t + 1_000,
        ))
        .await?;
    s.store
        .apply(&ended_call(
            "a1",
            "carol",
            &[("dave", Outcome::Answered)],
            t + 2_000,
        ))
        .await?;

    // The event comes before the user-joined acknowledgement.
    let dave = register(&s.gateway, "dave").await?;
    let missed = dave.wait_for("missed-calls", 0, WAIT, |_| true).await?;
    assert_eq!(missed["count"], 2, "{missed}");
    assert_eq!(call_ids(&missed), ["m2", "m1"]);
    assert_eq!(missed["calls"][0]["outcome"], "missed");
    let erin = register(&s.gateway, "erin").await?;
    assert!(
        erin.events().iter().all(|e| e.event != "missed-calls"),
        "erin answered"
    );

    // A second socket of dave while the first is open: already seen.
    let again = register(&s.gateway, "dave").await?;
    assert!(again.events().iter().all(|e| e.event != "missed-calls"));

    // Dave leaves (one socket, then the other); his mark moves to the end of
    // each session.
    drop(again);
    let first_end = wait_mark_after(&s, "dave", t + 1_000).await?;
    drop(dave);
    let ended_at = wait_mark_after(&s, "dave", first_end).await?;
    // A call he missed while he was still online is not news; one after is.
    s.store
        .apply(&ended_call(
            "m3",
            "alice",
            &[("dave", Outcome::Missed)],
            ended_at - 10,
        ))
        .await?;
    s.store
        .apply(&ended_call(
            "m4",
            "alice",
            &[("dave", Outcome::Missed)],
            ended_at + 10,
        ))
        .await?;
    let dave = register(&s.gateway, "dave").await?;
    let missed = dave.wait_for("missed-calls", 0, WAIT, |_| true).await?;
    assert_eq!(
        (missed["count"].clone(), call_ids(&missed)),
        (json!(1), vec!["m4".to_owned()])
    );
    drop(dave);
    // Seen: the next registration has nothing to report.
    wait_mark_after(&s, "dave", ended_at + 10).await?;
    let dave = register(&s.gateway, "dave").await?;
    assert!(dave.events().iter().all(|e| e.event != "missed-calls"));
    Ok(())
}

/// Polls `user_id`'s seen mark until it is later than `after`; returns it.
async fn wait_mark_after(s: &Setup, user_id: &str, after: i64) -> anyhow::Result<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mark = s.store.seen_until(user_id).await?.unwrap_or(0);
        if mark > after {
            return Ok(mark);
        }
        if Instant::now() >= deadline {
            bail!(
                "{user_id}'s seen mark never passed {after}\n{}",
                s.gateway.process.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
