//! What changes mean for this gateway's sockets: `users-list` (coalesced; to
//! sockets that asked for presence deltas only once, when they register),
//! `user-joined` / `user-left`, and the call events, each to the sockets it is for.

use std::time::Duration;

use meetup_proto::calls::v1::{Call, Outcome};
use serde_json::Value;

use crate::mirror::{CallNotice, PresenceNotice};
use crate::protocol::ServerEvent;
use crate::protocol::outbound::{
    CallUserRef, ChatMessageOut, InviteEndReason, public_participants,
};
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
    event: ServerEvent,
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
        let list = ServerEvent::UsersList(gw.mirror().users_list());
        gw.broadcast_presence(PresenceAudience::FullList, &list, None)
            .await;
        self.last = Some(tokio::time::Instant::now());
        self.pending = false;
        for held in std::mem::take(&mut self.held) {
            gw.broadcast_presence(PresenceAudience::FullList, &held.event, held.except)
                .await;
        }
    }

    /// Sends `user-joined` or `user-left` to every local socket but `except`:
    /// at once to the delta sockets, and to the list sockets right after the
    /// list of this change (which the caller has announced with
    /// [`UsersListBroadcast::changed`] before).
    async fn delta(
        &mut self,
        gw: &Gateway,
        event: ServerEvent,
        except: Option<socketioxide::socket::Sid>,
    ) {
        gw.broadcast_presence(PresenceAudience::Deltas, &event, except)
            .await;
        if self.pending {
            self.held.push(HeldDelta { event, except });
        } else {
            gw.broadcast_presence(PresenceAudience::FullList, &event, except)
                .await;
        }
    }

    /// The mirror's list, serialized once, to every delta socket waiting for it.
    fn flush_snapshots(&mut self, gw: &Gateway) {
        self.snapshots_since = None;
        let sessions = std::mem::take(&mut self.snapshots);
        let list = ServerEvent::UsersList(gw.mirror().users_list());
        gw.send_many(sessions.iter().map(String::as_str), &list);
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
                users_list
                    .delta(gw, ServerEvent::UserJoined(user), sender)
                    .await;
            }
            PresenceNotice::Offline { user_id } => {
                users_list
                    .delta(gw, ServerEvent::UserLeft(user_id), None)
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
                        gw.send(&session.session_id, &incoming_call(call_id, is_video, by));
                    }
                }
                if gw.wants_presence_delta(&session.session_id) {
                    users_list.snapshot_for(session.session_id);
                }
            }
            PresenceNotice::Updated { user } => {
                gw.broadcast_presence(
                    PresenceAudience::Deltas,
                    &ServerEvent::UserJoined(user),
                    None,
                )
                .await;
            }
        }
    }
}

/// What a call change means for this gateway's sockets: which of them get
/// which event. Pure (the mirror is asked only through `sessions_of`, a user's
/// sessions on this gateway), so every rule is tested without sockets; the
/// calling extension's events are filtered by [`Gateway::send_many`].
pub(crate) fn call_deliveries(
    gateway_id: &str,
    notice: CallNotice,
    sessions_of: impl Fn(&str) -> Vec<String>,
) -> Vec<Delivery> {
    // This gateway's sessions in `call`, except those of `except_user`.
    let in_call = |call: &Call, except_user: Option<&str>| -> Vec<String> {
        call.participants
            .iter()
            .filter(|p| {
                p.gateway_id == gateway_id
                    && (except_user.is_none()
                        || p.user
                            .as_ref()
                            .is_none_or(|u| Some(u.id.as_str()) != except_user))
            })
            .map(|p| p.session_id.clone())
            .collect()
    };
    let one = |to: Vec<String>, event: ServerEvent| vec![Delivery { to, event }];
    match notice {
        CallNotice::Ringing {
            call_id,
            is_video,
            user_id,
            by,
        } => one(sessions_of(&user_id), incoming_call(call_id, is_video, by)),
        CallNotice::InviteEnded {
            call,
            user_id,
            outcome,
        } => invite_ended(
            &call,
            &user_id,
            outcome,
            sessions_of(&user_id),
            in_call(&call, Some(&user_id)),
        ),
        CallNotice::Message { call, message } => one(
            in_call(&call, None),
            ServerEvent::CallMessage(ChatMessageOut::new(&call.id, &message)),
        ),
        CallNotice::UserJoined {
            call,
            user,
            user_id,
        } => one(
            in_call(&call, Some(&user_id)),
            ServerEvent::UserJoinedCall {
                participants: public_participants(&call),
                call_id: call.id,
                user,
            },
        ),
        CallNotice::UserLeft { call, user_id } => {
            let to = in_call(&call, Some(&user_id));
            let event = ServerEvent::UserLeftCall {
                participants: public_participants(&call),
                call_id: call.id,
                user_id,
            };
            one(to, event)
        }
        CallNotice::Removed { call_id, session } if session.gateway_id == gateway_id => one(
            vec![session.session_id],
            ServerEvent::CallLeft(ServerEvent::call_ref(&call_id)),
        ),
        CallNotice::Removed { .. } => Vec::new(),
        CallNotice::Reconnecting { call, user_id } => one(
            in_call(&call, Some(&user_id)),
            ServerEvent::UserReconnecting(ServerEvent::call_user(&call.id, &user_id)),
        ),
        CallNotice::Reconnected { call, user_id } => one(
            in_call(&call, Some(&user_id)),
            ServerEvent::UserReconnected(ServerEvent::call_user(&call.id, &user_id)),
        ),
        CallNotice::Ended { call_id, sessions } => one(
            sessions
                .into_iter()
                .filter(|p| p.gateway_id == gateway_id)
                .map(|p| p.session_id)
                .collect(),
            ServerEvent::CallEnded(ServerEvent::call_ref(&call_id)),
        ),
    }
}

