//! The calling extension over gRPC, against the real service binaries and a
//! real nats-server: invitations and their states (ringing, declined,
//! cancelled, accepted, missed), in-call chat, the `WatchCalls` and
//! `WatchPresence` streams (snapshot, changes, resume from a position), and
//! `SendToUser` pushes on a gateway's bus subject.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use meetup_proto::bus::v1::Push;
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::calls::v1::{
    CallEvent, CallUser, CancelInvitesRequest, DeclineInviteRequest, EndCallRequest, InviteState,
    InviteToCallRequest, JoinCallRequest, LeaveCallRequest, ListInvitesRequest, Participant,
    SendCallMessageRequest, SenderKind, StartCallRequest, WatchCallsRequest, call_event,
    send_call_message_request::Sender,
};
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_proto::presence::v1::{
    PresenceEvent, RegisterSessionRequest, SendToUserRequest, UnregisterSessionRequest,
    WatchPresenceRequest, presence_event,
};
use meetup_tests::{NatsServer, ServiceProcess};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

const CALLS: &str = "meetup.calls.v1.CallService";
const PRESENCE: &str = "meetup.presence.v1.PresenceService";
/// Bound for one expected event or reply; a bound, not a wait.
const WAIT: Duration = Duration::from_secs(10);

/// The `meetup-reason` a service error carries (`meetup_platform::reason::KEY`;
/// this crate does not depend on the runtime).
fn reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get("meetup-reason")
        .and_then(|v| v.to_str().ok())
}

#[track_caller]
fn assert_refused(status: &Status, code: Code, why: &str) {
    assert_eq!(
        (status.code(), reason(status)),
        (code, Some(why)),
        "{}",
        status.message()
    );
}

/// Both services on one nats-server. No sweeps: the gateways named here hold
/// no lease, and a sweep would remove their sessions.
async fn start_presence(nats: &NatsServer) -> ServiceProcess {
    let env = [("SWEEP_INTERVAL_MS", "0".to_owned())];
    let presence = ServiceProcess::start_env("presence", Some(&nats.url()), &env)
        .await
        .expect("presence");
    presence.wait_healthy(PRESENCE).await.expect("healthy");
    presence
}

async fn start_calls(nats: &NatsServer, ring_timeout_ms: u64) -> ServiceProcess {
    let env = [
        ("SWEEP_INTERVAL_MS", "0".to_owned()),
        ("RING_TIMEOUT_MS", ring_timeout_ms.to_string()),
    ];
    let calls = ServiceProcess::start_env("calls", Some(&nats.url()), &env)
        .await
        .expect("calls");
    calls.wait_healthy(CALLS).await.expect("healthy");
    calls
}

async fn calls_client(service: &ServiceProcess) -> CallServiceClient<Channel> {
    CallServiceClient::connect(service.url())
        .await
        .expect("connects")
}

async fn presence_client(service: &ServiceProcess) -> PresenceServiceClient<Channel> {
    PresenceServiceClient::connect(service.url())
        .await
        .expect("connects")
}

fn participant(user: &str, session: &str) -> Participant {
    Participant {
        user: Some(CallUser {
            id: user.into(),
            username: format!("name-{user}"),
        }),
        session_id: session.into(),
        gateway_id: "gw-1".into(),
        ..Default::default()
    }
}

fn start(call: &str, user: &str, session: &str, invited: &[&str]) -> StartCallRequest {
    StartCallRequest {
        call_id: call.into(),
        initiator: Some(participant(user, session)),
        is_video: false,
        invited_user_ids: invited.iter().map(|s| s.to_string()).collect(),
    }
}

fn join(call: &str, user: &str, session: &str) -> JoinCallRequest {
    JoinCallRequest {
        call_id: call.into(),
        participant: Some(participant(user, session)),
    }
}

fn invite(call: &str, users: &[&str], session: &str) -> InviteToCallRequest {
    InviteToCallRequest {
        call_id: call.into(),
        user_ids: users.iter().map(|s| s.to_string()).collect(),
        session_id: session.into(),
        r#as: None,
    }
}

fn decline(call: &str, user: &str) -> DeclineInviteRequest {
    DeclineInviteRequest {
        call_id: call.into(),
        user_id: user.into(),
    }
}

