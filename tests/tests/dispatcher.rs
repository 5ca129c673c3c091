//! The gateway's dispatcher under a presence storm: the calls watch and the
//! relays go on while hundreds of users join at once (real gateway process,
//! real sockets). Its dispatcher prefers presence changes to call changes;
//! this checks that a storm of them starves no call step into a refusal and
//! no watch into being taken for stuck. The slowest step is reported: on this
//! machine the storm's clients and the gateway share two cores, and a relay
//! (which waits on no watch) is as slow then as the steps that wait.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meetup_loadgen::storm;
use meetup_tests::sio::SioClient;
use meetup_tests::{GatewayProcess, unique_id};
use serde_json::{Value, json};

/// The slowest step's ack, in milliseconds (reported).
static SLOWEST: AtomicU64 = AtomicU64::new(0);

/// Users of the storm: enough that presence changes queue up for seconds.
const STORM_USERS: usize = 600;

async fn register(url: &str, id: &str) -> SioClient {
    let client = SioClient::connect(url).await.expect("connects");
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
    let ack = client.emit_ack(event, &payload).await.expect("ack");
    SLOWEST.fetch_max(sent.elapsed().as_millis() as u64, Ordering::Relaxed);
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

    let args = storm::StormArgs {
        gateways: vec![gw.url()],
        users: STORM_USERS,
        timeout: 120.0,
        presence: "full".into(),
        sources: 1,
    };
    let storm = tokio::spawn(async move { storm::run(&args).await });
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
    let result = storm.await.expect("storm task").expect("storm");
    println!(
        "{calls} calls during a storm of {STORM_USERS} ({:.1} s), slowest step {} ms: {result}",
        result["converge_s"].as_f64().unwrap_or_default(),
        SLOWEST.load(Ordering::Relaxed)
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