/// Sockets and the event they get.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub to: Vec<String>,
    pub event: ServerEvent,
}

/// `incoming-call`: `by` is who rang.
fn incoming_call(call_id: String, is_video: bool, by: Value) -> ServerEvent {
    ServerEvent::IncomingCall {
        call_id,
        initiator: by,
        is_video,
    }
}

/// An invitation's end: to the invitee's sockets not in the call
/// (`invite-ended`; the socket that answered is in the call and knows), and for
/// a decline or no answer to the others in the call.
fn invite_ended(
    call: &Call,
    user_id: &str,
    outcome: Outcome,
    invitee: Vec<String>,
    others: Vec<String>,
) -> Vec<Delivery> {
    /// The event the others in the call get, if any.
    type ToCall = Option<fn(CallUserRef) -> ServerEvent>;
    let (reason, to_call): (_, ToCall) = match outcome {
        Outcome::Answered => (InviteEndReason::AnsweredElsewhere, None),
        Outcome::Declined => (InviteEndReason::Declined, Some(ServerEvent::CallDeclined)),
        Outcome::Missed => (InviteEndReason::Missed, Some(ServerEvent::CallUnanswered)),
        Outcome::Cancelled => (InviteEndReason::Cancelled, None),
        other => {
            tracing::warn!(?other, "an invitation ended in an unknown way");
            return Vec::new();
        }
    };
    let in_call = |session: &String| call.participants.iter().any(|p| &p.session_id == session);
    let mut deliveries = vec![Delivery {
        to: invitee.into_iter().filter(|s| !in_call(s)).collect(),
        event: ServerEvent::InviteEnded {
            call_id: call.id.clone(),
            reason,
        },
    }];
    if let Some(event) = to_call {
        deliveries.push(Delivery {
            to: others,
            event: event(ServerEvent::call_user(&call.id, user_id)),
        });
    }
    deliveries
}

pub(super) fn announce_call(gw: &Gateway, notice: CallNotice) {
    let deliveries = call_deliveries(gw.id(), notice, |user_id| {
        gw.mirror().sessions_on(user_id, gw.id())
    });
    for delivery in deliveries {
        gw.send_many(delivery.to.iter().map(String::as_str), &delivery.event);
    }
}

#[cfg(test)]
mod tests {
    use meetup_proto::calls::v1::{CallUser, Participant};
    use serde_json::json;

    use super::*;

    fn participant(user: &str, session: &str, gateway: &str) -> Participant {
        Participant {
            user: Some(CallUser {
                id: user.into(),
                username: user.to_uppercase(),
            }),
            session_id: session.into(),
            gateway_id: gateway.into(),
            ..Participant::default()
        }
    }

    /// A call with a and b here (gw1), and c on another gateway.
    fn call() -> Call {
        Call {
            id: "c1".into(),
            participants: vec![
                participant("a", "sa", "gw1"),
                participant("b", "sb", "gw1"),
                participant("c", "sc", "gw2"),
            ],
            ..Call::default()
        }
    }

