//! The call service binary over gRPC: every RPC, every error code, and the
//! records it writes to the calls bucket of a real nats-server's JetStream.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use meetup_proto::bus::v1::{CallRecord, LeaveReason, call_change};
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::calls::v1::*;
use meetup_tests::{BucketWatch, NatsServer, ServiceProcess};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const SERVICE: &str = "meetup.calls.v1.CallService";

fn participant(user: &str, session: &str, gateway: &str) -> Participant {
    Participant {
        user: Some(CallUser {
            id: user.into(),
            username: format!("name-{user}"),
        }),
        session_id: session.into(),
        gateway_id: gateway.into(),
        ..Default::default()
    }
}

fn start(call: &str, initiator: Participant, invited: &[&str]) -> StartCallRequest {
    StartCallRequest {
        call_id: call.into(),
        initiator: Some(initiator),
        is_video: true,
        invited_user_ids: invited.iter().map(|s| s.to_string()).collect(),
    }
}

fn join(call: &str, p: Participant) -> JoinCallRequest {
    JoinCallRequest {
        call_id: call.into(),
        participant: Some(p),
    }
}

/// The next change of the calls bucket (call keys only): its change and revision.
async fn next_event(watch: &mut BucketWatch) -> Event {
    loop {
        let (key, value, revision) = watch.next().await.expect("a change");
        if !key.starts_with("c.") {
            continue;
        }
        let record = value.map(|v| CallRecord::decode(v).expect("decodes"));
        return Event {
            sequence: revision,
            change: record.and_then(|r| r.change).and_then(|c| c.change),
        };
    }
}

struct Event {
    sequence: u64,
    change: Option<call_change::Change>,
}

async fn client(service: &ServiceProcess) -> CallServiceClient<Channel> {
    CallServiceClient::connect(service.url())
        .await
        .expect("connects")
}

