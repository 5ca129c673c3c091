//! The calling extension across the cluster's processes: an invitee's devices
//! on two gateways, and invitations that outlive a restart of the call service
//! (the ring timeout included), since their state lives in JetStream.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use meetup_tests::Cluster;
use meetup_tests::sio::SioClient;
use serde_json::{Value, json};

const EVENT: Duration = Duration::from_secs(10);
/// The call service's ring timeout in this test.
const RING_TIMEOUT: Duration = Duration::from_secs(6);

use meetup_tests::unique_id as id;

/// A socket that asked for the calling extension, registered as `user_id`.
async fn caller(url: &str, user_id: &str) -> SioClient {
    let client = SioClient::connect_with_auth(url, Some(&json!({ "calling": true })))
        .await
        .expect("connects");
    let ack = client
        .emit_ack(
            "user-joined",
            &json!({ "id": user_id, "username": user_id }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    client
}

fn for_call<'a>(call_id: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |p| p["callId"] == call_id
}

#[tokio::test]
async fn invitations_hold_across_gateways_and_outlive_a_call_service_restart() {
    let timeout = RING_TIMEOUT.as_millis().to_string();
    let mut cluster = Cluster::start_with_env(2, &[], &[("RING_TIMEOUT_MS", timeout)])
        .await
        .expect("cluster");
    let (a_id, b_id, c_id, call_id) = (id("a"), id("b"), id("c"), id("call"));
    let a = caller(&cluster.url(0), &a_id).await;
    let b_here = caller(&cluster.url(0), &b_id).await;
    let b_there = caller(&cluster.url(1), &b_id).await;
    let c = caller(&cluster.url(1), &c_id).await;
    let (since_b1, since_b2, since_c) = (b_here.mark(), b_there.mark(), c.mark());
    let ack = a
        .emit_ack(
            "start-call",
            &json!({ "id": call_id, "initiator": {}, "isVideo": true,
                     "participants": [{ "id": b_id }, { "id": c_id }] }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    let rung = Instant::now();
    for (socket, since) in [(&b_here, since_b1), (&b_there, since_b2), (&c, since_c)] {
        let ring = socket
            .wait_for("incoming-call", since, EVENT, for_call(&call_id))
            .await
            .expect("every device rings");
        assert_eq!(ring["initiator"]["id"], a_id.as_str(), "{ring}");
    }

    // The call service dies and comes back: the invitations are where they were.
    cluster.calls.process.signal("KILL").expect("kill");
    cluster
        .calls
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("dies");
    let nats_url = cluster.nats.url();
    cluster
        .calls
        .restart(Some(&nats_url))
        .await
        .expect("restarts");
    for gateway in &cluster.gateways {
        gateway.wait_ready(true).await.expect("ready again");
    }

    // b declines on one gateway: both of b's devices stop, the caller hears it.
    let (since_a, since_b1) = (a.mark(), b_here.mark());
    let ack = b_there
        .emit_ack("decline-call", &json!({ "callId": call_id }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    let declined = a
        .wait_for("call-declined", since_a, EVENT, for_call(&call_id))
        .await
        .expect("the caller hears the decline");
    assert_eq!(declined["userId"], b_id.as_str());
    let ended = b_here
        .wait_for("invite-ended", since_b1, EVENT, for_call(&call_id))
        .await
        .expect("b's other device stops ringing");
    assert_eq!(ended["reason"], "declined");

    // c never answers: its ring times out on the restarted service's clock.
    let unanswered = a
        .wait_for(
            "call-unanswered",
            since_a,
            RING_TIMEOUT + EVENT,
            for_call(&call_id),
        )
        .await
        .expect("the caller hears nobody answered");
    assert_eq!(unanswered["userId"], c_id.as_str());
    assert!(
        rung.elapsed() >= RING_TIMEOUT - Duration::from_millis(500),
        "missed after {:?}, before the ring timeout",
        rung.elapsed()
    );
    let missed = c
        .wait_for("invite-ended", since_c, EVENT, for_call(&call_id))
        .await
        .expect("c stops ringing");
    assert_eq!(missed["reason"], "missed");
}