    fn nobody(_: &str) -> Vec<String> {
        Vec::new()
    }

    fn summary(deliveries: &[Delivery]) -> Vec<(Vec<&str>, &str, Value)> {
        deliveries
            .iter()
            .map(|d| {
                (
                    d.to.iter().map(String::as_str).collect(),
                    d.event.name(),
                    serde_json::to_value(&d.event).expect("serializable"),
                )
            })
            .collect()
    }

    #[test]
    fn a_leave_goes_to_the_others_here_with_the_participants_left() {
        let mut call = call();
        call.participants.remove(0);
        let notice = CallNotice::UserLeft {
            call,
            user_id: "a".into(),
        };
        assert_eq!(
            summary(&call_deliveries("gw1", notice, nobody)),
            vec![(
                vec!["sb"],
                "user-left-call",
                json!({"callId": "c1", "userId": "a", "participants": [
                    {"id": "b", "username": "B"}, {"id": "c", "username": "C"}]})
            )]
        );
    }

    #[test]
    fn a_chat_message_goes_to_everyone_here_the_sender_too() {
        let notice = CallNotice::Message {
            call: call(),
            message: meetup_proto::calls::v1::ChatMessage {
                id: "m".into(),
                text: "hi".into(),
                ..Default::default()
            },
        };
        let deliveries = call_deliveries("gw1", notice, nobody);
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].to, vec!["sa", "sb"]);
        assert!(deliveries[0].event.calling_only());
    }

    #[test]
    fn a_declined_invitation_ends_on_the_invitees_other_sockets_and_is_told_to_the_call() {
        let notice = CallNotice::InviteEnded {
            call: call(),
            user_id: "b".into(),
            outcome: Outcome::Declined,
        };
        // b has a second socket here that is not in the call.
        let sessions = |user: &str| match user {
            "b" => vec!["sb".to_owned(), "sb2".to_owned()],
            _ => Vec::new(),
        };
        assert_eq!(
            summary(&call_deliveries("gw1", notice, sessions)),
            vec![
                (
                    vec!["sb2"],
                    "invite-ended",
                    json!({"callId": "c1", "reason": "declined"})
                ),
                (
                    vec!["sa"],
                    "call-declined",
                    json!({"callId": "c1", "userId": "b"})
                ),
            ]
        );
    }

    #[test]
    fn an_answered_invitation_is_told_only_to_the_invitee() {
        let notice = CallNotice::InviteEnded {
            call: call(),
            user_id: "b".into(),
            outcome: Outcome::Answered,
        };
        let sessions = |_: &str| vec!["sb".to_owned(), "sb2".to_owned()];
        assert_eq!(
            summary(&call_deliveries("gw1", notice, sessions)),
            vec![(
                vec!["sb2"],
                "invite-ended",
                json!({"callId": "c1", "reason": "answered-elsewhere"})
            )]
        );
    }

    #[test]
    fn removed_and_ended_reach_only_this_gateways_sockets() {
        let removed = |gateway: &str| CallNotice::Removed {
            call_id: "c1".into(),
            session: participant("c", "sc", gateway),
        };
        assert!(call_deliveries("gw1", removed("gw2"), nobody).is_empty());
        assert_eq!(
            summary(&call_deliveries("gw1", removed("gw1"), nobody)),
            vec![(vec!["sc"], "call-left", json!({"callId": "c1"}))]
        );
        let ended = CallNotice::Ended {
            call_id: "c1".into(),
            sessions: call().participants,
        };
        assert_eq!(
            summary(&call_deliveries("gw2", ended, nobody)),
            vec![(vec!["sc"], "call-ended", json!({"callId": "c1"}))]
        );
    }

    #[test]
    fn ringing_reaches_every_socket_of_the_invitee_here() {
        let notice = CallNotice::Ringing {
            call_id: "c1".into(),
            is_video: false,
            user_id: "d".into(),
            by: json!({"id": "a", "username": "A"}),
        };
        let sessions = |user: &str| vec![format!("{user}-1"), format!("{user}-2")];
        assert_eq!(
            summary(&call_deliveries("gw1", notice, sessions)),
            vec![(
                vec!["d-1", "d-2"],
                "incoming-call",
                json!({"callId": "c1", "initiator": {"id": "a", "username": "A"}, "isVideo": false})
            )]
        );
    }
}