#[tokio::test]
async fn a_call_lives_and_ends_and_every_change_is_in_the_bucket() {
    let nats = NatsServer::start().await.expect("nats-server");
    let no_sweep = [("SWEEP_INTERVAL_MS", "0".to_owned())];
    let service = ServiceProcess::start_env("calls", Some(&nats.url()), &no_sweep)
        .await
        .expect("calls");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let mut events = BucketWatch::start(&nats.url(), "meetup_calls")
        .await
        .expect("watch");
    let mut calls = client(&service).await;

    let started = calls
        .start_call(start("c1", participant("a", "sa", "gw1"), &["b", "c"]))
        .await
        .expect("starts")
        .into_inner();
    let call = started.call.expect("call");
    assert_eq!(call.participants.len(), 1);
    assert_eq!(call.invited_user_ids, ["b", "c"]);
    assert!(call.is_video);
    let event = next_event(&mut events).await;
    assert_eq!(event.sequence, started.revision);
    assert!(matches!(
        event.change,
        Some(call_change::Change::Started(_))
    ));

    let joined = calls
        .join_call(join("c1", participant("b", "sb", "gw2")))
        .await
        .expect("joins")
        .into_inner();
    assert!(joined.joined);
    assert_eq!(joined.call.as_ref().map(|c| c.participants.len()), Some(2));
    let event = next_event(&mut events).await;
    assert_eq!(event.sequence, joined.revision);
    assert!(matches!(event.change, Some(call_change::Change::Joined(_))));

    let again = calls
        .join_call(join("c1", participant("b", "sb", "gw2")))
        .await
        .expect("no-op")
        .into_inner();
    assert!(!again.joined);
    assert_eq!(again.revision, 0, "nothing written");

    let got = calls
        .get_call(GetCallRequest {
            call_id: "c1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.call.map(|c| c.version), Some(2));
    let listed = calls
        .list_calls(ListCallsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.calls.len(), 1);
    let counts = calls
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!((counts.active_calls, counts.participants), (1, 2));

    let left = calls
        .leave_call(LeaveCallRequest {
            call_id: "c1".into(),
            session_id: "sb".into(),
        })
        .await
        .expect("leaves")
        .into_inner();
    assert!(left.left && !left.ended);
    let event = next_event(&mut events).await;
    assert!(
        matches!(event.change, Some(call_change::Change::Left(ref l)) if l.reason == LeaveReason::Left as i32)
    );
    let not_in = calls
        .leave_call(LeaveCallRequest {
            call_id: "c1".into(),
            session_id: "sb".into(),
        })
        .await
        .expect("no-op")
        .into_inner();
    assert!(!not_in.left);

    calls
        .join_call(join("c1", participant("c", "sc", "gw2")))
        .await
        .expect("joins");
    next_event(&mut events).await;
    let removed = calls
        .remove_participant(RemoveParticipantRequest {
            call_id: "c1".into(),
            user_id: "c".into(),
        })
        .await
        .expect("removes")
        .into_inner();
    assert_eq!((removed.sessions_removed, removed.ended), (1, false));
    let event = next_event(&mut events).await;
    assert!(
        matches!(event.change, Some(call_change::Change::Left(ref l)) if l.reason == LeaveReason::Removed as i32)
    );

    let ended = calls
        .end_call(EndCallRequest {
            call_id: "c1".into(),
        })
        .await
        .expect("ends")
        .into_inner();
    assert_eq!(ended.call.map(|c| c.participants.len()), Some(1));
    let event = next_event(&mut events).await;
    assert!(matches!(event.change, Some(call_change::Change::Ended(_))));
    let gone = calls
        .get_call(GetCallRequest {
            call_id: "c1".into(),
        })
        .await
        .expect_err("ended");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn sessions_and_gateways_are_removed_from_every_call() {
    let service = ServiceProcess::start("calls", None).await.expect("calls");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let mut calls = client(&service).await;
    calls
        .start_call(start("c1", participant("a", "sa", "gw1"), &[]))
        .await
        .expect("starts");
    calls
        .start_call(start("c2", participant("b", "sb", "gw2"), &[]))
        .await
        .expect("starts");
    calls
        .join_call(join("c2", participant("a", "sa", "gw1")))
        .await
        .expect("joins");
    calls
        .join_call(join("c2", participant("d", "sd", "gw1")))
        .await
        .expect("joins");

    let removed = calls
        .remove_session(RemoveSessionRequest {
            session_id: "sa".into(),
            call_ids: vec![],
            keep_away: false,
        })
        .await
        .expect("removes")
        .into_inner();
    assert_eq!(removed.call_ids, ["c1", "c2"]);
    assert!(removed.revision > 0);
    let gone = calls
        .get_call(GetCallRequest {
            call_id: "c1".into(),
        })
        .await
        .expect_err("left empty");
    assert_eq!(gone.code(), Code::NotFound);

    let swept = calls
        .remove_gateway(RemoveGatewayRequest {
            gateway_id: "gw1".into(),
        })
        .await
        .expect("sweeps")
        .into_inner();
    assert_eq!(swept.sessions_removed, 1);
    let counts = calls
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!((counts.active_calls, counts.participants), (1, 1));
}

#[tokio::test]
async fn two_replicas_race_and_exactly_one_wins() {
    let nats = NatsServer::start().await.expect("nats-server");
    let env = [
        ("SWEEP_INTERVAL_MS", "0".to_owned()),
        ("MAX_CALL_PARTICIPANTS", "2".to_owned()),
        ("MAX_CALLS_PER_USER", "1".to_owned()),
    ];
    let one = ServiceProcess::start_env("calls", Some(&nats.url()), &env)
        .await
        .expect("replica 1");
    let two = ServiceProcess::start_env("calls", Some(&nats.url()), &env)
        .await
        .expect("replica 2");
    one.wait_healthy(SERVICE).await.expect("healthy");
    two.wait_healthy(SERVICE).await.expect("healthy");
    let (a, b) = (client(&one).await, client(&two).await);
    let pick = |i: usize| {
        if i.is_multiple_of(2) {
            a.clone()
        } else {
            b.clone()
        }
    };
    for round in 0..15 {
        // The same call id started on both replicas at once.
        let call_id = format!("call-{round}");
        let starts = (0..4).map(|i| {
            let mut c = pick(i);
            let request = start(
                &call_id,
                participant(&format!("u{round}-{i}"), &format!("s{round}-{i}"), "gw"),
                &[],
            );
            async move { c.start_call(request).await }
        });
        let results = futures::future::join_all(starts).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::AlreadyExists);
        }
        // The last free seat.
        let joins = (0..4).map(|i| {
            let mut c = pick(i);
            let request = join(
                &call_id,
                participant(&format!("j{round}-{i}"), &format!("js{round}-{i}"), "gw"),
            );
            async move { c.join_call(request).await }
        });
        let results = futures::future::join_all(joins).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        // One user's last allowed live call, under several ids at once.
        let mine = (0..4).map(|i| {
            let mut c = pick(i);
            let request = start(
                &format!("mine-{round}-{i}"),
                participant(&format!("solo{round}"), "s", "gw"),
                &[],
            );
            async move { c.start_call(request).await }
        });
        let results = futures::future::join_all(mine).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::ResourceExhausted);
        }
    }
}

