//! A randomized test: many clients send random valid and invalid event sequences
//! across two gateways for a bounded time, connecting and disconnecting as they
//! go; afterwards the system's invariants hold and normal calls still work.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meetup_proto::calls::v1::ListCallsRequest;
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::presence::v1::ListUsersRequest;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_tests::sio::SioClient;
use meetup_tests::{Cluster, http_get};
use serde_json::{Value, json};

const CLIENTS: usize = 12;
const RUN_FOR: Duration = Duration::from_secs(8);

/// xorshift64*: small, seedable, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One simulated browser tab, reconnecting from time to time.
struct Actor {
    index: usize,
    url: String,
    client: Option<SioClient>,
    registered: Option<String>,
}

impl Actor {
    async fn connect(&mut self) {
        self.client = SioClient::connect(&self.url).await.ok();
        self.registered = None;
    }

    async fn step(&mut self, rng: &mut Rng, users: &[String], calls: &[String]) {
        if self.client.is_none() {
            self.connect().await;
            return;
        }
        let user = &users[rng.below(users.len())];
        let call = &calls[rng.below(calls.len())];
        let client = self.client.as_ref().expect("connected");
        let garbage = [
            json!(null),
            json!(42),
            json!("text"),
            json!([1, 2]),
            json!({}),
            json!({ "id": 7, "username": [] }),
            json!({ "callId": "x".repeat(300) }),
            json!({ "pad": "p".repeat(80_000) }),
        ];
        let events = [
            "user-joined",
            "start-call",
            "join-call",
            "leave-call",
            "webrtc-offer",
            "webrtc-answer",
            "webrtc-ice-candidate",
            "no-such-event",
        ];
        let (event, payload) = match rng.below(12) {
            0 | 1 => {
                let id = self
                    .registered
                    .clone()
                    .unwrap_or_else(|| users[self.index % users.len()].clone());
                (
                    "user-joined",
                    json!({ "id": id, "username": format!("user {id}") }),
                )
            }
            2 => (
                "start-call",
                json!({ "id": call, "initiator": {}, "participants": [{ "id": user }], "isVideo": rng.below(2) == 0 }),
            ),
            3 | 4 => ("join-call", json!({ "callId": call, "user": {} })),
            5 => ("leave-call", json!({ "callId": call, "userId": user })),
            6 | 7 => (
                ["webrtc-offer", "webrtc-answer", "webrtc-ice-candidate"][rng.below(3)],
                json!({ "callId": call, "targetUserId": user, "offer": { "sdp": "v=0" }, "answer": {}, "candidate": { "c": 1 } }),
            ),
            8 | 9 => (
                events[rng.below(events.len())],
                garbage[rng.below(garbage.len())].clone(),
            ),
            10 => {
                // Fire and forget: no ack.
                client.emit(
                    events[rng.below(events.len())],
                    &garbage[rng.below(garbage.len())],
                );
                return;
            }
            _ => {
                // Go away (a closed tab), to come back on a later step.
                self.client = None;
                self.registered = None;
                return;
            }
        };
        if event == "no-such-event" {
            // Unknown events are ignored, acks included.
            client.emit(event, &payload);
            return;
        }
        match client.emit_ack(event, &payload).await {
            Ok(ack) => {
                if event == "user-joined" && ack["ok"] == true {
                    self.registered = payload["id"].as_str().map(str::to_owned);
                }
            }
            Err(error) => {
                // The server may close an abusive connection (oversized message).
                println!(
                    "chaos: client {} lost its connection on {event}: {error}",
                    self.index
                );
                self.client = None;
                self.registered = None;
            }
        }
    }
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|u| u["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_traffic_leaves_the_system_consistent() {
    let env = [
        ("EVENTS_PER_SEC", "1000".to_owned()),
        ("EVENTS_BURST", "2000".to_owned()),
        ("CONNECTIONS_PER_IP_PER_SEC", "1000".to_owned()),
    ];
    let mut cluster = Cluster::start(2, &env).await.expect("cluster");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    println!("chaos seed {seed}");
    let users: Vec<String> = (0..8).map(|i| format!("chaos-user-{i}")).collect();
    let calls: Vec<String> = (0..4).map(|i| format!("chaos-call-{i}")).collect();

    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        let url = cluster.url(index % 2);
        let (users, calls) = (users.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng =
                Rng(seed.wrapping_add((index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
            let mut actor = Actor {
                index,
                url,
                client: None,
                registered: None,
            };
            let deadline = Instant::now() + RUN_FOR;
            let mut steps = 0u32;
            while Instant::now() < deadline {
                actor.step(&mut rng, &users, &calls).await;
                steps += 1;
            }
            (actor, steps)
        }));
    }
    let mut actors = Vec::new();
    let mut total_steps = 0;
    for task in tasks {
        let (actor, steps) = task.await.expect("actor task");
        total_steps += steps;
        actors.push(actor);
    }
    println!("chaos: {total_steps} steps by {CLIENTS} clients in {RUN_FOR:?}");
    assert!(total_steps > CLIENTS as u32 * 10, "the clients barely ran");

    // Every process is alive.
    for gateway in &mut cluster.gateways {
        assert!(
            gateway.process.is_running(),
            "{} died:\n{}",
            gateway.id,
            gateway.process.output()
        );
    }
    assert!(cluster.presence.process.is_running(), "presence died");
    assert!(cluster.calls.process.is_running(), "calls died");

    // The users online are exactly the registered live clients', on every view.
    let expected: BTreeSet<String> = actors
        .iter()
        .filter(|a| a.client.is_some())
        .filter_map(|a| a.registered.clone())
        .collect();
    let mut presence = PresenceServiceClient::connect(cluster.presence.url())
        .await
        .expect("presence");
    let mut calls_api = CallServiceClient::connect(cluster.calls.url())
        .await
        .expect("calls");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let online: BTreeSet<String> = presence
            .list_users(ListUsersRequest {})
            .await
            .expect("list users")
            .into_inner()
            .users
            .into_iter()
            .filter_map(|u| u.user.map(|u| u.id))
            .collect();
        let live_calls = calls_api
            .list_calls(ListCallsRequest {})
            .await
            .expect("list calls")
            .into_inner()
            .calls;
        let mut views_agree = true;
        for gateway in 0..2 {
            let (_, body) = http_get(cluster.gateways[gateway].addr, "/")
                .await
                .expect("GET /");
            let counts: Value = serde_json::from_str(&body).expect("json");
            views_agree &= counts["onlineUsers"].as_u64() == Some(online.len() as u64)
                && counts["activeCalls"].as_u64() == Some(live_calls.len() as u64);
        }
        let no_ghosts = online == expected;
        let no_empty_calls = live_calls.iter().all(|c| !c.participants.is_empty());
        let participants_online = live_calls
            .iter()
            .flat_map(|c| c.participants.iter())
            .all(|p| p.user.as_ref().is_some_and(|u| online.contains(&u.id)));
        if views_agree && no_ghosts && no_empty_calls && participants_online {
            println!(
                "chaos: {} users online, {} live calls, all views agree",
                online.len(),
                live_calls.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "invariants broken: online {online:?} expected {expected:?}, views agree {views_agree}, \
             no empty calls {no_empty_calls}, participants online {participants_online}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each live client's latest users-list equals the online set, once things settle.
    let live: HashMap<usize, &SioClient> = actors
        .iter()
        .filter_map(|a| a.client.as_ref().map(|c| (a.index, c)))
        .collect();
    for (index, client) in &live {
        let latest = client
            .events()
            .into_iter()
            .rev()
            .find(|e| e.event == "users-list")
            .map(|e| ids(&e.data));
        if let Some(latest) = latest {
            assert_eq!(
                latest, expected,
                "client {index} ended on a stale users-list"
            );
        }
    }

    // A normal call still works, across gateways.
    let a = SioClient::connect(&cluster.url(0)).await.expect("connect");
    let b = SioClient::connect(&cluster.url(1)).await.expect("connect");
    for (client, id) in [(&a, "after-a"), (&b, "after-b")] {
        let ack = client
            .emit_ack("user-joined", &json!({ "id": id, "username": id }))
            .await
            .expect("ack");
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let ack = a
        .emit_ack("start-call", &json!({ "id": "after-call", "initiator": {}, "participants": [{ "id": "after-b" }], "isVideo": true }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    let since = b.mark();
    let ack = a
        .emit_ack("webrtc-offer", &json!({ "callId": "after-call", "targetUserId": "after-b", "offer": { "sdp": "v=0" } }))
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    b.wait_for("webrtc-offer", since, Duration::from_secs(10), |p| {
        p["fromUserId"] == "after-a"
    })
    .await
    .expect("relay after the storm");
}
