//! The presence service binary over gRPC: every RPC, every error code, health,
//! reflection, and the events it publishes on a real nats-server.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use meetup_proto::bus::v1::{PresenceEvent, presence_event};
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_proto::presence::v1::*;
use meetup_tests::{NatsServer, ServiceProcess};
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
        joined_at: None,
    }
}

async fn next_event(sub: &mut async_nats::Subscriber) -> PresenceEvent {
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("event within 5 s")
        .expect("subscription open");
    PresenceEvent::decode(message.payload).expect("decodes")
}

#[tokio::test]
async fn sessions_come_and_go_and_every_change_is_published() {
    let nats = NatsServer::start().await.expect("nats-server");
    let service = ServiceProcess::start("presence", Some(&nats.url()))
        .await
        .expect("presence");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let bus = async_nats::connect(nats.url()).await.expect("nats client");
    let mut events = bus
        .subscribe("meetup.v1.events.presence")
        .await
        .expect("subscribe");
    bus.flush().await.expect("flush");
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
    let event = next_event(&mut events).await;
    assert_eq!(event.version, first.version);
    assert!(matches!(
        event.change,
        Some(presence_event::Change::Registered(ref r)) if r.first_session && r.session.as_ref().map(|s| s.session_id.as_str()) == Some("s1")
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
    assert_eq!(next_event(&mut events).await.version, first.version + 1);

    presence
        .register_session(register("u2", "Bob", "gw-a", "s3"))
        .await
        .expect("registers");
    next_event(&mut events).await;

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
    assert_eq!(list.version, 3);
    assert!(!list.instance_id.is_empty());

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

    let gone = presence
        .unregister_session(UnregisterSessionRequest {
            session_id: "s2".into(),
        })
        .await
        .expect("unregisters")
        .into_inner();
    assert!(!gone.last_session);
    let event = next_event(&mut events).await;
    assert!(
        matches!(event.change, Some(presence_event::Change::Unregistered(ref u)) if !u.last_session && u.user_id == "u1")
    );

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
    for _ in 0..2 {
        let event = next_event(&mut events).await;
        assert!(
            matches!(event.change, Some(presence_event::Change::Unregistered(ref u)) if u.last_session)
        );
    }
    let counts = presence
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!((counts.online_users, counts.sessions), (0, 0));
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
    let taken = presence
        .register_session(register("u2", "Bob", "g", "s1"))
        .await
        .expect_err("session belongs to u1");
    assert_eq!(taken.code(), Code::AlreadyExists);

    let missing = presence
        .unregister_session(UnregisterSessionRequest {
            session_id: "nope".into(),
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
async fn a_restored_session_keeps_its_original_online_time() {
    let service = ServiceProcess::start("presence", None)
        .await
        .expect("presence");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let mut presence = client(&service).await;
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let restored = presence
        .register_session(RegisterSessionRequest {
            joined_at: Some(an_hour_ago.into()),
            ..register("u1", "Ann", "g", "s1")
        })
        .await
        .expect("registers")
        .into_inner();
    assert_eq!(
        restored.user.and_then(|u| u.joined_at),
        Some(an_hour_ago.into())
    );
    // For a user already online the claim is ignored.
    let later = presence
        .register_session(RegisterSessionRequest {
            joined_at: Some(std::time::SystemTime::UNIX_EPOCH.into()),
            ..register("u1", "Ann", "g", "s2")
        })
        .await
        .expect("registers")
        .into_inner();
    assert_eq!(
        later.user.and_then(|u| u.joined_at),
        Some(an_hour_ago.into())
    );
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
