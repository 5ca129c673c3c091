//! The cluster as separate processes (nats-server, presence, calls, gateways) and
//! what it survives: a gateway killed or stopped, a service restarted, NATS restarted.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use meetup_proto::calls::v1::GetCallRequest;
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_proto::presence::v1::{GetUserRequest, ListUsersRequest, UnregisterSessionRequest};
use meetup_tests::sio::SioClient;
use meetup_tests::{Cluster, http_get};
use serde_json::{Value, json};

const EVENT: Duration = Duration::from_secs(10);

use meetup_tests::unique_id as id;

async fn user(url: &str, user_id: &str) -> SioClient {
    let client = SioClient::connect(url).await.expect("connects");
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

/// `a` starts a call inviting `b`, `b` joins, and `a` hears of it.
async fn call(a: &SioClient, b: &SioClient, call_id: &str, b_id: &str) {
    let since = a.mark();
    let ack = a
        .emit_ack(
            "start-call",
            &json!({ "id": call_id, "initiator": {}, "participants": [{ "id": b_id }], "isVideo": true }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = b
        .emit_ack("join-call", &json!({ "callId": call_id, "user": {} }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    a.wait_for("user-joined-call", since, EVENT, |p| {
        p["user"]["id"] == b_id
    })
    .await
    .expect("a hears b joined");
}

fn position(client: &SioClient, since: usize, event: &str, pred: impl Fn(&Value) -> bool) -> usize {
    client
        .events()
        .iter()
        .enumerate()
        .skip(since)
        .find(|(_, r)| r.event == event && pred(&r.data))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("{event} not received"))
}

fn list_has(list: &Value, user_id: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|u| u["id"] == user_id))
}

async fn counts(cluster: &Cluster, gateway: usize) -> Value {
    let (status, body) = http_get(cluster.gateways[gateway].addr, "/")
        .await
        .expect("GET /");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("json")
}

#[tokio::test]
async fn users_on_two_gateways_share_calls_and_counts() {
    let cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    a.wait_for("users-list", 0, EVENT, |l| list_has(l, &b_id))
        .await
        .expect("a sees b");
    call(&a, &b, &call_id, &b_id).await;
    let since = b.mark();
    let offer = json!({ "type": "offer", "sdp": "v=0" });
    let ack = a
        .emit_ack(
            "webrtc-offer",
            &json!({ "callId": call_id, "targetUserId": b_id, "offer": offer }),
        )
        .await
        .expect("ack");
    assert_eq!(ack, json!({ "ok": true }));
    let got = b
        .wait_for("webrtc-offer", since, EVENT, |_| true)
        .await
        .expect("offer crosses gateways");
    assert_eq!(
        got,
        json!({ "callId": call_id, "fromUserId": a_id, "offer": offer })
    );
    for gateway in 0..2 {
        let c = counts(&cluster, gateway).await;
        assert_eq!(
            (c["onlineUsers"].as_u64(), c["activeCalls"].as_u64()),
            (Some(2), Some(1)),
            "gateway {gateway}: {c}"
        );
    }
}

/// No grace period: every process cleans up at once, as the original server did.
fn no_resume() -> Vec<(&'static str, String)> {
    vec![("RESUME_GRACE_MS", "0".to_owned())]
}

#[tokio::test]
async fn without_a_grace_period_a_killed_gateway_s_users_leave_within_five_seconds() {
    let mut cluster = Cluster::start_with_env(2, &no_resume(), &no_resume())
        .await
        .expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    call(&a, &b, &call_id, &b_id).await;

    let since = a.mark();
    let killed = Instant::now();
    cluster.gateways[1].process.signal("KILL").expect("kill");
    cluster.gateways[1]
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("dies");
    a.wait_for("user-left-call", since, EVENT, |p| {
        p["userId"] == b_id.as_str() && p["callId"] == call_id.as_str()
    })
    .await
    .expect("user-left-call");
    a.wait_for("users-list", since, EVENT, |l| {
        !list_has(l, &b_id) && list_has(l, &a_id)
    })
    .await
    .expect("users-list without b");
    a.wait_for("user-left", since, EVENT, |u| u == b_id.as_str())
        .await
        .expect("user-left");
    let elapsed = killed.elapsed();
    println!("SIGKILL of a gateway -> other clients' user-left: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let left_call = position(&a, since, "user-left-call", |p| {
        p["userId"] == b_id.as_str()
    });
    let left = position(&a, since, "user-left", |u| u == b_id.as_str());
    assert!(left_call < left, "user-left-call comes before user-left");
    let c = counts(&cluster, 0).await;
    assert_eq!(
        (c["onlineUsers"].as_u64(), c["activeCalls"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
}

#[tokio::test]
async fn without_a_grace_period_sigterm_closes_sockets_cleans_up_at_once_and_exits() {
    // A long timeout: only the drain itself can explain a fast cleanup.
    let env = [
        ("GATEWAY_TIMEOUT_MS", "60000".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "5".to_owned()),
        ("RESUME_GRACE_MS", "0".to_owned()),
    ];
    let mut cluster = Cluster::start_with_env(2, &env, &no_resume())
        .await
        .expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    call(&a, &b, &call_id, &b_id).await;

    let since = a.mark();
    let stopped = Instant::now();
    cluster.gateways[1].process.signal("TERM").expect("term");
    b.wait_closed(Duration::from_secs(5))
        .await
        .expect("b's socket is closed");
    a.wait_for("user-left-call", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("user-left-call");
    a.wait_for("user-left", since, EVENT, |u| u == b_id.as_str())
        .await
        .expect("user-left");
    let cleaned = stopped.elapsed();
    println!("SIGTERM of a gateway -> other clients' user-left: {cleaned:?}");
    assert!(cleaned < Duration::from_secs(3), "took {cleaned:?}");
    let status = cluster.gateways[1]
        .process
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("exits within grace");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_restarted_presence_service_loses_no_online_user() {
    let mut cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, b_id, c_id) = (id("a"), id("b"), id("c"));
    let a = user(&cluster.url(0), &a_id).await;
    let _b = user(&cluster.url(1), &b_id).await;

    cluster.presence.process.signal("KILL").expect("kill");
    cluster
        .presence
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("dies");
    for gateway in &cluster.gateways {
        gateway
            .wait_ready(false)
            .await
            .expect("not ready while presence is down");
    }
    let c = SioClient::connect(&cluster.url(0)).await.expect("connects");
    let refused = c
        .emit_ack("user-joined", &json!({ "id": c_id, "username": "c" }))
        .await
        .expect("ack");
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");

    let since = a.mark();
    let nats_url = cluster.nats.url();
    cluster
        .presence
        .restart(Some(&nats_url))
        .await
        .expect("restarts");
    for gateway in &cluster.gateways {
        gateway.wait_ready(true).await.expect("ready again");
    }
    // The state lives in JetStream: the restart changed nothing anybody sees.
    let mut presence = PresenceServiceClient::connect(cluster.presence.url())
        .await
        .expect("connects");
    let deadline = Instant::now() + EVENT;
    loop {
        let users = presence
            .list_users(ListUsersRequest {})
            .await
            .expect("lists")
            .into_inner()
            .users;
        let ids: Vec<String> = users
            .into_iter()
            .filter_map(|u| u.user.map(|u| u.id))
            .collect();
        if ids.contains(&a_id) && ids.contains(&b_id) {
            assert!(
                !ids.contains(&c_id),
                "the refused registration stayed refused"
            );
            break;
        }
        assert!(Instant::now() < deadline, "users not restored: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ack = c
        .emit_ack("user-joined", &json!({ "id": c_id, "username": "c" }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(
        !a.events()
            .iter()
            .skip(since)
            .any(|r| r.event == "user-left"),
        "nobody left while presence restarted"
    );
}

#[tokio::test]
async fn a_restarted_call_service_loses_no_live_call() {
    let mut cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    call(&a, &b, &call_id, &b_id).await;

    cluster.calls.process.signal("KILL").expect("kill");
    cluster
        .calls
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("dies");
    cluster.gateways[0]
        .wait_ready(false)
        .await
        .expect("not ready while calls is down");
    let refused = a
        .emit_ack(
            "start-call",
            &json!({ "id": id("other"), "initiator": {}, "participants": [], "isVideo": false }),
        )
        .await
        .expect("ack");
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");

    let nats_url = cluster.nats.url();
    cluster
        .calls
        .restart(Some(&nats_url))
        .await
        .expect("restarts");
    for gateway in &cluster.gateways {
        gateway.wait_ready(true).await.expect("ready again");
    }
    let mut calls = CallServiceClient::connect(cluster.calls.url())
        .await
        .expect("connects");
    let deadline = Instant::now() + EVENT;
    loop {
        let users: Vec<String> = match calls
            .get_call(GetCallRequest {
                call_id: call_id.clone(),
            })
            .await
        {
            Ok(call) => call
                .into_inner()
                .call
                .map(|c| {
                    c.participants
                        .into_iter()
                        .filter_map(|p| p.user.map(|u| u.id))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if users.contains(&a_id) && users.contains(&b_id) {
            break;
        }
        assert!(Instant::now() < deadline, "call not restored: {users:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The call works as before: relays, and leaving.
    let since = b.mark();
    let ack = a
        .emit_ack(
            "webrtc-ice-candidate",
            &json!({ "callId": call_id, "targetUserId": b_id, "candidate": { "c": 1 } }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    b.wait_for("webrtc-ice-candidate", since, EVENT, |_| true)
        .await
        .expect("relay");
    let since = a.mark();
    b.emit_ack("leave-call", &json!({ "callId": call_id, "userId": b_id }))
        .await
        .expect("ack");
    a.wait_for("user-left-call", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("user-left-call");
}

#[tokio::test]
async fn after_nats_restarts_relays_and_events_flow_again() {
    let mut cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, b_id, c_id, call_id) = (id("a"), id("b"), id("c"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    call(&a, &b, &call_id, &b_id).await;

    cluster.nats.restart().await.expect("nats restarts");
    // Relays flow again by themselves: retry until one crosses, within a bound.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let since = b.mark();
        let ack = a
            .emit_ack(
                "webrtc-offer",
                &json!({ "callId": call_id, "targetUserId": b_id, "offer": { "n": n } }),
            )
            .await
            .expect("ack");
        if ack["ok"] == true
            && b.wait_for("webrtc-offer", since, Duration::from_millis(500), |p| {
                p["offer"]["n"] == n
            })
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relays did not recover: last ack {ack}"
        );
    }
    for gateway in &cluster.gateways {
        gateway.wait_ready(true).await.expect("ready");
    }
    // Events cross the bus again too.
    let since = a.mark();
    let _c = user(&cluster.url(1), &c_id).await;
    a.wait_for("user-joined", since, EVENT, |u| u["id"] == c_id.as_str())
        .await
        .expect("user-joined from the other gateway");
}

/// nats.rs issue 1596: a KV watch that was not being polled while its server
/// restarted was reported not to resume. Here nothing at all happens during
/// the restart and for a while after it; the gateways must still see every
/// presence and call change, and route relays by them.
#[tokio::test]
async fn after_nats_restarts_while_everything_is_idle_the_gateways_still_see_changes() {
    let mut cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    cluster.nats.restart().await.expect("nats restarts");
    for gateway in &cluster.gateways {
        gateway.wait_ready(true).await.expect("ready");
    }
    // The idle time is the point of this test, not a wait for a state: no
    // client sends anything, no change is made, while the watches sit idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since = a.mark();
    let b = user(&cluster.url(1), &b_id).await;
    a.wait_for("user-joined", since, EVENT, |u| u["id"] == b_id.as_str())
        .await
        .expect("the presence watch of gateway 0 saw b come online on gateway 1");
    // b starts a call on gateway 1, a joins through gateway 0: each gateway's
    // calls watch must know it to route the relay between them.
    call(&b, &a, &call_id, &a_id).await;
    let since = a.mark();
    let ack = b
        .emit_ack(
            "webrtc-offer",
            &json!({ "callId": call_id, "targetUserId": a_id, "offer": { "idle": true } }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    a.wait_for("webrtc-offer", since, EVENT, |p| p["offer"]["idle"] == true)
        .await
        .expect("the relay crossed, routed by both gateways' call mirrors");
}

#[tokio::test]
async fn a_socket_whose_session_the_state_lost_is_closed() {
    let cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, b_id) = (id("a"), id("b"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    // b's session goes from the state while its gateway keeps the socket (as
    // when a service replica swept the gateway during a store outage that the
    // gateway rode out and took its lease back).
    let mut presence = PresenceServiceClient::connect(cluster.presence.url())
        .await
        .expect("presence");
    let online = presence
        .get_user(GetUserRequest {
            user_id: b_id.clone(),
        })
        .await
        .expect("b is online")
        .into_inner()
        .user
        .expect("user");
    let session_id = online.sessions[0].session_id.clone();
    let since = a.mark();
    presence
        .unregister_session(UnregisterSessionRequest {
            user_id: b_id.clone(),
            session_id,
            keep_away: false,
        })
        .await
        .expect("unregistered");
    a.wait_for("user-left", since, EVENT, |u| u == b_id.as_str())
        .await
        .expect("a hears b left");
    // b's gateway does not go on serving b as if online: it closes the socket
    // (b reconnects and registers again); a's socket is left alone.
    b.wait_closed(EVENT).await.expect("b's socket is closed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!a.is_closed(), "a's socket was closed too");
    let since = a.mark();
    let b = user(&cluster.url(1), &b_id).await;
    // b's ack says its own gateway has the registration; a's gateway counts it
    // once its mirror has it too, which a hearing b come back shows.
    a.wait_for("user-joined", since, EVENT, |u| u["id"] == b_id.as_str())
        .await
        .expect("a hears b is back");
    let c = counts(&cluster, 0).await;
    assert_eq!(c["onlineUsers"].as_u64(), Some(2), "{c}");
    drop(b);
}

#[tokio::test]
async fn without_a_grace_period_a_gateway_frozen_past_its_lease_closes_its_sockets_when_it_wakes() {
    let cluster = Cluster::start_with_env(2, &no_resume(), &no_resume())
        .await
        .expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let a = user(&cluster.url(0), &a_id).await;
    let b = user(&cluster.url(1), &b_id).await;
    call(&a, &b, &call_id, &b_id).await;

    let since = a.mark();
    cluster.gateways[1].process.signal("STOP").expect("stop");
    // The cluster gives up on the frozen gateway: its lease expires, and b is
    // taken out of the call and out of presence.
    a.wait_for("user-left-call", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("user-left-call");
    a.wait_for("user-left", since, EVENT, |u| u == b_id.as_str())
        .await
        .expect("user-left");
    cluster.gateways[1].process.signal("CONT").expect("cont");
    // Woken, the gateway finds its lease gone and closes b's socket instead of
    // serving it as if b were still online and in the call.
    b.wait_closed(EVENT).await.expect("b's socket is closed");
    // b comes back through the same gateway (which took a new lease) and is
    // fully online again.
    let since = a.mark();
    let b = user(&cluster.url(1), &b_id).await;
    a.wait_for("user-joined", since, EVENT, |u| u["id"] == b_id.as_str())
        .await
        .expect("a hears b is back");
    // b was taken out of the call: joining it again is news to a.
    let since = a.mark();
    let ack = b
        .emit_ack("join-call", &json!({ "callId": call_id, "user": {} }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    a.wait_for("user-joined-call", since, EVENT, |p| {
        p["user"]["id"] == b_id.as_str()
    })
    .await
    .expect("a hears b joined again");
    let c = counts(&cluster, 1).await;
    assert_eq!(c["onlineUsers"].as_u64(), Some(2), "{c}");
    // The gateway keeps its lease from now on: b stays online.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let c = counts(&cluster, 0).await;
    assert_eq!(c["onlineUsers"].as_u64(), Some(2), "{c}");
}

/// A socket that registered while its gateway was handing its sessions over
/// (SIGTERM with a grace period) is handed over too when the gateway closes it,
/// not taken for a goodbye: its client can resume through another gateway.
/// Before, the gateway closed its sockets as a plain server-side disconnect, so
/// a session registered after the hand-over began left presence and its calls
/// (found by the rolling restart under churn in `replicas.rs`: a call that had
/// just started on the stopping gateway ended, and its joiner got
/// `call-not-found`).
#[tokio::test]
async fn a_socket_that_registers_while_its_gateway_drains_is_handed_over_too() {
    let mut cluster = Cluster::start(2, &[]).await.expect("cluster");
    let (a_id, r_id) = (id("a"), id("r"));
    let _a = user(&cluster.url(0), &a_id).await;
    // The hand-over turns a away in its calls first: with the call service
    // frozen, the gateway stays in its hand-over until the service thaws.
    cluster.calls.process.signal("STOP").expect("calls frozen");
    cluster.gateways[0].process.signal("TERM").expect("term");
    cluster.gateways[0]
        .process
        .wait_for_line(EVENT, |line| line.contains("\"draining\"").then_some(()))
        .await
        .expect("the gateway drains");
    // r registers meanwhile (presence is up), after the hand-over took its list.
    let _r = user(&cluster.url(0), &r_id).await;
    cluster.calls.process.signal("CONT").expect("calls thawed");
    cluster.gateways[0]
        .process
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the gateway exits");
    let mut presence = PresenceServiceClient::connect(cluster.presence.url())
        .await
        .expect("presence");
    for user_id in [&a_id, &r_id] {
        let online = presence
            .get_user(GetUserRequest {
                user_id: user_id.clone(),
            })
            .await
            .unwrap_or_else(|status| {
                panic!("{user_id} left presence instead of being handed over: {status:?}")
            })
            .into_inner()
            .user
            .expect("user");
        let session = &online.sessions[0];
        assert!(
            session.away_until.is_some() && session.relays_counted,
            "{user_id}'s session was handed over by its gateway: {session:?}"
        );
    }
}
