//! The bus dispatcher: one task per gateway that applies the services' events to
//! the mirror and tells this gateway's sockets, and delivers relays addressed to them.
//!
//! One task keeps one order: events are handled before relays that arrived after
//! them, so a peer never gets an offer before it has heard of the joiner.

use std::time::Duration;

use futures::StreamExt;
use meetup_proto::bus::v1::{
    CallEvent, LeaveReason, PresenceEvent, Relay, RelayKind, call_event, presence_event,
};
use meetup_proto::calls::v1::{Call, ListCallsRequest, ListCallsResponse, RestoreCallRequest};
use meetup_proto::presence::v1::{ListUsersRequest, ListUsersResponse, RegisterSessionRequest};
use meetup_runtime::{BusMessage, Subscription, subjects};
use prost::Message;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::gateway::{Gateway, LocalSession};
use crate::replica::{Applied, public_participants, public_user};

/// Runs until `stop` turns true.
pub async fn run(
    gw: Gateway,
    mut events: Subscription,
    mut relays: Subscription,
    mut stop: watch::Receiver<bool>,
) {
    let mut resync = tokio::time::interval(Duration::from_millis(500));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut users_list = UsersListBroadcast::default();
    loop {
        let due = users_list.due(&gw);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(message) = events.next() => {
                let span = crate::traces::bus_message(&message, gw.id());
                tracing::Instrument::instrument(handle_event(&gw, message, &mut users_list), span).await;
                gw.replica().publish_progress();
            }
            Some(message) = relays.next() => {
                let _span = crate::traces::bus_message(&message, gw.id()).entered();
                deliver_relay(&gw, message);
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                users_list.flush(&gw).await;
            }
            _ = resync.tick() => {
                if gw.replica().needs_presence_sync() {
                    sync_presence(&gw, &mut users_list).await;
                }
                if gw.replica().needs_calls_sync() {
                    sync_calls(&gw).await;
                }
            }
        }
    }
    tracing::debug!("dispatcher stopped");
}

/// Sends `users-list` to every local socket: at once when none went out lately,
/// else once when the interval is over, with the list as it is then. A burst of
/// joins so costs a few lists instead of one per join (each list goes to every
/// socket), every client still ends on the exact final list, and since the mirror
/// only moves forward, no list is older than one sent before it.
#[derive(Debug, Default)]
struct UsersListBroadcast {
    last: Option<tokio::time::Instant>,
    last_change: Option<tokio::time::Instant>,
    pending: bool,
}

/// A burst is over once presence has been quiet this long: the final list then
/// goes out without waiting for the rest of the interval.
const BURST_OVER: Duration = Duration::from_millis(100);

/// Bytes per second of `users-list` traffic a burst may cause before lists coalesce.
const USERS_LIST_BUDGET: f64 = 64e6;
/// A public user record is about this long in JSON.
const USER_RECORD_BYTES: f64 = 80.0;

impl UsersListBroadcast {
    /// The least time between two lists: what keeps a burst's list traffic under
    /// [`USERS_LIST_BUDGET`], between 20 ms and 5 s.
    fn interval(gw: &Gateway) -> Duration {
        let (users, _) = gw.replica().counts();
        let sockets = crate::metrics::get().connections.get().max(1) as f64;
        let seconds = users as f64 * USER_RECORD_BYTES * sockets / USERS_LIST_BUDGET;
        Duration::from_secs_f64(seconds.clamp(0.02, 5.0))
    }

    async fn changed(&mut self, gw: &Gateway) {
        self.last_change = Some(tokio::time::Instant::now());
        match self.last {
            Some(last) if last.elapsed() < Self::interval(gw) => self.pending = true,
            _ => self.flush(gw).await,
        }
    }

    async fn flush(&mut self, gw: &Gateway) {
        let list = gw.replica().users_list();
        gw.emit_all("users-list", &*list, None).await;
        self.last = Some(tokio::time::Instant::now());
        self.pending = false;
    }

