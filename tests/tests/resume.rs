//! Calls survive disconnects (real processes: nats-server, the services, two
//! gateways): a socket that goes without saying goodbye leaves its session
//! away for `RESUME_GRACE_MS`; a new socket resumes it on any gateway, with its
//! resume token or (clients that know nothing of tokens) as the user's only
//! away session. Peers hear `user-reconnecting` and `user-reconnected`, never a
//! leave; relays sent meanwhile arrive after the resume, in order.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use meetup_tests::Cluster;
use meetup_tests::sio::SioClient;
use serde_json::{Value, json};

const EVENT: Duration = Duration::from_secs(10);
/// The grace period of these clusters: short, so that expiry is seen quickly.
const GRACE_MS: u64 = 4000;

use meetup_tests::unique_id as id;

fn grace() -> Vec<(&'static str, String)> {
    vec![("RESUME_GRACE_MS", GRACE_MS.to_string())]
}

async fn cluster() -> Cluster {
    Cluster::start_with_env(2, &grace(), &grace())
        .await
        .expect("cluster")
}

/// Registers `user_id` as a client that speaks resume; returns the ack.
async fn join(client: &SioClient, user_id: &str, resume: Value) -> Value {
    let mut payload = json!({ "id": user_id, "username": user_id, "resumeToken": null });
    if let Value::Object(extra) = resume {
        payload.as_object_mut().unwrap().extend(extra);
    }
    client.emit_ack("user-joined", &payload).await.expect("ack")
}

