//! The presence service binary over gRPC: every RPC, every error code, health,
//! reflection, and the records it writes to the presence bucket of a real
//! nats-server's JetStream.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use meetup_proto::bus::v1::{UserRecord, presence_change};
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_proto::presence::v1::*;
use meetup_tests::{BucketWatch, NatsServer, ServiceProcess};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const SERVICE: &str = "meetup.presence.v1.PresenceService";

async fn client(service: &ServiceProcess) -> PresenceServiceClient<Channel> {
    PresenceServiceClient::connect(service.url())
        .await
        .expect("connects")
}

fn register(user: &str, name: &str, gateway: &str, session: &str) -> RegisterSessionRequest {
    RegisterSessionRequest {
        user_id: user.into(),
        username: name.into(),
        gateway_id: gateway.into(),
        session_id: session.into(),
        ..Default::default()
    }
}

/// The next change of the presence bucket: the user's record (`None` once the
/// key is deleted) and its revision.
async fn next_record(watch: &mut BucketWatch) -> (Option<UserRecord>, u64) {
    let (_, value, revision) = watch.next().await.expect("a change");
    (
        value.map(|v| UserRecord::decode(v).expect("decodes")),
        revision,
    )
}

fn sessions(record: &Option<UserRecord>) -> usize {
    record
        .as_ref()
        .and_then(|r| r.user.as_ref())
        .map_or(0, |u| u.sessions.len())
}

#[tokio::test]
async fn sessions_come_and_go_and_every_change_is_in_the_bucket() {
    let nats = NatsServer::start().await.expect("nats-server");
    // No sweeps: the gateways named here hold no lease.
    let no_sweep = [("SWEEP_INTERVAL_MS", "0".to_owned())];
    let service = ServiceProcess::start_env("presence", Some(&nats.url()), &no_sweep)
        .await
        .expect("presence");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let mut watch = BucketWatch::start(&nats.url(), "meetup_presence")
        .await
        .expect("watch");
    let mut presence = client(&service).await;

    let first = presence
        .register_session(register("u1", "Ann", "gw-a", "s1"))
        .await
        .expect("registers")
        .into_inner();
    assert!(first.first_session);
    let user = first.user.clone().expect("user");
    assert_eq!((user.id.as_str(), user.username.as_str()), ("u1", "Ann"));
    assert!(user.joined_at.is_some());
    let (record, revision) = next_record(&mut watch).await;
    assert_eq!(revision, first.revision);
    assert!(matches!(
        record.as_ref().and_then(|r| r.change.as_ref()).and_then(|c| c.change.as_ref()),
        Some(presence_change::Change::Registered(r)) if r.first_session && r.session.as_ref().map(|s| s.session_id.as_str()) == Some("s1")
    ));

    let second = presence
        .register_session(register("u1", "Annie", "gw-b", "s2"))
        .await
        .expect("registers")
        .into_inner();
    assert!(!second.first_session);
    assert_eq!(
        second.user.as_ref().map(|u| u.username.as_str()),
        Some("Annie")
    );
    assert_eq!(
        second.user.as_ref().and_then(|u| u.joined_at),
        user.joined_at
    );
    let (record, revision) = next_record(&mut watch).await;
    assert_eq!((sessions(&record), revision), (2, second.revision));

    presence
        .register_session(register("u2", "Bob", "gw-a", "s3"))
        .await
        .expect("registers");
    next_record(&mut watch).await;

    let list = presence
        .list_users(ListUsersRequest {})
        .await
        .expect("lists")
        .into_inner();
    let ids: Vec<_> = list
        .users
        .iter()
        .filter_map(|u| u.user.as_ref())
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(ids, ["u1", "u2"]);
    assert_eq!(list.users[0].sessions.len(), 2);

    let ann = presence
        .get_user(GetUserRequest {
            user_id: "u1".into(),
        })
        .await
        .expect("found")
        .into_inner()
        .user
        .expect("user");
    let gateways: Vec<_> = ann.sessions.iter().map(|s| s.gateway_id.as_str()).collect();
    assert_eq!(gateways, ["gw-a", "gw-b"]);

    let counts = presence
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!(
        (counts.online_users, counts.sessions, counts.gateways),
        (2, 3, 2)
    );

    // Without the user id, the service finds the session's user itself.
    let gone = presence
        .unregister_session(UnregisterSessionRequest {
            session_id: "s2".into(),
            user_id: String::new(),
            keep_away: false,
        })
        .await
        .expect("unregisters")
        .into_inner();
    assert!(!gone.last_session);
    assert_eq!(gone.user_id, "u1");
    let (record, _) = next_record(&mut watch).await;
    assert_eq!(sessions(&record), 1);

    let swept = presence
        .unregister_gateway(UnregisterGatewayRequest {
            gateway_id: "gw-a".into(),
        })
        .await
        .expect("sweeps")
        .into_inner();
    assert_eq!(swept.sessions_removed, 2);
    let mut offline = swept.users_gone_offline.clone();
    offline.sort();
    assert_eq!(offline, ["u1", "u2"]);
    // Each user: an empty record (offline), then its key deleted.
    let mut deleted = 0;
    for _ in 0..4 {
        let (record, _) = next_record(&mut watch).await;
        assert_eq!(sessions(&record), 0);
        deleted += usize::from(record.is_none());
    }
    assert_eq!(deleted, 2);
    let counts = presence
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!((counts.online_users, counts.sessions), (0, 0));
}