    /// When the coalesced list is due, if one is: at the end of the interval,
    /// or as soon as the burst is over.
    fn due(&self, gw: &Gateway) -> Option<tokio::time::Instant> {
        if !self.pending {
            return None;
        }
        let interval_over = self.last.map(|last| last + Self::interval(gw));
        let burst_over = self.last_change.map(|change| change + BURST_OVER);
        match (interval_over, burst_over) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Replaces the presence mirror with a fresh snapshot and tells every socket.
/// When the service restarted (another instance), this gateway first registers
/// its live sockets again, so that no online user is lost.
async fn sync_presence(gw: &Gateway, users_list: &mut UsersListBroadcast) {
    let Some(mut snapshot) = presence_snapshot(gw).await else {
        return;
    };
    let (previous, _) = gw.replica().presence_position();
    if !previous.is_empty() && previous != snapshot.instance_id {
        tracing::warn!(instance_id = %snapshot.instance_id, "presence service restarted; registering this gateway's sockets again");
        restore_presence(gw).await;
        let Some(fresh) = presence_snapshot(gw).await else {
            return;
        };
        snapshot = fresh;
    }
    tracing::info!(
        version = snapshot.version,
        users = snapshot.users.len(),
        "presence mirror synced"
    );
    gw.replica().reset_presence(snapshot);
    users_list.flush(gw).await;
}

async fn presence_snapshot(gw: &Gateway) -> Option<ListUsersResponse> {
    snapshot("presence", gw.presence().list_users(ListUsersRequest {})).await
}

async fn calls_snapshot(gw: &Gateway) -> Option<ListCallsResponse> {
    snapshot("calls", gw.calls().list_calls(ListCallsRequest {})).await
}

/// A service's snapshot, or `None` (logged) while it cannot be had.
async fn snapshot<T>(
    service: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    match call.await {
        Ok(snapshot) => Some(snapshot.into_inner()),
        Err(status) => {
            tracing::warn!(service, code = ?status.code(), error = status.message(), "snapshot failed");
            None
        }
    }
}

/// Registers every live registered socket of this gateway again.
pub async fn restore_presence(gw: &Gateway) {
    for (session_id, session) in gw.local_sessions() {
        if session.registered {
            register_again(gw, session_id, session).await;
        }
    }
}

pub async fn register_again(gw: &Gateway, session_id: String, session: LocalSession) {
    let request = RegisterSessionRequest {
        user_id: session.user_id,
        username: session.username,
        gateway_id: gw.id().to_owned(),
        session_id,
        joined_at: session.joined_at,
    };
    if let Err(status) = gw.presence().register_session(request).await {
        tracing::warn!(code = ?status.code(), error = status.message(), "registering a socket again failed");
    }
}

/// Replaces the calls mirror with a fresh snapshot. When the service restarted,
/// this gateway first puts back the calls its live sockets take part in, from
/// the mirror of the previous run.
async fn sync_calls(gw: &Gateway) {
    let Some(mut snapshot) = calls_snapshot(gw).await else {
        return;
    };
    let (previous, _) = gw.replica().calls_position();
    if !previous.is_empty() && previous != snapshot.instance_id {
        tracing::warn!(instance_id = %snapshot.instance_id, "call service restarted; restoring this gateway's calls");
        for mut call in gw.replica().all_calls() {
            call.participants
                .retain(|p| p.gateway_id == gw.id() && gw.is_local_session(&p.session_id));
            if call.participants.is_empty() {
                continue;
            }
            if let Err(status) = gw
                .calls()
                .restore_call(RestoreCallRequest { call: Some(call) })
                .await
            {
                tracing::warn!(code = ?status.code(), error = status.message(), "restoring a call failed");
            }
        }
        let Some(fresh) = calls_snapshot(gw).await else {
            return;
        };
        snapshot = fresh;
    }
    tracing::info!(
        sequence = snapshot.sequence,
        calls = snapshot.calls.len(),
        "calls mirror synced"
    );
    gw.replica().reset_calls(snapshot);
}

async fn handle_event(gw: &Gateway, message: BusMessage, users_list: &mut UsersListBroadcast) {
    match message.subject.as_str() {
        subjects::PRESENCE_EVENTS => match PresenceEvent::decode(message.payload) {
            Ok(event) => match gw.replica().apply_presence(&event) {
                Applied::Yes => announce_presence(gw, &event, users_list).await,
                Applied::Stale => {}
                Applied::Gap => {
                    tracing::warn!(version = event.version, "presence events missed; resyncing");
                    sync_presence(gw, users_list).await;
                }
            },
            Err(error) => tracing::warn!(%error, "undecodable presence event"),
        },
        subjects::CALL_EVENTS => match CallEvent::decode(message.payload) {
            Ok(event) => match gw.replica().apply_calls(&event) {
                Applied::Yes => announce_call(gw, &event),
                Applied::Stale => {}
                Applied::Gap => {
                    tracing::warn!(sequence = event.sequence, "call events missed; resyncing");
                    sync_calls(gw).await;
                }
            },
            Err(error) => tracing::warn!(%error, "undecodable call event"),
        },
        other => tracing::debug!(subject = other, "ignoring bus message"),
    }
}

async fn announce_presence(
    gw: &Gateway,
    event: &PresenceEvent,
    users_list: &mut UsersListBroadcast,
) {
    match &event.change {
        Some(presence_event::Change::Registered(r)) => {
            users_list.changed(gw).await;
            if r.first_session
                && let (Some(user), Some(session)) = (&r.user, &r.session)
            {
                let sender = gw.local_sid(&session.session_id, &session.gateway_id);
                gw.emit_all("user-joined", &public_user(user), sender).await;
            }
        }
        Some(presence_event::Change::Unregistered(u)) if u.last_session => {
            users_list.changed(gw).await;
            gw.emit_all("user-left", &u.user_id, None).await;
        }
        _ => {}
    }
}

fn user_of(p: &meetup_proto::calls::v1::Participant) -> &str {
    p.user.as_ref().map(|u| u.id.as_str()).unwrap_or_default()
}

/// This gateway's sessions in `call`, except those of `except_user`.
fn local_sessions<'a>(
    gw: &'a Gateway,
    call: &'a Call,
    except_user: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    call.participants
        .iter()
        .filter(move |p| p.gateway_id == gw.id() && user_of(p) != except_user)
        .map(|p| p.session_id.as_str())
}

fn announce_call(gw: &Gateway, event: &CallEvent) {
    let Some(call) = &event.call else { return };
    match &event.change {
        Some(call_event::Change::Started(_)) => {
            let initiator = call
                .initiator
                .as_ref()
                .map(|u| json!({ "id": u.id, "username": u.username }));
            let payload =
                json!({ "callId": call.id, "initiator": initiator, "isVideo": call.is_video });
            for user_id in &call.invited_user_ids {
                for session_id in gw.replica().sessions_on(user_id, gw.id()) {
                    gw.emit_to_session(&session_id, "incoming-call", &payload);
                }
            }
        }
        Some(call_event::Change::Joined(joined)) => {
            let Some(p) = &joined.participant else { return };
            let joiner = user_of(p);
            // A second socket of a user already in the call tells nobody.
            if call
                .participants
                .iter()
                .filter(|q| user_of(q) == joiner)
                .count()
                > 1
            {
                return;
            }
            let user = p
                .user
                .as_ref()
                .map(|u| json!({ "id": u.id, "username": u.username }));
            let payload = json!({ "callId": call.id, "user": user, "participants": public_participants(call) });
            for session_id in local_sessions(gw, call, joiner) {
                gw.emit_to_session(session_id, "user-joined-call", &payload);
            }
        }
        Some(call_event::Change::Left(left)) => {
            let Some(p) = &left.participant else { return };
            let leaver = user_of(p);
            if left.reason == LeaveReason::Removed as i32 && p.gateway_id == gw.id() {
                gw.emit_to_session(&p.session_id, "call-left", &json!({ "callId": call.id }));
            }
            if call.participants.iter().any(|q| user_of(q) == leaver) {
                return;
            }
            let payload = json!({ "callId": call.id, "userId": leaver, "participants": public_participants(call) });
            for session_id in local_sessions(gw, call, leaver) {
                gw.emit_to_session(session_id, "user-left-call", &payload);
            }
        }
        Some(call_event::Change::Ended(_)) => {
            let payload = json!({ "callId": call.id });
            for session_id in local_sessions(gw, call, "") {
                gw.emit_to_session(session_id, "call-ended", &payload);
            }
        }
        Some(call_event::Change::Restored(_)) | None => {}
    }
}

/// Delivers a relay that another gateway routed to one of this gateway's sockets.
fn deliver_relay(gw: &Gateway, message: BusMessage) {
    let relay = match Relay::decode(message.payload) {
        Ok(relay) => relay,
        Err(error) => {
            tracing::warn!(%error, "undecodable relay");
            return;
        }
    };
    let event = match RelayKind::try_from(relay.kind) {
        Ok(RelayKind::Offer) => "webrtc-offer",
        Ok(RelayKind::Answer) => "webrtc-answer",
        Ok(RelayKind::IceCandidate) => "webrtc-ice-candidate",
        _ => {
            tracing::warn!(kind = relay.kind, "relay of unknown kind");
            return;
        }
    };
    match RawValue::from_string(relay.payload_json) {
        Ok(raw) => gw.emit_to_session(&relay.target_session_id, event, &*raw),
        Err(error) => tracing::warn!(%error, "relay payload is not JSON"),
    }
}
