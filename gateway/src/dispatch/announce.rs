//! What changes mean for this gateway's sockets: `users-list` (coalesced; to
//! sockets that asked for presence deltas only once, when they register),
//! `user-joined` / `user-left`, and the call events, each to the sockets it is for.

use std::time::Duration;

use serde_json::json;

use meetup_proto::calls::v1::{ChatMessage, Outcome, SenderKind};
use serde_json::Value;

use crate::mirror::{CallNotice, PresenceNotice, iso_time, public_participants};
use crate::state::{Gateway, PresenceAudience};

/// Sends `users-list` to every local socket: at once when none went out lately,
/// else once when the interval is over, with the list as it is then. A burst of
/// joins so costs a few lists instead of one per join (each list goes to every
/// socket), every client still ends on the exact final list, and since the mirror
/// only moves forward, no list is older than one sent before it.
///
/// The protocol orders a change's `users-list` before its `user-joined` /
/// `user-left`: while a list waits, the deltas for the sockets that get lists
/// wait behind it (in their order) and go out right after it. Deltas are never
/// coalesced, only held; sockets that asked for deltas get them at once.
///
/// Sockets that asked for presence deltas get their one list here too: the
/// sockets that registered since the last flush share one serialized list,
/// taken when it goes out, so every change after it reaches them as a delta.
#[derive(Debug, Default)]
pub(super) struct UsersListBroadcast {
    last: Option<tokio::time::Instant>,
    last_change: Option<tokio::time::Instant>,
    pending: bool,
    /// `user-joined` / `user-left` for the list sockets, held behind the
    /// pending list.
    held: Vec<HeldDelta>,
    /// Delta sockets waiting for their list, and since when.
    snapshots: Vec<String>,
    snapshots_since: Option<tokio::time::Instant>,
}

/// How long a delta socket's list may wait to be shared with other registrations.
const SNAPSHOT_WAIT: Duration = Duration::from_millis(20);

/// A burst is over once presence has been quiet this long: the final list then
/// goes out without waiting for the rest of the interval.
const BURST_OVER: Duration = Duration::from_millis(100);

/// Bytes per second of `users-list` traffic a burst may cause before lists coalesce.
const USERS_LIST_BUDGET: f64 = 64e6;
/// A public user record is about this long in JSON.
const USER_RECORD_BYTES: f64 = 80.0;

/// A presence delta for the sockets that get lists, waiting for its list.
#[derive(Debug)]
struct HeldDelta {
    event: &'static str,
    payload: Value,
    except: Option<socketioxide::socket::Sid>,
}

impl UsersListBroadcast {
    /// The least time between two lists: what keeps a burst's list traffic under
    /// [`USERS_LIST_BUDGET`], between 20 ms and 5 s.
    fn interval(gw: &Gateway) -> Duration {
        let (users, _) = gw.mirror().counts();
        let sockets = crate::metrics::get().connections.get().max(1) as f64;
        let seconds = users as f64 * USER_RECORD_BYTES * sockets / USERS_LIST_BUDGET;
        Duration::from_secs_f64(seconds.clamp(0.02, 5.0))
    }

    pub(super) async fn changed(&mut self, gw: &Gateway) {
        self.last_change = Some(tokio::time::Instant::now());
        match self.last {
            Some(last) if last.elapsed() < Self::interval(gw) => self.pending = true,
            _ => self.flush(gw).await,
        }
    }

    /// A delta socket of this gateway registered: its list goes out with the
    /// next flush of snapshots.
    pub(super) fn snapshot_for(&mut self, session_id: String) {
        self.snapshots_since
            .get_or_insert_with(tokio::time::Instant::now);
        self.snapshots.push(session_id);
    }

    /// Sends what is due: the coalesced list to the other sockets, and the
    /// delta sockets' snapshots.
    pub(super) async fn flush_due(&mut self, gw: &Gateway) {
        let now = tokio::time::Instant::now();
        if self.list_due(gw).is_some_and(|due| due <= now) {
            self.flush(gw).await;
        }
        if self
            .snapshots_since
            .is_some_and(|since| since + SNAPSHOT_WAIT <= now)
        {
            self.flush_snapshots(gw);
        }
    }

    pub(super) async fn flush(&mut self, gw: &Gateway) {
        let list = gw.mirror().users_list();
        gw.emit_users_list(&list).await;
        self.last = Some(tokio::time::Instant::now());
        self.pending = false;
        for held in std::mem::take(&mut self.held) {
            gw.emit_presence(
                PresenceAudience::FullList,
                held.event,
                &held.payload,
                held.except,
            )
            .await;
        }
    }