#[tokio::test]
async fn two_replicas_share_one_state_and_its_limits() {
    let nats = NatsServer::start().await.expect("nats-server");
    let env = [
        ("SWEEP_INTERVAL_MS", "0".to_owned()),
        ("MAX_SOCKETS_PER_USER", "3".to_owned()),
    ];
    let one = ServiceProcess::start_env("presence", Some(&nats.url()), &env)
        .await
        .expect("replica 1");
    let two = ServiceProcess::start_env("presence", Some(&nats.url()), &env)
        .await
        .expect("replica 2");
    one.wait_healthy(SERVICE).await.expect("healthy");
    two.wait_healthy(SERVICE).await.expect("healthy");
    let (a, b) = (client(&one).await, client(&two).await);
    // Many rounds of the same race: the last socket a user may open, asked of
    // both replicas at once. Exactly the limit wins every time.
    for round in 0..20 {
        let user = format!("u{round}");
        let attempts = (0..6usize).map(|i| {
            let mut c = if i.is_multiple_of(2) {
                a.clone()
            } else {
                b.clone()
            };
            let request = register(&user, "N", "gw", &format!("{user}-s{i}"));
            async move { c.register_session(request).await }
        });
        let results = futures::future::join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 3, "round {round}: {results:?}");
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::ResourceExhausted);
        }
        let seen = b
            .clone()
            .get_user(GetUserRequest { user_id: user })
            .await
            .expect("online")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(seen.sessions.len(), 3);
    }
}

