//! The gateway's dispatcher under a presence storm: the calls watch and the
//! relays go on while hundreds of users join at once (real gateway process,
//! real sockets; the storm's clients are the load generator, a process of its
//! own). No call step may be refused, and no watch taken for stuck: a waiter
//! that gives up on the mirror during the storm finds it working through the
//! burst, which must not make the dispatcher read a whole bucket again. The
//! slowest ack of each step is reported, not asserted.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meetup_tests::sio::SioClient;
use meetup_tests::{GatewayProcess, bin_path, unique_id};
use serde_json::{Value, json};

/// The slowest step's ack, in milliseconds (reported).
static SLOWEST: AtomicU64 = AtomicU64::new(0);
/// The slowest ack of each step, in milliseconds (reported).
static SLOWEST_BY_STEP: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Users of the storm: enough that presence changes queue up for seconds.
const STORM_USERS: usize = 400;

async fn register(url: &str, id: &str) -> SioClient {
    // Presence deltas: a client on full lists would have its acks queued
    // behind megabytes of users-list during the storm.
    let client = SioClient::connect_with_auth(url, Some(&json!({ "presence": "delta" })))
        .await
        .expect("connects");
    let ack = client
        .emit_ack("user-joined", &json!({ "id": id, "username": id }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    client
}

/// Sends `event` and returns its ack, named `step`.
async fn step(
    step: &'static str,
    client: &SioClient,
    event: &str,
    payload: Value,
) -> (&'static str, Value) {
    let sent = std::time::Instant::now();
    // This checks what the storm does to the answers, not how fast they come
    // on an overloaded machine: the wait is long.
    let ack = match client
        .emit_ack_within(event, &payload, Duration::from_secs(60))
        .await
    {
        Ok(ack) => ack,
        Err(error) => json!({ "ok": false, "error": error.to_string() }),
    };
    let took = sent.elapsed().as_millis() as u64;
    SLOWEST.fetch_max(took, Ordering::Relaxed);
    let mut by_step = SLOWEST_BY_STEP.lock().unwrap();
    let slowest = by_step.entry(step).or_default();
    *slowest = (*slowest).max(took);
    drop(by_step);
    (step, ack)
}

/// One call from start to leave: every step's ack, in order.
async fn one_call(
    a: &SioClient,
    a_id: &str,
    b: &SioClient,
    b_id: &str,
) -> Vec<(&'static str, Value)> {
    let call_id = unique_id("call");
    vec![
        step(
            "start-call",
            a,
            "start-call",
            json!({ "id": call_id, "initiator": {}, "participants": [{ "id": b_id }], "isVideo": false }),
        )
        .await,
        step("join-call", b, "join-call", json!({ "callId": call_id, "user": {} })).await,
        step(
            "relay",
            a,
            "webrtc-ice-candidate",
            json!({ "callId": call_id, "targetUserId": b_id, "candidate": { "n": 1 } }),
        )
        .await,
        step(
            "leave-call a",
            a,
            "leave-call",
            json!({ "callId": call_id, "userId": a_id }),
        )
        .await,
        step(
            "leave-call b",
            b,
            "leave-call",
            json!({ "callId": call_id, "userId": b_id }),
        )
        .await,
    ]
}

#[tokio::test]
async fn calls_and_relays_go_on_through_a_join_storm() {
    let gw = GatewayProcess::start(
        "storm-gw",
        &[
            ("EVENTS_PER_SEC", "100000".into()),
            ("EVENTS_BURST", "100000".into()),
            ("CONNECTIONS_PER_IP_PER_SEC", "100000".into()),
        ],
    )
    .await
    .expect("gateway");
    let (a_id, b_id) = (unique_id("a"), unique_id("b"));
    let a = register(&gw.url(), &a_id).await;
    let b = register(&gw.url(), &b_id).await;

    // The storm's 400 clients run in a process of their own (the load
    // generator), so that their work does not slow this test's two clients.
    let storm = tokio::process::Command::new(bin_path("meetup-loadgen").expect("loadgen"))
        .args(["storm", "--gateway", &gw.url(), "--users"])
        .arg(STORM_USERS.to_string())
        .args(["--timeout", "120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the load generator starts");
    let storm = tokio::spawn(storm.wait_with_output());
    let mut calls = 0;
    let mut refused = Vec::new();
    while !storm.is_finished() {
        for (step, ack) in one_call(&a, &a_id, &b, &b_id).await {
            if ack["ok"] != true {
                refused.push(format!("{step}: {ack}"));
            }
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = storm.await.expect("storm task").expect("storm");
    assert!(output.status.success(), "the storm failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().expect("a result line"))
        .expect("the result is JSON");
    println!(
        "{calls} calls during a storm of {STORM_USERS} ({:.1} s), slowest step {} ms {:?}: {result}",
        result["converge_s"].as_f64().unwrap_or_default(),
        SLOWEST.load(Ordering::Relaxed),
        SLOWEST_BY_STEP.lock().unwrap()
    );
    assert_eq!(
        result["converged_clients"].as_u64(),
        Some(STORM_USERS as u64),
        "{result}"
    );
    assert!(calls > 0, "the storm ended before a call was made");
    assert!(
        refused.is_empty(),
        "{} steps refused during the storm: {:?}",
        refused.len(),
        refused.iter().take(5).collect::<Vec<_>>()
    );
    let log = gw.all_output();
    assert!(
        !log.contains("watch stuck"),
        "a watch was taken for stuck during the storm:\n{}",
        log.lines()
            .filter(|l| l.contains("watch stuck"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