async fn user(url: &str, user_id: &str) -> (SioClient, String) {
    let client = SioClient::connect(url).await.expect("connects");
    let ack = join(&client, user_id, json!({})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["resumed"], false, "{ack}");
    let token = ack["resumeToken"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    (client, token)
}

/// `a` starts a call with `others`, who all join; everyone hears everyone.
async fn call(a: &SioClient, others: &[(&SioClient, &str)], call_id: &str) {
    let invited: Vec<Value> = others.iter().map(|(_, id)| json!({ "id": id })).collect();
    let ack = a
        .emit_ack(
            "start-call",
            &json!({ "id": call_id, "initiator": {}, "participants": invited, "isVideo": true }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    for (client, user_id) in others {
        let since = a.mark();
        let ack = client
            .emit_ack("join-call", &json!({ "callId": call_id, "user": {} }))
            .await
            .expect("ack");
        assert_eq!(ack["ok"], true, "{ack}");
        a.wait_for("user-joined-call", since, EVENT, |p| {
            p["user"]["id"] == *user_id
        })
        .await
        .expect("joined");
    }
}

/// Sends an ICE candidate from `from` to `to_id` and returns its ack.
async fn relay(from: &SioClient, call_id: &str, to_id: &str, n: u64) -> Value {
    from.emit_ack(
        "webrtc-ice-candidate",
        &json!({ "callId": call_id, "targetUserId": to_id, "candidate": { "n": n } }),
    )
    .await
    .expect("ack")
}

/// SIGKILLs gateway `n` and waits for it to be gone.
async fn kill_gateway(cluster: &mut Cluster, n: usize) {
    cluster.gateways[n].process.signal("KILL").expect("kill");
    cluster.gateways[n]
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("dies");
}

/// Panics if `client` heard, from `since` on, that `user_id` left.
fn assert_no_leave(client: &SioClient, since: usize, user_id: &str) {
    for event in client.events().into_iter().skip(since) {
        let about = match event.event.as_str() {
            "user-left" => event.data == user_id,
            "user-left-call" | "call-left" => event.data["userId"] == user_id,
            "user-joined" => event.data["id"] == user_id,
            "user-joined-call" => event.data["user"]["id"] == user_id,
            _ => false,
        };
        assert!(
            !about,
            "{} {}: a resume is not a leave or a join",
            event.event, event.data
        );
    }
}

/// `ack` resumed b's session, a heard `user-reconnected`, and a's relay
/// reaches the resumed b.
async fn assert_back_in_call(
    a: &SioClient,
    b: &SioClient,
    ack: &Value,
    b_id: &str,
    call_id: &str,
    since: usize,
) {
    assert_eq!(
        (&ack["ok"], &ack["resumed"]),
        (&json!(true), &json!(true)),
        "{ack}"
    );
    a.wait_for("user-reconnected", since, EVENT, |p| p["userId"] == b_id)
        .await
        .expect("user-reconnected");
    assert_eq!(relay(a, call_id, b_id, 1).await["ok"], true);
    b.wait_for("webrtc-ice-candidate", 0, EVENT, |p| {
        p["candidate"]["n"] == 1
    })
    .await
    .expect("a's relay reaches the resumed b");
}

#[tokio::test]
async fn sigterm_hands_sessions_over_and_the_call_goes_on_through_the_other_gateway() {
    let mut cluster = cluster().await;
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let (a, _) = user(&cluster.url(0), &a_id).await;
    let (b, b_token) = user(&cluster.url(1), &b_id).await;
    call(&a, &[(&b, &b_id)], &call_id).await;
    // b numbers what it receives: the relays carry `seq`.
    assert_eq!(relay(&a, &call_id, &b_id, 0).await["ok"], true);
    let first = b
        .wait_for("webrtc-ice-candidate", 0, EVENT, |p| {
            p["candidate"]["n"] == 0
        })
        .await
        .expect("relay");
    let last_seq = first["seq"].as_u64().expect("seq");

    let since = a.mark();
    cluster.gateways[1].process.signal("TERM").expect("term");
    b.wait_closed(EVENT)
        .await
        .expect("the draining gateway closes b");
    a.wait_for("user-reconnecting", since, EVENT, |p| {
        p["userId"] == b_id.as_str() && p["callId"] == call_id.as_str()
    })
    .await
    .expect("user-reconnecting");
    // Relays to b while it is away are kept.
    for n in 1..=5 {
        let ack = relay(&a, &call_id, &b_id, n).await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    // b comes back through the other gateway with its token.
    let b = SioClient::connect(&cluster.url(0)).await.expect("connects");
    let resumed_at = Instant::now();
    let ack = join(
        &b,
        &b_id,
        json!({ "resumeToken": b_token, "lastSeq": last_seq }),
    )
    .await;
    println!("resume ack in {:?}", resumed_at.elapsed());
    assert_eq!(
        (&ack["ok"], &ack["resumed"], &ack["recovered"]),
        (&json!(true), &json!(true), &json!(true)),
        "{ack}"
    );
    assert!(ack["resumeToken"].as_str().is_some_and(|t| t != b_token));
    a.wait_for("user-reconnected", since, EVENT, |p| {
        p["userId"] == b_id.as_str() && p["callId"] == call_id.as_str()
    })
    .await
    .expect("user-reconnected");
    // The kept relays, in order, numbered on from what b had seen; then a new one.
    assert_eq!(relay(&a, &call_id, &b_id, 6).await["ok"], true);
    b.wait_for("webrtc-ice-candidate", 0, EVENT, |p| {
        p["candidate"]["n"] == 6
    })
    .await
    .expect("the new relay");
    let got: Vec<(u64, u64)> = b
        .events()
        .iter()
        .filter(|e| e.event == "webrtc-ice-candidate")
        .map(|e| {
            (
                e.data["candidate"]["n"].as_u64().unwrap(),
                e.data["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, u64)> = (1..=6).map(|n| (n, last_seq + n)).collect();
    assert_eq!(got, expected, "kept relays first, in order, numbered on");
    // The call goes on both ways; nobody left or joined.
    assert_eq!(relay(&b, &call_id, &a_id, 7).await["ok"], true);
    a.wait_for("webrtc-ice-candidate", since, EVENT, |p| {
        p["candidate"]["n"] == 7
    })
    .await
    .expect("b relays to a");
    assert_no_leave(&a, since, &b_id);
    let status = cluster.gateways[1]
        .process
        .wait_exit(Duration::from_secs(12))
        .await
        .expect("exits");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn after_sigkill_of_its_gateway_a_user_resumes_elsewhere_and_one_who_never_returns_leaves() {
    let mut cluster = cluster().await;
    let (a_id, b_id, c_id, call_id) = (id("a"), id("b"), id("c"), id("call"));
    let (a, _) = user(&cluster.url(0), &a_id).await;
    let (b, _) = user(&cluster.url(1), &b_id).await;
    let (c, _) = user(&cluster.url(1), &c_id).await;
    call(&a, &[(&b, &b_id), (&c, &c_id)], &call_id).await;

    let since = a.mark();
    let killed = Instant::now();
    kill_gateway(&mut cluster, 1).await;
    drop((b, c));
    for user_id in [&b_id, &c_id] {
        a.wait_for("user-reconnecting", since, EVENT, |p| {
            p["userId"] == user_id.as_str()
        })
        .await
        .expect("user-reconnecting");
    }
    let detected = killed.elapsed();
    println!("SIGKILL of a gateway -> peers' user-reconnecting: {detected:?}");
    // b knows nothing of tokens: its user id with one away session is enough.
    let b = SioClient::connect(&cluster.url(0)).await.expect("connects");
    let ack = b
        .emit_ack("user-joined", &json!({ "id": b_id, "username": b_id }))
        .await
        .expect("ack");
    assert_back_in_call(&a, &b, &ack, &b_id, &call_id, since).await;
    // c never comes back: cleaned up as before, once the grace has run out.
    a.wait_for(
        "user-left-call",
        since,
        Duration::from_millis(GRACE_MS) + EVENT,
        |p| p["userId"] == c_id.as_str(),
    )
    .await
    .expect("user-left-call for c");
    a.wait_for("user-left", since, EVENT, |u| u == c_id.as_str())
        .await
        .expect("user-left for c");
    let gone = killed.elapsed();
    println!("SIGKILL -> user-left of a user who never came back: {gone:?}");
    assert!(
        gone < detected + Duration::from_millis(GRACE_MS + 2000),
        "cleanup took {gone:?} (detected after {detected:?})"
    );
    assert_no_leave(&a, since, &b_id);
}

/// B's gateway dies and B resumes through the other gateway with its token
/// before the cluster noticed the death (its session still live, not away):
/// A, in the call with B, still hears `user-reconnected` (its signaling path
/// changed, relays sent meanwhile may be gone), and nobody hears a leave.
#[tokio::test]
async fn a_resume_before_the_crash_was_noticed_is_told_to_the_peers() {
    // A lease that outlives the test: the death is certainly not noticed.
    let mut env = grace();
    env.push(("GATEWAY_TIMEOUT_MS", "60000".to_owned()));
    let mut cluster = Cluster::start_with_env(2, &env, &env)
        .await
        .expect("cluster");
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let (a, _) = user(&cluster.url(0), &a_id).await;
    let (b, token) = user(&cluster.url(1), &b_id).await;
    call(&a, &[(&b, &b_id)], &call_id).await;

    let since = a.mark();
    kill_gateway(&mut cluster, 1).await;
    drop(b);
    // At once: the lease of the dead gateway is still alive for a while.
    let b = SioClient::connect(&cluster.url(0)).await.expect("connects");
    let ack = join(&b, &b_id, json!({ "resumeToken": token })).await;
    assert_back_in_call(&a, &b, &ack, &b_id, &call_id, since).await;
    assert!(
        a.events()
            .into_iter()
            .skip(since)
            .all(|e| e.event != "user-reconnecting" || e.data["userId"] != b_id.as_str()),
        "the takeover came before the death was noticed: nobody was told b went away"
    );
    assert_no_leave(&a, since, &b_id);
}

#[tokio::test]
async fn a_gateway_frozen_past_its_lease_closes_its_sockets_and_they_resume() {
    let cluster = cluster().await;
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let (a, _) = user(&cluster.url(0), &a_id).await;
    let (b, b_token) = user(&cluster.url(1), &b_id).await;
    call(&a, &[(&b, &b_id)], &call_id).await;

    let since = a.mark();
    cluster.gateways[1].process.signal("STOP").expect("stop");
    a.wait_for("user-reconnecting", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("the cluster gave up on b's gateway");
    cluster.gateways[1].process.signal("CONT").expect("cont");
    // Woken, the gateway finds its lease gone: it does not go on serving b as
    // if nothing happened, it closes the socket, and b resumes.
    b.wait_closed(EVENT).await.expect("b's socket is closed");
    let b = SioClient::connect(&cluster.url(1)).await.expect("connects");
    let ack = join(&b, &b_id, json!({ "resumeToken": b_token })).await;
    // Fully in the call again, both ways.
    assert_back_in_call(&a, &b, &ack, &b_id, &call_id, since).await;
    assert_eq!(relay(&b, &call_id, &a_id, 2).await["ok"], true);
    a.wait_for("webrtc-ice-candidate", since, EVENT, |p| {
        p["candidate"]["n"] == 2
    })
    .await
    .expect("b to a");
    assert_no_leave(&a, since, &b_id);
    // It stays that way past the grace period.
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 1000)).await;
    assert_no_leave(&a, since, &b_id);
    assert!(!b.is_closed());
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_a_goodbye_leaves_at_once() {
    let cluster = cluster().await;
    let (a_id, b_id, call_id) = (id("a"), id("b"), id("call"));
    let (a, a_token) = user(&cluster.url(0), &a_id).await;
    let (b, b_token) = user(&cluster.url(1), &b_id).await;
    call(&a, &[(&b, &b_id)], &call_id).await;
    let since = a.mark();
    b.drop_transport();
    a.wait_for("user-reconnecting", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("user-reconnecting");
    // A forged token, and a's token for b: refused, nothing changes.
    let intruder = SioClient::connect(&cluster.url(0)).await.expect("connects");
    for token in ["forged-token", a_token.as_str()] {
        let ack = join(&intruder, &b_id, json!({ "resumeToken": token })).await;
        assert_eq!(ack["error"]["code"], "resume-refused", "{ack}");
    }
    // b's own token does not let a take b's session either.
    let ack = join(&intruder, &a_id, json!({ "resumeToken": b_token })).await;
    assert_eq!(ack["error"]["code"], "resume-refused", "{ack}");
    assert_no_leave(&a, since, &b_id);
    let b = SioClient::connect(&cluster.url(1)).await.expect("connects");
    let ack = join(&b, &b_id, json!({ "resumeToken": b_token })).await;
    assert_eq!(ack["resumed"], true, "{ack}");
    a.wait_for("user-reconnected", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("user-reconnected");
    // A deliberate disconnect (the client's goodbye) leaves at once.
    let since = a.mark();
    let left = Instant::now();
    drop(b);
    a.wait_for("user-left-call", since, EVENT, |p| {
        p["userId"] == b_id.as_str()
    })
    .await
    .expect("user-left-call");
    a.wait_for("user-left", since, EVENT, |u| u == b_id.as_str())
        .await
        .expect("user-left");
    assert!(
        left.elapsed() < Duration::from_millis(GRACE_MS),
        "{:?}",
        left.elapsed()
    );
}

/// The relay log's JetStream stream (`gateway/src/resume.rs`).
const MISSED_STREAM: &str = "meetup_missed_relays";

#[tokio::test]
async fn a_slow_write_to_the_relay_log_does_not_hold_up_the_other_relays_of_the_gateway() {
    use futures::StreamExt;

    let cluster = cluster().await;
    let (a_id, b_id, c_id, d_id) = (id("a"), id("b"), id("c"), id("d"));
    let (call_ab, call_cd) = (id("call-ab"), id("call-cd"));
    let (a, _) = user(&cluster.url(0), &a_id).await;
    let (b, _) = user(&cluster.url(1), &b_id).await;
    let (c, _) = user(&cluster.url(0), &c_id).await;
    let (d, _) = user(&cluster.url(1), &d_id).await;
    call(&a, &[(&b, &b_id)], &call_ab).await;
    call(&c, &[(&d, &d_id)], &call_cd).await;

    // The log stops answering: its stream is gone and something that never
    // acknowledges takes its writes, so each write waits for its timeout.
    let nats = async_nats::connect(cluster.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats.clone());
    js.delete_stream(MISSED_STREAM)
        .await
        .expect("stream deleted");
    let mut writes = nats.subscribe("meetup.missed.>").await.expect("subscribed");
    nats.flush().await.expect("flushed");
    // The services freeze, so that b's gateway cannot mark b's session away:
    // a's relays for b keep going to b's gateway, which finds b's socket gone.
    cluster.presence.process.signal("STOP").expect("stop");
    cluster.calls.process.signal("STOP").expect("stop");
    b.drop_transport();
    let held = async {
        loop {
            assert_eq!(relay(&a, &call_ab, &b_id, 1).await["ok"], true);
            if let Ok(Some(write)) =
                tokio::time::timeout(Duration::from_millis(200), writes.next()).await
            {
                return write;
            }
        }
    };
    let held = tokio::time::timeout(EVENT, held)
        .await
        .expect("b's gateway writes a relay for b to the log");

    // While that write waits, a relay between two other users through the same
    // gateway arrives at once, not after the write's timeout (5 s).
    let sent = Instant::now();
    assert_eq!(relay(&c, &call_cd, &d_id, 7).await["ok"], true);
    let got = d
        .wait_for("webrtc-ice-candidate", 0, Duration::from_secs(3), |p| {
            p["candidate"]["n"] == 7
        })
        .await;
    println!("relay while a log write waits: {:?}", sent.elapsed());
    cluster.presence.process.signal("CONT").expect("cont");
    cluster.calls.process.signal("CONT").expect("cont");
    assert!(
        got.is_ok(),
        "d's relay waited for an unrelated log write ({:?})",
        sent.elapsed()
    );
    drop(held);
}