/// Each replica answers the lookups of a session's owner, a gateway's
/// sessions and the counts from an index it keeps from the bucket's watch:
/// right after another replica's write, it has caught up with it.
#[tokio::test]
async fn a_replica_answers_at_once_from_its_index_what_another_wrote() {
    let nats = NatsServer::start().await.expect("nats-server");
    let no_sweep = [("SWEEP_INTERVAL_MS", "0".to_owned())];
    let one = ServiceProcess::start_env("presence", Some(&nats.url()), &no_sweep)
        .await
        .expect("replica 1");
    let two = ServiceProcess::start_env("presence", Some(&nats.url()), &no_sweep)
        .await
        .expect("replica 2");
    one.wait_healthy(SERVICE).await.expect("healthy");
    two.wait_healthy(SERVICE).await.expect("healthy");
    let (mut a, mut b) = (client(&one).await, client(&two).await);
    let counts = |c: &mut PresenceServiceClient<Channel>| {
        let mut c = c.clone();
        async move {
            let n = c
                .get_counts(GetCountsRequest {})
                .await
                .expect("counts")
                .into_inner();
            (n.online_users, n.sessions, n.gateways)
        }
    };
    for round in 0..10u32 {
        let user = format!("idx-u{round}");
        a.register_session(register(&user, "N", "idx-gw", &format!("{user}-s1")))
            .await
            .expect("registers");
        a.register_session(register(&user, "N", "idx-gw2", &format!("{user}-s2")))
            .await
            .expect("registers");
        assert_eq!(
            counts(&mut b).await,
            (round + 1, round + 2, 2),
            "round {round}"
        );
        // The owner, asked of the other replica without the user's id.
        let gone = b
            .unregister_session(UnregisterSessionRequest {
                session_id: format!("{user}-s2"),
                ..Default::default()
            })
            .await
            .expect("its owner found")
            .into_inner();
        assert_eq!(
            (gone.user_id.as_str(), gone.last_session),
            (user.as_str(), false)
        );
        assert_eq!(
            counts(&mut a).await,
            (round + 1, round + 1, 1),
            "round {round}"
        );
    }
    // A gateway going, asked of the other replica: every session of it.
    let gone = a
        .unregister_gateway(UnregisterGatewayRequest {
            gateway_id: "idx-gw".into(),
        })
        .await
        .expect("unregisters")
        .into_inner();
    assert_eq!(
        (gone.sessions_removed, gone.users_gone_offline.len()),
        (10, 10)
    );
    assert_eq!(counts(&mut b).await, (0, 0, 0));
}

#[tokio::test]
async fn each_failure_has_its_precise_code() {
    let service = ServiceProcess::start("presence", None)
        .await
        .expect("presence without NATS");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let mut presence = client(&service).await;

    for bad in [
        register("", "n", "g", "s"),
        register("u", "", "g", "s"),
        register("u", "n", "", "s"),
        register("u", "n", "g", ""),
        register(&"x".repeat(129), "n", "g", "s"),
    ] {
        let status = presence.register_session(bad).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(!status.message().is_empty());
    }

    presence
        .register_session(register("u1", "Ann", "g", "s1"))
        .await
        .expect("registers");

    let missing = presence
        .unregister_session(UnregisterSessionRequest {
            session_id: "nope".into(),
            user_id: String::new(),
            keep_away: false,
        })
        .await
        .expect_err("unknown session");
    assert_eq!(missing.code(), Code::NotFound);
    let offline = presence
        .get_user(GetUserRequest {
            user_id: "nobody".into(),
        })
        .await
        .expect_err("offline user");
    assert_eq!(offline.code(), Code::NotFound);
    let empty = presence
        .get_user(GetUserRequest {
            user_id: String::new(),
        })
        .await
        .expect_err("empty id");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let no_gateway = presence
        .unregister_gateway(UnregisterGatewayRequest {
            gateway_id: String::new(),
        })
        .await
        .expect_err("empty gateway id");
    assert_eq!(no_gateway.code(), Code::InvalidArgument);

    // Nothing above changed the state beyond the one good registration.
    let counts = presence
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!((counts.online_users, counts.sessions), (1, 1));
}

#[tokio::test]
async fn reflection_lists_the_api_and_health() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let service = ServiceProcess::start("presence", None)
        .await
        .expect("presence");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let channel = Channel::from_shared(service.url())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&SERVICE), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test]
async fn sigterm_stops_the_service_cleanly() {
    let mut service = ServiceProcess::start("presence", None)
        .await
        .expect("presence");
    service.wait_healthy(SERVICE).await.expect("healthy");
    service.process.signal("TERM").expect("signal");
    let status = service
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(status.success(), "exit status {status}");
}