    /// Sends `user-joined` or `user-left` (`payload`) to every local socket
    /// but `except`: at once to the delta sockets, and to the list sockets
    /// right after the list of this change (which the caller has announced
    /// with [`UsersListBroadcast::changed`] before).
    async fn delta(
        &mut self,
        gw: &Gateway,
        event: &'static str,
        payload: Value,
        except: Option<socketioxide::socket::Sid>,
    ) {
        gw.emit_presence(PresenceAudience::Deltas, event, &payload, except)
            .await;
        if self.pending {
            self.held.push(HeldDelta {
                event,
                payload,
                except,
            });
        } else {
            gw.emit_presence(PresenceAudience::FullList, event, &payload, except)
                .await;
        }
    }

    /// The mirror's list, serialized once, to every delta socket waiting for it.
    fn flush_snapshots(&mut self, gw: &Gateway) {
        self.snapshots_since = None;
        let sessions = std::mem::take(&mut self.snapshots);
        let list = gw.mirror().users_list();
        match serde_json::value::to_raw_value(&*list) {
            Ok(raw) => {
                for session_id in sessions {
                    gw.emit_to_session(&session_id, "users-list", &raw);
                }
            }
            Err(error) => tracing::error!(%error, "users-list not serializable"),
        }
    }

    /// When something is due, if anything is.
    pub(super) fn due(&self, gw: &Gateway) -> Option<tokio::time::Instant> {
        let snapshots = self.snapshots_since.map(|since| since + SNAPSHOT_WAIT);
        match (self.list_due(gw), snapshots) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the coalesced list is due, if one is: at the end of the interval,
    /// or as soon as the burst is over.
    fn list_due(&self, gw: &Gateway) -> Option<tokio::time::Instant> {
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

pub(super) async fn announce_presence(
    gw: &Gateway,
    notices: Vec<PresenceNotice>,
    users_list: &mut UsersListBroadcast,
) {
    for notice in notices {
        match notice {
            PresenceNotice::ListChanged => users_list.changed(gw).await,
            PresenceNotice::Online { user, session } => {
                let sender = gw.local_sid(&session.session_id, &session.gateway_id);
                users_list.delta(gw, "user-joined", user, sender).await;
            }
            PresenceNotice::Offline { user_id } => {
                users_list
                    .delta(gw, "user-left", Value::String(user_id), None)
                    .await;
            }
            // A delta socket's one users-list: the mirror as it is when the list
            // goes out, sent in the dispatcher's order, so every later change
            // reaches it as user-joined / user-left after the list.
            PresenceNotice::Registered { session, user_id } => {
                if session.gateway_id != gw.id() {
                    continue;
                }
                // A device that comes online while the user is being called
                // rings too. Invitations that start ringing from now on reach
                // it with the others: one task keeps both in one order.
                for notice in gw.mirror().ringing_for(&user_id) {
                    if let CallNotice::Ringing {
                        call_id,
                        is_video,
                        by,
                        ..
                    } = notice
                    {
                        let payload = incoming_call(&call_id, is_video, &by);
                        gw.emit_to_session(&session.session_id, "incoming-call", &payload);
                    }
                }
                if gw.wants_presence_delta(&session.session_id) {
                    users_list.snapshot_for(session.session_id);
                }
            }
            PresenceNotice::Updated { user } => {
                gw.emit_presence(PresenceAudience::Deltas, "user-joined", &user, None)
                    .await;
            }
        }
    }
}

/// This gateway's sessions in `call`, except those of `except_user`.
fn local_sessions<'a>(
    gw: &'a Gateway,
    call: &'a meetup_proto::calls::v1::Call,
    except_user: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    call.participants
        .iter()
        .filter(move |p| {
            p.gateway_id == gw.id() && p.user.as_ref().is_none_or(|u| u.id != except_user)
        })
        .map(|p| p.session_id.as_str())
}

/// The `incoming-call` payload: `by` is who rang.
fn incoming_call(call_id: &str, is_video: bool, by: &Value) -> Value {
    json!({ "callId": call_id, "initiator": by, "isVideo": is_video })
}

/// A chat message as clients get it in `call-message` and `call-messages`.
pub fn chat_message(call_id: &str, m: &ChatMessage) -> Value {
    let (id, username) = m
        .from
        .as_ref()
        .map(|u| (u.id.as_str(), u.username.as_str()))
        .unwrap_or_default();
    let mut from = json!({ "id": id, "username": username });
    match SenderKind::try_from(m.kind) {
        Ok(SenderKind::Bot) => from["kind"] = json!("bot"),
        Ok(SenderKind::System) => from["kind"] = json!("system"),
        _ => {}
    }
    json!({
        "callId": call_id,
        "id": m.id,
        "from": from,
        "text": m.text,
        "sentAt": iso_time(m.sent_at),
    })
}

/// Tells an invitation's end: to the invitee's sockets (`invite-ended`), and
/// for a decline or no answer to everyone in the call.
fn announce_invite_ended(
    gw: &Gateway,
    call: &meetup_proto::calls::v1::Call,
    user_id: &str,
    outcome: Outcome,
) {
    let (reason, to_call) = match outcome {
        Outcome::Answered => ("answered-elsewhere", None),
        Outcome::Declined => ("declined", Some("call-declined")),
        Outcome::Missed => ("missed", Some("call-unanswered")),
        Outcome::Cancelled => ("cancelled", None),
        other => {
            tracing::warn!(?other, "an invitation ended in an unknown way");
            return;
        }
    };
    let in_call = |session: &str| call.participants.iter().any(|p| p.session_id == session);
    let ended = json!({ "callId": call.id, "reason": reason });
    for session_id in gw.mirror().sessions_on(user_id, gw.id()) {
        // The socket that answered is in the call: it knows.
        if !in_call(&session_id) {
            gw.emit_calling(&session_id, "invite-ended", &ended);
        }
    }
    if let Some(event) = to_call {
        let payload = json!({ "callId": call.id, "userId": user_id });
        for session_id in local_sessions(gw, call, user_id) {
            gw.emit_calling(session_id, event, &payload);
        }
    }
}

pub(super) fn announce_call(gw: &Gateway, notice: CallNotice) {
    match notice {
        CallNotice::Ringing {
            call_id,
            is_video,
            user_id,
            by,
        } => {
            let payload = incoming_call(&call_id, is_video, &by);
            for session_id in gw.mirror().sessions_on(&user_id, gw.id()) {
                gw.emit_to_session(&session_id, "incoming-call", &payload);
            }
        }
        CallNotice::InviteEnded {
            call,
            user_id,
            outcome,
        } => announce_invite_ended(gw, &call, &user_id, outcome),
        CallNotice::Message { call, message } => {
            let payload = chat_message(&call.id, &message);
            for p in call.participants.iter().filter(|p| p.gateway_id == gw.id()) {
                gw.emit_calling(&p.session_id, "call-message", &payload);
            }
        }
        CallNotice::UserJoined {
            call,
            user,
            user_id,
        } => {
            let payload = json!({ "callId": call.id, "user": user, "participants": public_participants(&call) });
            for session_id in local_sessions(gw, &call, &user_id) {
                gw.emit_to_session(session_id, "user-joined-call", &payload);
            }
        }
        CallNotice::UserLeft { call, user_id } => {
            let payload = json!({ "callId": call.id, "userId": user_id, "participants": public_participants(&call) });
            for session_id in local_sessions(gw, &call, &user_id) {
                gw.emit_to_session(session_id, "user-left-call", &payload);
            }
        }
        CallNotice::Removed { call_id, session } => {
            if session.gateway_id == gw.id() {
                gw.emit_to_session(
                    &session.session_id,
                    "call-left",
                    &json!({ "callId": call_id }),
                );
            }
        }
        CallNotice::Reconnecting { call, user_id } => {
            let payload = json!({ "callId": call.id, "userId": user_id });
            for session_id in local_sessions(gw, &call, &user_id) {
                gw.emit_to_session(session_id, "user-reconnecting", &payload);
            }
        }
        CallNotice::Reconnected { call, user_id } => {
            let payload = json!({ "callId": call.id, "userId": user_id });
            for session_id in local_sessions(gw, &call, &user_id) {
                gw.emit_to_session(session_id, "user-reconnected", &payload);
            }
        }
        CallNotice::Ended { call_id, sessions } => {
            let payload = json!({ "callId": call_id });
            for p in sessions.iter().filter(|p| p.gateway_id == gw.id()) {
                gw.emit_to_session(&p.session_id, "call-ended", &payload);
            }
        }
    }
}