fn register(user: &str, gateway: &str, session: &str) -> RegisterSessionRequest {
    RegisterSessionRequest {
        user_id: user.into(),
        username: format!("name-{user}"),
        gateway_id: gateway.into(),
        session_id: session.into(),
        ..Default::default()
    }
}

fn unregister(user: &str, session: &str) -> UnregisterSessionRequest {
    UnregisterSessionRequest {
        session_id: session.into(),
        user_id: user.into(),
        keep_away: false,
    }
}

fn sorted(ids: &[String]) -> Vec<&str> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids
}

/// Every invitation of a call: the invitee, who rang them, and the state.
async fn invites(
    calls: &mut CallServiceClient<Channel>,
    call: &str,
) -> Vec<(String, String, InviteState)> {
    calls
        .list_invites(ListInvitesRequest {
            call_id: call.into(),
        })
        .await
        .expect("lists")
        .into_inner()
        .invites
        .into_iter()
        .map(|i| {
            let ringing = i.state == InviteState::Ringing as i32;
            assert_eq!(i.ring_until.is_some(), ringing, "ring_until while ringing");
            assert!(i.invited_at.is_some());
            (
                i.user.map(|u| u.id).unwrap_or_default(),
                i.invited_by.map(|u| u.id).unwrap_or_default(),
                InviteState::try_from(i.state).expect("a known state"),
            )
        })
        .collect()
}

fn row(user: &str, by: &str, state: InviteState) -> (String, String, InviteState) {
    (user.to_owned(), by.to_owned(), state)
}

/// The next message of a server stream, within [`WAIT`].
async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event within the bound")
        .expect("the stream did not fail")
        .expect("the stream did not end")
}

async fn watch_calls(
    calls: &mut CallServiceClient<Channel>,
    after_position: u64,
) -> Streaming<CallEvent> {
    calls
        .watch_calls(WatchCallsRequest { after_position })
        .await
        .expect("watches")
        .into_inner()
}

async fn watch_presence(
    presence: &mut PresenceServiceClient<Channel>,
    after_position: u64,
) -> Streaming<PresenceEvent> {
    presence
        .watch_presence(WatchPresenceRequest { after_position })
        .await
        .expect("watches")
        .into_inner()
}

/// The call events up to (not including) CURRENT.
async fn calls_until_current(stream: &mut Streaming<CallEvent>) -> Vec<CallEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(stream).await;
        if event.kind == call_event::Kind::Current as i32 {
            return events;
        }
        events.push(event);
    }
}

/// The presence events up to (not including) CURRENT.
async fn presence_until_current(stream: &mut Streaming<PresenceEvent>) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(stream).await;
        if event.kind == presence_event::Kind::Current as i32 {
            return events;
        }
        events.push(event);
    }
}

/// A call event's kind, call, change and position, for comparing.
fn call_seen(event: &CallEvent) -> (call_event::Kind, &str, &str) {
    (
        call_event::Kind::try_from(event.kind).expect("known kind"),
        event.call_id.as_str(),
        event.change.as_str(),
    )
}

fn presence_seen(event: &PresenceEvent) -> (presence_event::Kind, &str, &str) {
    (
        presence_event::Kind::try_from(event.kind).expect("known kind"),
        event.user_id.as_str(),
        event.change.as_str(),
    )
}

fn session_count(event: &PresenceEvent) -> usize {
    event.user.as_ref().map_or(0, |u| u.sessions.len())
}