#[tokio::test]
async fn each_failure_has_its_precise_code() {
    let service = ServiceProcess::start("calls", None).await.expect("calls");
    service.wait_healthy(SERVICE).await.expect("healthy");
    let mut calls = client(&service).await;

    let invalid = [
        start("", participant("a", "s", "g"), &[]),
        start("c", participant("", "s", "g"), &[]),
        start("c", participant("a", "", "g"), &[]),
        start("c", participant("a", "s", ""), &[]),
        StartCallRequest {
            initiator: None,
            ..start("c", participant("a", "s", "g"), &[])
        },
        start("c", participant("a", "s", "g"), &[""]),
    ];
    for bad in invalid {
        let status = calls.start_call(bad).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    }
    let too_many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let status = calls
        .start_call(start("c", participant("a", "s", "g"), &refs))
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);

    calls
        .start_call(start("c", participant("a", "s", "g"), &[]))
        .await
        .expect("starts");
    let duplicate = calls
        .start_call(start("c", participant("b", "s2", "g"), &[]))
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let unknown = calls
        .join_call(join("nope", participant("b", "s2", "g")))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let no_participant = calls
        .join_call(JoinCallRequest {
            call_id: "c".into(),
            participant: None,
        })
        .await
        .expect_err("missing participant");
    assert_eq!(no_participant.code(), Code::InvalidArgument);
    for status in [
        calls
            .get_call(GetCallRequest {
                call_id: "nope".into(),
            })
            .await
            .expect_err("unknown"),
        calls
            .end_call(EndCallRequest {
                call_id: "nope".into(),
            })
            .await
            .expect_err("unknown"),
        calls
            .remove_participant(RemoveParticipantRequest {
                call_id: "nope".into(),
                user_id: "a".into(),
            })
            .await
            .expect_err("unknown call"),
        calls
            .remove_participant(RemoveParticipantRequest {
                call_id: "c".into(),
                user_id: "zed".into(),
            })
            .await
            .expect_err("not a participant"),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    }
    for status in [
        calls
            .leave_call(LeaveCallRequest {
                call_id: String::new(),
                session_id: "s".into(),
            })
            .await
            .expect_err("empty"),
        calls
            .remove_session(RemoveSessionRequest {
                session_id: String::new(),
                call_ids: vec![],
                keep_away: false,
            })
            .await
            .expect_err("empty"),
        calls
            .remove_gateway(RemoveGatewayRequest {
                gateway_id: String::new(),
            })
            .await
            .expect_err("empty"),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let counts = calls
        .get_counts(GetCountsRequest {})
        .await
        .expect("counts")
        .into_inner();
    assert_eq!((counts.active_calls, counts.participants), (1, 1));
}

/// Each replica answers a session's calls and the counts from its own index,
/// fed by its watch of JetStream: right after another replica's writes, it
/// has caught up with them (issue 23).
#[tokio::test]
async fn a_replica_finds_at_once_what_another_replica_wrote() {
    let nats = NatsServer::start().await.expect("nats-server");
    let no_sweep = [("SWEEP_INTERVAL_MS", "0".to_owned())];
    let one = ServiceProcess::start_env("calls", Some(&nats.url()), &no_sweep)
        .await
        .expect("replica 1");
    let two = ServiceProcess::start_env("calls", Some(&nats.url()), &no_sweep)
        .await
        .expect("replica 2");
    one.wait_healthy(SERVICE).await.expect("healthy");
    two.wait_healthy(SERVICE).await.expect("healthy");
    let (mut a, mut b) = (client(&one).await, client(&two).await);
    for round in 0..10 {
        let (call, session) = (format!("seen-{round}"), format!("ss-{round}"));
        a.start_call(start(
            &call,
            participant("host", &format!("h-{round}"), "gw"),
            &[],
        ))
        .await
        .expect("starts");
        a.join_call(join(&call, participant("guest", &session, "gw")))
            .await
            .expect("joins");
        let counts = b
            .get_counts(GetCountsRequest {})
            .await
            .expect("counts")
            .into_inner();
        assert_eq!(
            (counts.active_calls, counts.participants),
            (1, 2),
            "round {round}"
        );
        let removed = b
            .remove_session(RemoveSessionRequest {
                session_id: session.clone(),
                call_ids: vec![],
                keep_away: false,
            })
            .await
            .expect("removes")
            .into_inner();
        assert_eq!(
            removed.call_ids,
            std::slice::from_ref(&call),
            "round {round}"
        );
        b.end_call(EndCallRequest {
            call_id: call.clone(),
        })
        .await
        .expect("ends");
        let counts = a
            .get_counts(GetCountsRequest {})
            .await
            .expect("counts")
            .into_inner();
        assert_eq!(counts.active_calls, 0, "round {round}");
    }
}