#[tokio::test]
async fn invitations_ring_and_end_in_every_state() {
    let nats = NatsServer::start().await.expect("nats-server");
    let presence = start_presence(&nats).await;
    // Two replicas on one state: invitations rung through `slow` ring for a
    // minute, so their states are checked without racing the timeout; those
    // rung through `fast` miss after 800 ms (whichever replica expires them).
    let slow = start_calls(&nats, 60_000).await;
    let fast = start_calls(&nats, 800).await;
    let mut who = presence_client(&presence).await;
    let mut calls = calls_client(&slow).await;

    // Online invitees are users with a registered session; olga has none.
    for user in ["bob", "cat", "dan", "eve", "fay"] {
        who.register_session(register(user, "gw-1", &format!("s-{user}")))
            .await
            .expect("registers");
    }
    // eve is in another live call: busy.
    calls
        .start_call(start("c-other", "eve", "s-eve", &[]))
        .await
        .expect("starts");

    let started = calls
        .start_call(start("c1", "ann", "s-ann", &["bob", "olga"]))
        .await
        .expect("starts")
        .into_inner();
    assert_eq!(started.unavailable_user_ids, ["olga"]);
    assert_eq!(
        invites(&mut calls, "c1").await,
        [
            row("bob", "ann", InviteState::Ringing),
            row("olga", "ann", InviteState::Missed),
        ]
    );

    // More users into the running call: bob still rings, olga is still offline.
    let invited = calls
        .invite_to_call(invite("c1", &["cat", "eve", "olga", "bob"], "s-ann"))
        .await
        .expect("invites")
        .into_inner();
    assert_eq!(sorted(&invited.invited_user_ids), ["bob", "cat", "eve"]);
    assert_eq!(invited.busy_user_ids, ["eve"]);
    assert_eq!(invited.unavailable_user_ids, ["olga"]);
    assert!(invited.revision > started.revision);
    let call = invited.call.expect("the call");
    assert!(
        ["cat", "eve"]
            .iter()
            .all(|u| call.invited_user_ids.iter().any(|i| i == u)),
        "{:?}",
        call.invited_user_ids
    );
    assert_eq!(
        invites(&mut calls, "c1").await,
        [
            row("bob", "ann", InviteState::Ringing),
            row("olga", "ann", InviteState::Missed),
            row("cat", "ann", InviteState::Ringing),
            row("eve", "ann", InviteState::Ringing),
        ]
    );

    // Declined, and declining again is refused.
    let declined = calls
        .decline_invite(decline("c1", "bob"))
        .await
        .expect("declines")
        .into_inner();
    assert!(declined.revision > invited.revision);
    for user in ["bob", "olga", "nobody"] {
        let refused = calls
            .decline_invite(decline("c1", user))
            .await
            .expect_err("not ringing");
        assert_refused(&refused, Code::FailedPrecondition, "not-invited");
    }

    // Accepted: cat joins. Then cat rings dan.
    calls
        .join_call(join("c1", "cat", "s-cat"))
        .await
        .expect("joins");
    let by_cat = calls
        .invite_to_call(invite("c1", &["dan"], "s-cat"))
        .await
        .expect("invites")
        .into_inner();
    assert_eq!(by_cat.invited_user_ids, ["dan"]);
    assert!(by_cat.busy_user_ids.is_empty() && by_cat.unavailable_user_ids.is_empty());

    // Cancelled: ann's ringing invitations only (eve), not cat's (dan).
    let cancelled = calls
        .cancel_invites(CancelInvitesRequest {
            call_id: "c1".into(),
            invited_by_user_id: "ann".into(),
            session_id: String::new(),
        })
        .await
        .expect("cancels")
        .into_inner();
    assert_eq!(cancelled.cancelled_user_ids, ["eve"]);
    assert!(cancelled.revision > 0);
    assert_eq!(
        invites(&mut calls, "c1").await,
        [
            row("bob", "ann", InviteState::Declined),
            row("olga", "ann", InviteState::Missed),
            row("cat", "ann", InviteState::Accepted),
            row("eve", "ann", InviteState::Cancelled),
            row("dan", "cat", InviteState::Ringing),
        ]
    );

    // Through a participant's session: that user's invitations.
    let by_session = calls
        .cancel_invites(CancelInvitesRequest {
            call_id: "c1".into(),
            invited_by_user_id: String::new(),
            session_id: "s-cat".into(),
        })
        .await
        .expect("cancels")
        .into_inner();
    assert_eq!(by_session.cancelled_user_ids, ["dan"]);

    // An ended invitation rings again; from the system when nobody is named.
    let again = calls
        .invite_to_call(invite("c1", &["bob"], ""))
        .await
        .expect("invites")
        .into_inner();
    assert_eq!(again.invited_user_ids, ["bob"]);
    let none_left = calls
        .cancel_invites(CancelInvitesRequest {
            call_id: "c1".into(),
            invited_by_user_id: "ann".into(),
            session_id: String::new(),
        })
        .await
        .expect("nothing to cancel")
        .into_inner();
    assert!(none_left.cancelled_user_ids.is_empty());
    assert_eq!(none_left.revision, 0, "nothing written");
    let every = calls
        .cancel_invites(CancelInvitesRequest {
            call_id: "c1".into(),
            ..Default::default()
        })
        .await
        .expect("cancels")
        .into_inner();
    assert_eq!(every.cancelled_user_ids, ["bob"]);
    assert_eq!(
        invites(&mut calls, "c1").await[0],
        row("bob", "system", InviteState::Cancelled)
    );

    // Missed: fay's invitation, rung through the fast replica, times out.
    let mut fast_calls = calls_client(&fast).await;
    fast_calls
        .start_call(start("c-ring", "gus", "s-gus", &["fay"]))
        .await
        .expect("starts");
    assert_eq!(
        invites(&mut calls, "c-ring").await,
        [row("fay", "gus", InviteState::Ringing)]
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = invites(&mut calls, "c-ring").await;
        if now == [row("fay", "gus", InviteState::Missed)] {
            break;
        }
        assert_eq!(now, [row("fay", "gus", InviteState::Ringing)]);
        assert!(
            tokio::time::Instant::now() < deadline,
            "never missed\n{}",
            fast.process.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An internal service names who rings; it must name someone whole.
    let named = CallUser {
        id: "svc".into(),
        username: "Service".into(),
    };
    calls
        .invite_to_call(InviteToCallRequest {
            r#as: Some(named.clone()),
            ..invite("c1", &["dan"], "")
        })
        .await
        .expect("invites");
    assert_eq!(
        invites(&mut calls, "c1").await[4],
        row("dan", "svc", InviteState::Ringing)
    );
    let status = calls
        .invite_to_call(InviteToCallRequest {
            r#as: Some(CallUser {
                username: String::new(),
                ..named
            }),
            ..invite("c1", &["dan"], "")
        })
        .await
        .expect_err("nameless");
    assert_refused(&status, Code::InvalidArgument, "invalid-argument");

    // Typed refusals.
    let unknown = [
        calls
            .invite_to_call(invite("nope", &["bob"], ""))
            .await
            .expect_err("unknown call"),
        calls
            .decline_invite(decline("nope", "bob"))
            .await
            .expect_err("unknown call"),
        calls
            .cancel_invites(CancelInvitesRequest {
                call_id: "nope".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown call"),
        calls
            .list_invites(ListInvitesRequest {
                call_id: "nope".into(),
            })
            .await
            .expect_err("unknown call"),
    ];
    for status in &unknown {
        assert_refused(status, Code::NotFound, "call-not-found");
    }
    let stranger = [
        calls
            .invite_to_call(invite("c1", &["bob"], "s-stranger"))
            .await
            .expect_err("not a participant"),
        calls
            .cancel_invites(CancelInvitesRequest {
                call_id: "c1".into(),
                session_id: "s-stranger".into(),
                ..Default::default()
            })
            .await
            .expect_err("not a participant"),
    ];
    for status in &stranger {
        assert_refused(status, Code::NotFound, "not-in-call");
    }
    let too_many: Vec<String> = (0..65).map(|i| format!("u{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    for users in [&[][..], &too_many[..], &[""][..]] {
        let status = calls
            .invite_to_call(invite("c1", users, "s-ann"))
            .await
            .expect_err("bad user ids");
        assert_refused(&status, Code::InvalidArgument, "invalid-argument");
    }
    let status = calls
        .decline_invite(decline("c1", ""))
        .await
        .expect_err("no user");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Sixty-four is allowed.
    let most = calls
        .invite_to_call(invite("c1", &too_many[..64], ""))
        .await
        .expect("64 users")
        .into_inner();
    assert_eq!(most.unavailable_user_ids.len(), 64);
}

#[tokio::test]
async fn chat_messages_come_from_participants_bots_and_the_system() {
    let nats = NatsServer::start().await.expect("nats-server");
    let service = start_calls(&nats, 60_000).await;
    let mut calls = calls_client(&service).await;
    calls
        .start_call(start("chat", "ann", "s-ann", &[]))
        .await
        .expect("starts");
    let send = |sender: Option<Sender>, text: &str, call: &str| SendCallMessageRequest {
        call_id: call.into(),
        text: text.into(),
        sender,
    };

    let mut seqs = Vec::new();
    let mut revision = 0;
    for (sender, id, username, kind) in [
        (
            Sender::SessionId("s-ann".into()),
            "ann",
            "name-ann",
            SenderKind::User,
        ),
        (
            Sender::BotName("notes".into()),
            "bot:notes",
            "notes",
            SenderKind::Bot,
        ),
        (Sender::System(true), "system", "MeetUp", SenderKind::System),
    ] {
        let sent = calls
            .send_call_message(send(Some(sender), "hello", "chat"))
            .await
            .expect("sends")
            .into_inner();
        let message = sent.message.expect("the message");
        let from = message.from.expect("an author");
        assert_eq!((from.id.as_str(), from.username.as_str()), (id, username));
        assert_eq!(message.kind, kind as i32);
        assert_eq!(message.text, "hello");
        assert!(!message.id.is_empty() && message.sent_at.is_some());
        assert!(sent.revision > revision, "revisions grow");
        revision = sent.revision;
        seqs.push(message.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);

    // 4,000 characters (code points, not bytes) pass; one more does not.
    let longest = "é".repeat(4_000);
    let sent = calls
        .send_call_message(send(Some(Sender::System(true)), &longest, "chat"))
        .await
        .expect("4,000 characters")
        .into_inner();
    assert_eq!(sent.message.map(|m| m.seq), Some(4));

    let ann = || Some(Sender::SessionId("s-ann".into()));
    for (request, code, why) in [
        (
            send(ann(), "", "chat"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            send(ann(), &"x".repeat(4_001), "chat"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            send(None, "hi", "chat"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            send(Some(Sender::System(false)), "hi", "chat"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            send(Some(Sender::BotName(String::new())), "hi", "chat"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            send(Some(Sender::BotName("b".repeat(65))), "hi", "chat"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            send(Some(Sender::SessionId("s-stranger".into())), "hi", "chat"),
            Code::NotFound,
            "not-in-call",
        ),
        (send(ann(), "hi", "nope"), Code::NotFound, "call-not-found"),
    ] {
        let status = calls.send_call_message(request).await.expect_err("refused");
        assert_refused(&status, code, why);
    }

    // Refusals take no number.
    let sent = calls
        .send_call_message(send(ann(), "after", "chat"))
        .await
        .expect("sends")
        .into_inner();
    assert_eq!(sent.message.map(|m| m.seq), Some(5));

    // The chat goes with the call: a new call of that id starts over.
    calls
        .end_call(EndCallRequest {
            call_id: "chat".into(),
        })
        .await
        .expect("ends");
    let status = calls
        .send_call_message(send(ann(), "late", "chat"))
        .await
        .expect_err("ended");
    assert_refused(&status, Code::NotFound, "call-not-found");
    calls
        .start_call(start("chat", "bob", "s-bob", &[]))
        .await
        .expect("starts again");
    let sent = calls
        .send_call_message(send(Some(Sender::SessionId("s-bob".into())), "new", "chat"))
        .await
        .expect("sends")
        .into_inner();
    assert_eq!(sent.message.map(|m| m.seq), Some(1));
}

#[tokio::test]
async fn watch_calls_sends_the_snapshot_then_changes_and_resumes_after_a_position() {
    let nats = NatsServer::start().await.expect("nats-server");
    let presence = start_presence(&nats).await;
    let service = start_calls(&nats, 60_000).await;
    let mut who = presence_client(&presence).await;
    let mut calls = calls_client(&service).await;
    who.register_session(register("dan", "gw-1", "s-dan"))
        .await
        .expect("registers");
    let w1 = calls
        .start_call(start("w1", "ann", "s-ann", &[]))
        .await
        .expect("starts")
        .into_inner();

    let mut stream = watch_calls(&mut calls, 0).await;
    let snapshot = calls_until_current(&mut stream).await;
    assert_eq!(snapshot.len(), 1, "one live call");
    assert_eq!(
        call_seen(&snapshot[0]),
        (call_event::Kind::Snapshot, "w1", "")
    );
    assert_eq!(snapshot[0].position, w1.revision);
    assert_eq!(
        snapshot[0].call.as_ref().map(|c| c.participants.len()),
        Some(1)
    );

    // Each change as it happens, at the revision its RPC returned.
    let mut last = w1.revision;
    let mut expect = async |stream: &mut Streaming<CallEvent>,
                            kind: call_event::Kind,
                            call: &str,
                            change: &str,
                            revision: u64| {
        let event = next(stream).await;
        assert_eq!(call_seen(&event), (kind, call, change));
        assert_eq!(event.position, revision);
        assert!(event.position > last, "positions grow");
        last = event.position;
        event
    };
    let started = calls
        .start_call(start("w2", "bob", "s-bob", &[]))
        .await
        .expect("starts")
        .into_inner();
    expect(
        &mut stream,
        call_event::Kind::Changed,
        "w2",
        "started",
        started.revision,
    )
    .await;
    let joined = calls
        .join_call(join("w2", "cat", "s-cat"))
        .await
        .expect("joins")
        .into_inner();
    let event = expect(
        &mut stream,
        call_event::Kind::Changed,
        "w2",
        "joined",
        joined.revision,
    )
    .await;
    assert_eq!(event.call.map(|c| c.participants.len()), Some(2));
    // A chat message lives beside the calls but is not a call change.
    calls
        .send_call_message(SendCallMessageRequest {
            call_id: "w2".into(),
            text: "hi".into(),
            sender: Some(Sender::SessionId("s-cat".into())),
        })
        .await
        .expect("sends");
    let invited = calls
        .invite_to_call(invite("w2", &["dan"], "s-bob"))
        .await
        .expect("invites")
        .into_inner();
    expect(
        &mut stream,
        call_event::Kind::Changed,
        "w2",
        "invited",
        invited.revision,
    )
    .await;
    let declined = calls
        .decline_invite(decline("w2", "dan"))
        .await
        .expect("declines")
        .into_inner();
    expect(
        &mut stream,
        call_event::Kind::Changed,
        "w2",
        "invite-ended",
        declined.revision,
    )
    .await;
    let ended = calls
        .end_call(EndCallRequest {
            call_id: "w1".into(),
        })
        .await
        .expect("ends")
        .into_inner();
    let event = expect(
        &mut stream,
        call_event::Kind::Ended,
        "w1",
        "ended",
        ended.revision,
    )
    .await;
    assert!(event.call.and_then(|c| c.ended_at).is_some());
    let position = event.position;
    drop(stream);

    // While nobody watches: a new call, and w2 changed twice.
    let w3 = calls
        .start_call(start("w3", "eve", "s-eve", &[]))
        .await
        .expect("starts")
        .into_inner();
    calls
        .join_call(join("w2", "fay", "s-fay"))
        .await
        .expect("joins");
    let left = calls
        .leave_call(LeaveCallRequest {
            call_id: "w2".into(),
            session_id: "s-cat".into(),
        })
        .await
        .expect("leaves")
        .into_inner();

    // Resumed: each call changed since, at its latest state; nothing older.
    let mut stream = watch_calls(&mut calls, position).await;
    let resumed = calls_until_current(&mut stream).await;
    let seen: Vec<_> = resumed.iter().map(|e| (call_seen(e), e.position)).collect();
    assert_eq!(
        seen,
        [
            ((call_event::Kind::Changed, "w3", "started"), w3.revision),
            ((call_event::Kind::Changed, "w2", "left"), left.revision),
        ]
    );
    // Then live again.
    let ended = calls
        .end_call(EndCallRequest {
            call_id: "w3".into(),
        })
        .await
        .expect("ends")
        .into_inner();
    let event = next(&mut stream).await;
    assert_eq!(call_seen(&event), (call_event::Kind::Ended, "w3", "ended"));
    assert_eq!(event.position, ended.revision);
    drop(stream);

    // From the very last position: nothing to catch up on.
    let mut stream = watch_calls(&mut calls, ended.revision).await;
    assert!(calls_until_current(&mut stream).await.is_empty());
}

#[tokio::test]
async fn watch_presence_sends_the_snapshot_then_changes_and_resumes_after_a_position() {
    let nats = NatsServer::start().await.expect("nats-server");
    let service = start_presence(&nats).await;
    let mut presence = presence_client(&service).await;
    let mut revisions = Vec::new();
    for user in ["u-a", "u-b"] {
        let registered = presence
            .register_session(register(user, "gw-1", &format!("s-{user}-1")))
            .await
            .expect("registers")
            .into_inner();
        revisions.push(registered.revision);
    }

    let mut stream = watch_presence(&mut presence, 0).await;
    let snapshot = presence_until_current(&mut stream).await;
    let seen: Vec<_> = snapshot
        .iter()
        .map(|e| (presence_seen(e), e.position, session_count(e)))
        .collect();
    assert_eq!(
        seen,
        [
            ((presence_event::Kind::Snapshot, "u-a", ""), revisions[0], 1),
            ((presence_event::Kind::Snapshot, "u-b", ""), revisions[1], 1),
        ]
    );

    let mut changed = async |request: RegisterSessionRequest, sessions: usize| {
        let user = request.user_id.clone();
        let revision = presence
            .register_session(request)
            .await
            .expect("registers")
            .into_inner()
            .revision;
        let event = next(&mut stream).await;
        assert_eq!(
            presence_seen(&event),
            (presence_event::Kind::Changed, user.as_str(), "registered")
        );
        assert_eq!(
            (event.position, session_count(&event)),
            (revision, sessions)
        );
        event
    };
    changed(register("u-c", "gw-1", "s-u-c-1"), 1).await;
    changed(register("u-a", "gw-2", "s-u-a-2"), 2).await;

    let gone = presence
        .unregister_session(unregister("u-a", "s-u-a-2"))
        .await
        .expect("unregisters")
        .into_inner();
    assert!(!gone.last_session);
    let event = next(&mut stream).await;
    assert_eq!(
        presence_seen(&event),
        (presence_event::Kind::Changed, "u-a", "unregistered")
    );
    assert_eq!((event.position, session_count(&event)), (gone.revision, 1));

    let gone = presence
        .unregister_session(unregister("u-a", "s-u-a-1"))
        .await
        .expect("unregisters")
        .into_inner();
    assert!(gone.last_session);
    let event = next(&mut stream).await;
    assert_eq!(
        presence_seen(&event),
        (presence_event::Kind::Offline, "u-a", "unregistered")
    );
    assert_eq!(event.position, gone.revision);
    assert!(event.user.is_none());

    // The offline user's key is deleted too: one end, told once; the next
    // event is the next change.
    let revision = presence
        .register_session(register("u-d", "gw-1", "s-u-d-1"))
        .await
        .expect("registers")
        .into_inner()
        .revision;
    let event = next(&mut stream).await;
    assert_eq!(
        presence_seen(&event),
        (presence_event::Kind::Changed, "u-d", "registered")
    );
    assert_eq!(event.position, revision);
    let position = event.position;
    drop(stream);

    // While nobody watches: u-b goes offline, u-e comes, u-c changes twice.
    presence
        .unregister_session(unregister("u-b", "s-u-b-1"))
        .await
        .expect("unregisters");
    let u_e = presence
        .register_session(register("u-e", "gw-1", "s-u-e-1"))
        .await
        .expect("registers")
        .into_inner();
    presence
        .register_session(register("u-c", "gw-1", "s-u-c-2"))
        .await
        .expect("registers");
    let u_c = presence
        .unregister_session(unregister("u-c", "s-u-c-2"))
        .await
        .expect("unregisters")
        .into_inner();

    let mut stream = watch_presence(&mut presence, position).await;
    let resumed = presence_until_current(&mut stream).await;
    let seen: Vec<_> = resumed
        .iter()
        .map(|e| (presence_seen(e), session_count(e)))
        .collect();
    assert_eq!(
        seen,
        [
            ((presence_event::Kind::Offline, "u-b", ""), 0),
            ((presence_event::Kind::Changed, "u-e", "registered"), 1),
            ((presence_event::Kind::Changed, "u-c", "unregistered"), 1),
        ],
        "each user changed since, at its latest state; nothing older"
    );
    assert!(resumed[0].position > position);
    assert_eq!(resumed[1].position, u_e.revision);
    assert_eq!(resumed[2].position, u_c.revision);

    // Then live again.
    let revision = presence
        .register_session(register("u-f", "gw-1", "s-u-f-1"))
        .await
        .expect("registers")
        .into_inner()
        .revision;
    let event = next(&mut stream).await;
    assert_eq!(
        presence_seen(&event),
        (presence_event::Kind::Changed, "u-f", "registered")
    );
    assert_eq!(event.position, revision);
}

#[tokio::test]
async fn send_to_user_pushes_to_each_gateway_of_the_user() {
    let nats = NatsServer::start().await.expect("nats-server");
    let service = start_presence(&nats).await;
    let mut presence = presence_client(&service).await;
    // What the gateways `gw-push` and `gw-other` would receive
    // (`meetup_platform::subjects::gateway_push`).
    let bus = async_nats::connect(nats.url()).await.expect("connects");
    let mut here = bus
        .subscribe("meetup.v1.gateway.gw-push.push")
        .await
        .expect("subscribes");
    let mut there = bus
        .subscribe("meetup.v1.gateway.gw-other.push")
        .await
        .expect("subscribes");
    bus.flush().await.expect("subscriptions registered");
    let push = async |subscriber: &mut async_nats::Subscriber| {
        let message = tokio::time::timeout(WAIT, subscriber.next())
            .await
            .expect("a push within the bound")
            .expect("subscribed");
        Push::decode(message.payload).expect("a Push")
    };
    let to_user = |user: &str, event: &str, json: &str| SendToUserRequest {
        user_id: user.into(),
        event: event.into(),
        json: json.into(),
    };

    presence
        .register_session(register("pat", "gw-push", "s-pat-1"))
        .await
        .expect("registers");
    let sent = presence
        .send_to_user(to_user("pat", "app:ping", r#"{"n":1}"#))
        .await
        .expect("sends")
        .into_inner();
    assert_eq!(sent.sessions, 1);
    let got = push(&mut here).await;
    assert_eq!(got.session_ids, ["s-pat-1"]);
    assert_eq!(
        (got.event.as_str(), got.payload_json.as_str()),
        ("app:ping", r#"{"n":1}"#)
    );

    // Refused: a protocol event, an empty name, no JSON, an offline user.
    for (request, code, why) in [
        (
            to_user("pat", "incoming-call", "{}"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            to_user("pat", "app:", "{}"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            to_user("pat", "app:ping", "{bad"),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            to_user("pat", "app:ping", ""),
            Code::InvalidArgument,
            "invalid-argument",
        ),
        (
            to_user("nobody", "app:ping", "{}"),
            Code::NotFound,
            "user-not-found",
        ),
    ] {
        let status = presence.send_to_user(request).await.expect_err("refused");
        assert_refused(&status, code, why);
    }

    // Every session of the user, one push per gateway; nothing was pushed for
    // the refusals above.
    for (gateway, session) in [("gw-push", "s-pat-2"), ("gw-other", "s-pat-3")] {
        presence
            .register_session(register("pat", gateway, session))
            .await
            .expect("registers");
    }
    let sent = presence
        .send_to_user(to_user("pat", "app:reminder", r#"{"at":[1,2]}"#))
        .await
        .expect("sends")
        .into_inner();
    assert_eq!(sent.sessions, 3);
    let got = push(&mut here).await;
    assert_eq!(got.event, "app:reminder");
    assert_eq!(sorted(&got.session_ids), ["s-pat-1", "s-pat-2"]);
    let got = push(&mut there).await;
    assert_eq!(
        (got.session_ids.as_slice(), got.payload_json.as_str()),
        (&["s-pat-3".to_owned()][..], r#"{"at":[1,2]}"#)
    );
}

#[tokio::test]
async fn health_and_reflection_list_the_new_rpcs() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let presence = ServiceProcess::start("presence", None)
        .await
        .expect("presence");
    let calls = ServiceProcess::start("calls", None).await.expect("calls");
    for (service, name, rpcs, streaming) in [
        (
            &presence,
            PRESENCE,
            &["SendToUser", "WatchPresence"][..],
            "WatchPresence",
        ),
        (
            &calls,
            CALLS,
            &[
                "InviteToCall",
                "DeclineInvite",
                "CancelInvites",
                "ListInvites",
                "SendCallMessage",
                "WatchCalls",
            ][..],
            "WatchCalls",
        ),
    ] {
        service.wait_healthy(name).await.expect("healthy");
        let channel = Channel::from_shared(service.url())
            .expect("url")
            .connect()
            .await
            .expect("connects");
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(name.to_owned())),
        };
        let mut responses = reflection
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses.next().await.expect("one response").expect("ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("unexpected reflection answer for {name}");
        };
        let (package, service_name) = name.rsplit_once('.').expect("qualified");
        let methods: Vec<_> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| prost_types::FileDescriptorProto::decode(&bytes[..]).expect("decodes"))
            .filter(|file| file.package() == package)
            .flat_map(|file| file.service)
            .filter(|s| s.name() == service_name)
            .flat_map(|s| s.method)
            .collect();
        let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
        for rpc in rpcs {
            assert!(names.contains(rpc), "{name} lacks {rpc}: {names:?}");
        }
        for method in &methods {
            assert_eq!(
                method.server_streaming(),
                method.name() == streaming,
                "{name}/{}",
                method.name()
            );
        }
    }
}
