//! The gateway's mirror of presence and calls, kept from the watches of the
//! presence and calls buckets of the shared store.
//!
//! It answers every per-relay question (may these two talk, where is the target)
//! without a round trip, and `GET /`'s cluster-wide counters. Applying a changed
//! key returns what the change means for clients (someone came online, joined a
//! call, ...), found by comparing the key's new value with the mirrored one, so
//! the same code serves live changes and a fresh snapshot after a lost watch.
//! A std `RwLock` is fine: it is never held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use meetup_proto::calls::v1::{Call, ChatMessage, Outcome, Participant};
use meetup_proto::presence::v1::Session;
use serde_json::Value;
use tokio::sync::watch;

mod calls;
mod presence;
mod routing;

/// Cheap-to-clone handle on the mirror.
#[derive(Clone, Debug)]
pub struct Mirror {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    /// Bumped after each applied change, once its notifications are out.
    progress: watch::Sender<Progress>,
    /// Told when a write the store acknowledged has not reached the mirror in
    /// [`STALLED_AFTER`]: that bucket's watch may be stuck (see [`Mirror::wait`]).
    presence_stalled: Stall,
    calls_stalled: Stall,
}

/// A waiter's word that one bucket's watch may be stuck: a wake-up for the
/// dispatcher, and the highest revision a waiter gave up on. By the time the
/// dispatcher looks, the mirror may have caught up (it was working through a
/// burst, not stuck): then nothing is opened again.
#[derive(Debug, Default)]
struct Stall {
    notify: tokio::sync::Notify,
    revision: std::sync::atomic::AtomicU64,
}

impl Stall {
    fn report(&self, revision: u64) {
        self.revision
            .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Resolves with the revision reported.
    async fn reported(&self) -> u64 {
        self.notify.notified().await;
        self.revision.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How long a waiter gives the mirror to show a write the store acknowledged
/// before it asks for the watch to be opened again. Applying takes
/// milliseconds; a watch whose consumer lived on a NATS node that died gets
/// nothing more, and the client library notices only after missing its
/// heartbeats (10 s).
const STALLED_AFTER: Duration = Duration::from_millis(750);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub presence_revision: u64,
    pub calls_revision: u64,
    pub synced: bool,
}

#[derive(Debug, Default)]
struct State {
    presence: Following,
    users: HashMap<String, MirroredUser>,
    users_list: Option<Arc<Value>>,
    calls: Following,
    calls_by_id: HashMap<String, Call>,
    /// The chat of each call, by call id.
    chats: HashMap<String, MirroredChat>,
}

/// A call's chat as the mirror holds it.
#[derive(Debug, Clone, Default)]
struct MirroredChat {
    /// The `created_at` of the call the chat belongs to.
    call_created_at: Option<prost_types::Timestamp>,
    /// The messages, oldest first, with the revision at which the mirror
    /// first saw each.
    messages: Vec<(u64, ChatMessage)>,
}

/// Where the mirror stands in one bucket's watch.
#[derive(Debug, Default)]
struct Following {
    revision: u64,
    synced: bool,
    /// Keys seen since a new watch started, while it delivers its snapshot.
    resync: Option<HashSet<String>>,
}

#[derive(Debug, Clone)]
struct MirroredUser {
    public: Value,
    /// Orders the users list: when the user came online, then the id.
    order: (i64, i32, String),
    /// In registration order: the last is the most recent.
    sessions: Vec<Session>,
}

/// Where a relay goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub session_id: String,
    pub gateway_id: String,
    /// The session is away: its relays wait in the missed-relays log.
    pub away: bool,
}

/// What a presence change means for clients.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceNotice {
    /// The users list changed (or was refreshed by a registration).
    ListChanged,
    /// A user came online through `session`.
    Online {
        user: Value,
        session: Session,
    },
    Offline {
        user_id: String,
    },
    /// `session` of `user_id` registered (any session of the user, the
    /// first or another).
    Registered {
        session: Session,
        user_id: String,
    },
    /// An online user's public record changed (a registration with a new username).
    Updated {
        user: Value,
    },
}

/// What a call change means for clients.
#[derive(Debug, Clone, PartialEq)]
pub enum CallNotice {
    /// An invitation started ringing: the invitee's sockets get `incoming-call`.
    Ringing {
        call_id: String,
        is_video: bool,
        user_id: String,
        /// Who rang: `{ id, username }`.
        by: Value,
    },
    /// An invitation stopped ringing with `outcome` (answered, declined,
    /// cancelled or missed).
    InviteEnded {
        call: Call,
        user_id: String,
        outcome: Outcome,
    },
    /// A chat message was posted into the call.
    Message { call: Call, message: ChatMessage },
    /// A user entered the call (its first session in it).
    UserJoined {
        call: Call,
        user: Value,
        user_id: String,
    },
    /// A user left the call (its last session in it).
    UserLeft { call: Call, user_id: String },
    /// A session was taken out of the call through the API.
    Removed {
        call_id: String,
        session: Participant,
    },
    /// The call was ended through the API: `sessions` were in it.
    Ended {
        call_id: String,
        sessions: Vec<Participant>,
    },
    /// A user's socket in the call went without saying goodbye (its session
    /// is away and it has no other in the call): the others hear
    /// `user-reconnecting`.
    Reconnecting { call: Call, user_id: String },
    /// A user whose sessions in the call were all away is back (a new socket
    /// resumed one): the others hear `user-reconnected`.
    Reconnected { call: Call, user_id: String },
}

/// `joinedAt` as clients see it: ISO-8601 UTC with milliseconds, like JavaScript's
/// `Date.prototype.toISOString()`.
pub fn iso_time(t: Option<prost_types::Timestamp>) -> String {
    // humantime formats 1970 to 9999 only and panics outside; a bad timestamp
    // from a peer must not (found by fuzzing the bus messages).
    let time = t
        .and_then(|t| SystemTime::try_from(t).ok())
        .filter(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .is_ok_and(|d| d.as_secs() < 253_402_300_800)
        })
        .unwrap_or_else(SystemTime::now);
    humantime::format_rfc3339_millis(time).to_string()
}

impl Default for Mirror {
    fn default() -> Self {
        let (progress, _) = watch::channel(Progress::default());
        Mirror {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                progress,
                presence_stalled: Stall::default(),
                calls_stalled: Stall::default(),
            }),
        }
    }
}

impl Following {
    fn saw(&mut self, key: &str, revision: u64) {
        self.revision = self.revision.max(revision);
        if let Some(seen) = self.resync.as_mut() {
            seen.insert(key.to_owned());
        }
    }
}

impl Mirror {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The presence watch broke: that half of the mirror is not in sync until
    /// a new presence watch is current. Only this half: each watch is opened
    /// again on its own, and a flag the other watch never clears again would
    /// keep the gateway not ready for good.
    pub fn presence_watch_lost(&self) {
        self.write().presence.synced = false;
        self.publish_progress();
    }

    /// The calls watch broke; see [`Mirror::presence_watch_lost`].
    pub fn calls_watch_lost(&self) {
        self.write().calls.synced = false;
        self.publish_progress();
    }

    /// Tells waiters that everything applied so far has been announced.
    pub fn publish_progress(&self) {
        let state = self.read();
        let progress = Progress {
            presence_revision: state.presence.revision,
            calls_revision: state.calls.revision,
            synced: state.presence.synced && state.calls.synced,
        };
        drop(state);
        self.shared.progress.send_replace(progress);
    }

    pub fn is_synced(&self) -> bool {
        let state = self.read();
        state.presence.synced && state.calls.synced
    }

    /// Waits until the mirror has applied (and announced) presence revision
    /// `revision`, at most `limit`.
    pub async fn wait_presence(&self, revision: u64, limit: Duration) {
        if revision > 0 {
            let stalled = &self.shared.presence_stalled;
            self.wait(limit, stalled, revision, |p| p.presence_revision)
                .await;
        }
    }

    /// Waits until the mirror has applied (and announced) calls revision `revision`.
    pub async fn wait_calls(&self, revision: u64, limit: Duration) {
        if revision > 0 {
            let stalled = &self.shared.calls_stalled;
            self.wait(limit, stalled, revision, |p| p.calls_revision)
                .await;
        }
    }

    /// Resolves when a waiter found the presence watch behind a write: true
    /// when it still is (it is stuck), false when it has caught up since.
    pub async fn presence_stalled(&self) -> bool {
        let revision = self.shared.presence_stalled.reported().await;
        self.read().presence.revision < revision
    }

    /// [`Mirror::presence_stalled`] for the calls watch.
    pub async fn calls_stalled(&self) -> bool {
        let revision = self.shared.calls_stalled.reported().await;
        self.read().calls.revision < revision
    }

    /// Waits until `applied` (the mirror's revision of one bucket) reaches
    /// `revision`, at most `limit`. Past [`STALLED_AFTER`] the revision waited
    /// for exists in the store but the watch has not brought it: `stalled`
    /// asks the dispatcher to open the watch again if it is still behind when
    /// the dispatcher looks (a stuck watch), and the wait goes on.
    async fn wait(
        &self,
        limit: Duration,
        stalled: &Stall,
        revision: u64,
        applied: impl Fn(&Progress) -> u64,
    ) {
        let done = |p: &Progress| applied(p) >= revision;
        let mut rx = self.shared.progress.subscribe();
        let first = STALLED_AFTER.min(limit);
        if tokio::time::timeout(first, rx.wait_for(&done))
            .await
            .is_ok()
        {
            return;
        }
        tracing::debug!(waited = ?first, revision, "mirror behind an acknowledged write");
        stalled.report(revision);
        if tokio::time::timeout(limit.saturating_sub(first), rx.wait_for(&done))
            .await
            .is_err()
        {
            tracing::warn!(?limit, "mirror did not catch up in time");
        }
    }

    /// The last presence revision applied, when the presence half is in sync.
    pub fn presence_revision(&self) -> Option<u64> {
        let state = self.read();
        state.presence.synced.then_some(state.presence.revision)
    }

    pub fn counts(&self) -> (usize, usize) {
        let state = self.read();
        (state.users.len(), state.calls_by_id.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::ack::ErrorCode;
    use meetup_proto::bus::v1::{
        CallChange, CallEnded, CallRecord, CallStarted, EndReason, LeaveReason, ParticipantAway,
        ParticipantJoined, ParticipantLeft, ParticipantResumed, PresenceChange, SessionRegistered,
        SessionUnregistered, UserRecord, call_change, presence_change,
    };
    use meetup_proto::calls::v1::{Attendee, CallUser};
    use meetup_proto::presence::v1::{OnlineUser, User};

    use super::*;

    /// An attendee of `user` with `outcome`, rung by `a` at `invited_secs`.
    fn attendee(user: &str, outcome: Outcome, invited_secs: u64) -> Attendee {
        Attendee {
            user: Some(CallUser {
                id: user.into(),
                username: String::new(),
            }),
            invited_by: Some(CallUser {
                id: "a".into(),
                username: "a".into(),
            }),
            invited_at: Some((SystemTime::UNIX_EPOCH + Duration::from_secs(invited_secs)).into()),
            outcome: outcome as i32,
            ..Default::default()
        }
    }

    fn user(id: &str, joined_secs: u64) -> User {
        User {
            id: id.into(),
            username: format!("name-{id}"),
            joined_at: Some((SystemTime::UNIX_EPOCH + Duration::from_secs(joined_secs)).into()),
        }
    }

    fn session(id: &str, gateway: &str) -> Session {
        Session {
            session_id: id.into(),
            gateway_id: gateway.into(),
            ..Default::default()
        }
    }

    fn online(u: User, sessions: Vec<Session>) -> UserRecord {
        let last = sessions.last().cloned();
        UserRecord {
            user: Some(OnlineUser {
                user: Some(u),
                sessions,
            }),
            change: Some(PresenceChange {
                change: Some(presence_change::Change::Registered(SessionRegistered {
                    session: last,
                    first_session: false,
                })),
            }),
            traceparent: String::new(),
        }
    }

    fn participant(u: &str, s: &str, gw: &str) -> Participant {
        Participant {
            user: Some(CallUser {
                id: u.into(),
                username: u.into(),
            }),
            session_id: s.into(),
            gateway_id: gw.into(),
            ..Default::default()
        }
    }

    fn record(call: &Call, change: call_change::Change) -> Option<CallRecord> {
        Some(CallRecord {
            call: Some(call.clone()),
            change: Some(CallChange {
                change: Some(change),
            }),
            traceparent: String::new(),
        })
    }

    fn synced() -> Mirror {
        let mirror = Mirror::default();
        mirror.presence_watch_started();
        mirror.presence_current();
        mirror.calls_watch_started();
        mirror.calls_current();
        mirror
    }

    #[test]
    fn users_come_and_go_and_the_list_follows() {
        let mirror = synced();
        let notices =
            mirror.apply_user("b", Some(online(user("b", 2), vec![session("s2", "g")])), 1);
        assert!(
            matches!(&notices[..], [PresenceNotice::ListChanged, PresenceNotice::Online { session, .. }, PresenceNotice::Registered { session: registered, .. }] if session.session_id == "s2" && registered.session_id == "s2"),
            "{notices:?}"
        );
        mirror.apply_user("a", Some(online(user("a", 1), vec![session("s1", "g")])), 2);
        let list = mirror.users_list();
        assert_eq!(list[0]["id"], "a", "ordered by when they came online");
        assert_eq!(list[1]["id"], "b");
        assert_eq!(list[0]["joinedAt"], "1970-01-01T00:00:01.000Z");
        // A second session: the list is refreshed, nobody came online.
        let notices = mirror.apply_user(
            "a",
            Some(online(
                user("a", 1),
                vec![session("s1", "g"), session("s3", "g")],
            )),
            3,
        );
        assert_eq!(
            notices,
            vec![
                PresenceNotice::ListChanged,
                PresenceNotice::Registered {
                    session: session("s3", "g"),
                    user_id: "a".into(),
                }
            ]
        );
        // The same record read again (a new watch's snapshot): no new session.
        let again = online(user("a", 1), vec![session("s1", "g"), session("s3", "g")]);
        assert_eq!(
            mirror.apply_user("a", Some(again), 3),
            vec![PresenceNotice::ListChanged]
        );
        // A new username: the list, and the changed record for delta sockets.
        let mut renamed = user("a", 1);
        renamed.username = "Ada".into();
        let notices = mirror.apply_user(
            "a",
            Some(online(
                renamed.clone(),
                vec![session("s1", "g"), session("s3", "g")],
            )),
            4,
        );
        assert!(
            matches!(&notices[..], [PresenceNotice::ListChanged, PresenceNotice::Updated { user }] if user["username"] == "Ada"),
            "{notices:?}"
        );
        // One of two sessions goes: nothing to tell.
        let mut one_left = online(renamed, vec![session("s3", "g")]);
        one_left.change = Some(PresenceChange {
            change: Some(presence_change::Change::Unregistered(SessionUnregistered {
                session_id: "s1".into(),
                reason: LeaveReason::Left as i32,
            })),
        });
        assert!(mirror.apply_user("a", Some(one_left), 5).is_empty());
        let notices = mirror.apply_user("a", None, 6);
        assert!(notices.contains(&PresenceNotice::Offline {
            user_id: "a".into()
        }));
        assert_eq!(mirror.counts(), (1, 0));
    }

    #[test]
    fn a_new_watch_removes_what_it_no_longer_mentions() {
        let mirror = synced();
        mirror.apply_user("a", Some(online(user("a", 1), vec![session("s1", "g")])), 1);
        mirror.apply_user("b", Some(online(user("b", 2), vec![session("s2", "g")])), 2);
        mirror.presence_watch_started();
        mirror.apply_user("b", Some(online(user("b", 2), vec![session("s2", "g")])), 2);
        let notices = mirror.presence_current();
        // As for a change seen live: the list first, then user-left.
        assert_eq!(
            notices,
            [
                PresenceNotice::ListChanged,
                PresenceNotice::Offline {
                    user_id: "a".into()
                }
            ]
        );
        assert_eq!(mirror.counts().0, 1);
    }

    #[test]
    fn call_changes_become_the_protocol_notices() {
        let mirror = synced();
        let mut call = Call {
            id: "c".into(),
            initiator: Some(CallUser {
                id: "a".into(),
                username: "a".into(),
            }),
            participants: vec![participant("a", "sa", "g1")],
            invited_user_ids: vec!["b".into()],
            attendees: vec![attendee("b", Outcome::Ringing, 1)],
            version: 1,
            ..Default::default()
        };
        let notices = mirror.apply_call(
            "c",
            record(&call, call_change::Change::Started(CallStarted {})),
            1,
        );
        assert!(
            matches!(&notices[..], [CallNotice::Ringing { user_id, by, .. }] if user_id == "b" && by["id"] == "a")
        );
        call.participants.push(participant("b", "sb1", "g2"));
        call.attendees[0].outcome = Outcome::Answered as i32;
        let joined = call_change::Change::Joined(ParticipantJoined {
            participant: Some(participant("b", "sb1", "g2")),
        });
        let notices = mirror.apply_call("c", record(&call, joined.clone()), 2);
        assert!(matches!(
            &notices[..],
            [
                CallNotice::InviteEnded { user_id: ended, outcome: Outcome::Answered, .. },
                CallNotice::UserJoined { user_id, .. },
            ] if user_id == "b" && ended == "b"
        ));
        // b's second socket: nobody is told.
        call.participants.push(participant("b", "sb2", "g2"));
        assert!(mirror.apply_call("c", record(&call, joined), 3).is_empty());
        // Removed through the API: both sockets hear call-left, the others user-left-call once.
        call.participants.retain(|p| p.session_id == "sa");
        let removed = call_change::Change::Left(ParticipantLeft {
            participant: Some(participant("b", "sb1", "g2")),
            reason: LeaveReason::Removed as i32,
            call_ended: false,
        });
        let notices = mirror.apply_call("c", record(&call, removed), 4);
        assert_eq!(
            notices
                .iter()
                .filter(|n| matches!(n, CallNotice::Removed { .. }))
                .count(),
            2
        );
        assert_eq!(
            notices
                .iter()
                .filter(|n| matches!(n, CallNotice::UserLeft { .. }))
                .count(),
            1
        );
        // Ended through the API.
        let mut ended = call.clone();
        ended.participants.clear();
        ended.ended_at = Some(SystemTime::now().into());
        let end = call_change::Change::Ended(CallEnded {
            reason: EndReason::Ended as i32,
            participants: call.participants.clone(),
        });
        let notices = mirror.apply_call("c", record(&ended, end), 5);
        assert!(
            matches!(&notices[..], [CallNotice::Ended { sessions, .. }] if sessions.len() == 1)
        );
        assert_eq!(mirror.counts(), (0, 0));
    }

    #[test]
    fn a_call_first_seen_mid_life_is_told_again() {
        // The watch was down while a started, b joined and c was invited:
        // the new watch's snapshot brings the call folded into its last change.
        let mirror = synced();
        let call = Call {
            id: "c".into(),
            initiator: Some(CallUser {
                id: "a".into(),
                username: "a".into(),
            }),
            participants: vec![
                participant("a", "sa", "g1"),
                participant("b", "sb1", "g2"),
                participant("b", "sb2", "g1"),
                participant("d", "sd", "g1"),
            ],
            invited_user_ids: vec!["b".into(), "c".into(), "d".into()],
            attendees: vec![
                attendee("b", Outcome::Answered, 1),
                attendee("c", Outcome::Ringing, 1),
                attendee("d", Outcome::Answered, 1),
            ],
            version: 4,
            ..Default::default()
        };
        let joined = call_change::Change::Joined(ParticipantJoined {
            participant: Some(participant("d", "sd", "g1")),
        });
        let notices = mirror.apply_call("c", record(&call, joined.clone()), 9);
        let [
            CallNotice::Ringing { user_id: rung, .. },
            CallNotice::UserJoined {
                call: b_joined,
                user_id: b,
                ..
            },
            CallNotice::UserJoined {
                call: d_joined,
                user_id: d,
                ..
            },
        ] = &notices[..]
        else {
            panic!("unexpected notices: {notices:?}");
        };
        // Only c still rings; b and d answered.
        assert_eq!(rung, "c");
        // b's join is told to those before it (a), d's to a and b's sockets.
        assert_eq!((b.as_str(), b_joined.participants.len()), ("b", 2));
        assert_eq!((d.as_str(), d_joined.participants.len()), ("d", 4));
        // Seen now: the next change is a plain difference again.
        assert!(mirror.apply_call("c", record(&call, joined), 10).is_empty());
    }

    #[test]
    fn peers_hear_a_user_go_away_and_come_back() {
        let mirror = synced();
        let mut call = Call {
            id: "c".into(),
            participants: vec![participant("a", "sa", "g1"), participant("b", "sb", "g2")],
            version: 2,
            ..Default::default()
        };
        mirror.apply_call(
            "c",
            record(&call, call_change::Change::Started(CallStarted {})),
            1,
        );
        call.participants[1].away_until = Some(SystemTime::now().into());
        let away = call_change::Change::Away(ParticipantAway {
            participant: Some(call.participants[1].clone()),
        });
        let notices = mirror.apply_call("c", record(&call, away), 2);
        assert!(
            matches!(&notices[..], [CallNotice::Reconnecting { user_id, .. }] if user_id == "b"),
            "{notices:?}"
        );
        // Routed to the log while away.
        assert!(mirror.route_relay("c", "a", "b").expect("route").away);
        let back = participant("b", "sb2", "g1");
        call.participants[1] = back.clone();
        let resumed = call_change::Change::Resumed(ParticipantResumed {
            previous_session_id: "sb".into(),
            participant: Some(back),
        });
        let notices = mirror.apply_call("c", record(&call, resumed), 3);
        assert!(
            matches!(&notices[..], [CallNotice::Reconnected { user_id, .. }] if user_id == "b"),
            "{notices:?}"
        );
        let route = mirror.route_relay("c", "a", "b").expect("route");
        assert_eq!((route.session_id.as_str(), route.away), ("sb2", false));

        // Taken over while still live (its gateway died unnoticed): told too.
        let again = participant("b", "sb3", "g3");
        call.participants[1] = again.clone();
        let resumed = call_change::Change::Resumed(ParticipantResumed {
            previous_session_id: "sb2".into(),
            participant: Some(again),
        });
        let notices = mirror.apply_call("c", record(&call, resumed), 4);
        assert!(
            matches!(&notices[..], [CallNotice::Reconnected { user_id, .. }] if user_id == "b"),
            "{notices:?}"
        );
    }

    #[test]
    fn relays_only_between_users_sharing_a_call() {
        let mirror = synced();
        mirror.apply_user(
            "a",
            Some(online(user("a", 1), vec![session("sa", "g1")])),
            1,
        );
        mirror.apply_user(
            "b",
            Some(online(
                user("b", 2),
                vec![session("sb1", "g1"), session("sb2", "g2")],
            )),
            2,
        );
        mirror.apply_user(
            "c",
            Some(online(user("c", 3), vec![session("sc", "g1")])),
            3,
        );
        let mut call = Call {
            id: "call".into(),
            initiator: Some(CallUser {
                id: "a".into(),
                username: "a".into(),
            }),
            participants: vec![participant("a", "sa", "g1")],
            invited_user_ids: vec!["b".into()],
            version: 1,
            ..Default::default()
        };
        mirror.apply_call(
            "call",
            record(&call, call_change::Change::Started(CallStarted {})),
            4,
        );

        // b is invited, not joined: its most recent socket.
        assert_eq!(
            mirror.route_relay("call", "a", "b"),
            Ok(Route {
                session_id: "sb2".into(),
                gateway_id: "g2".into(),
                away: false,
            })
        );
        for (from, to) in [("a", "c"), ("c", "a")] {
            assert_eq!(
                mirror.route_relay("call", from, to).map_err(|e| e.code),
                Err(ErrorCode::NotInCall)
            );
        }
        assert_eq!(
            mirror.route_relay("nope", "a", "b").map_err(|e| e.code),
            Err(ErrorCode::NotInCall)
        );
        // Once b joins from its older socket, relays go there.
        call.participants.push(participant("b", "sb1", "g1"));
        let joined = call_change::Change::Joined(ParticipantJoined {
            participant: Some(participant("b", "sb1", "g1")),
        });
        mirror.apply_call("call", record(&call, joined), 5);
        assert_eq!(
            mirror.route_relay("call", "a", "b"),
            Ok(Route {
                session_id: "sb1".into(),
                gateway_id: "g1".into(),
                away: false,
            })
        );
        assert_eq!(mirror.sessions_on("b", "g2"), vec!["sb2".to_string()]);
        assert_eq!(mirror.calls_of_session("sb1"), vec!["call".to_string()]);
    }

    #[tokio::test]
    async fn waiters_wake_when_progress_is_published() {
        let mirror = synced();
        let waiter = {
            let mirror = mirror.clone();
            tokio::spawn(async move { mirror.wait_presence(1, Duration::from_secs(10)).await })
        };
        mirror.apply_user("a", Some(online(user("a", 1), vec![session("s1", "g")])), 1);
        mirror.publish_progress();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken before the limit")
            .expect("task");
    }

    #[test]
    fn invitations_ring_end_and_ring_again() {
        use meetup_proto::bus::v1::{InvitesEnded, UsersInvited};
        let mirror = synced();
        let mut call = Call {
            id: "c".into(),
            participants: vec![participant("a", "sa", "g1")],
            attendees: vec![
                attendee("b", Outcome::Ringing, 1),
                attendee("z", Outcome::Missed, 1),
            ],
            created_at: Some(SystemTime::UNIX_EPOCH.into()),
            version: 1,
            ..Default::default()
        };
        let notices = mirror.apply_call(
            "c",
            record(&call, call_change::Change::Started(CallStarted {})),
            1,
        );
        // z was offline: not rung.
        assert!(matches!(&notices[..], [CallNotice::Ringing { user_id, .. }] if user_id == "b"));
        call.attendees[0].outcome = Outcome::Declined as i32;
        let ended = call_change::Change::InvitesEnded(InvitesEnded {
            user_ids: vec!["b".into()],
            outcome: Outcome::Declined as i32,
        });
        let notices = mirror.apply_call("c", record(&call, ended), 2);
        assert!(matches!(
            &notices[..],
            [CallNotice::InviteEnded { user_id, outcome: Outcome::Declined, .. }] if user_id == "b"
        ));
        // Rung again (a new invited_at), and z for the first time.
        call.attendees[0] = attendee("b", Outcome::Ringing, 5);
        call.attendees[1] = attendee("z", Outcome::Ringing, 5);
        let invited = call_change::Change::Invited(UsersInvited {
            user_ids: vec!["b".into(), "z".into()],
            by: None,
        });
        let notices = mirror.apply_call("c", record(&call, invited), 3);
        assert_eq!(
            notices
                .iter()
                .filter(|n| matches!(n, CallNotice::Ringing { .. }))
                .count(),
            2
        );
        // The call ends: whoever rang is told, as cancelled.
        let mut over = call.clone();
        over.participants.clear();
        over.ended_at = Some(SystemTime::now().into());
        for a in &mut over.attendees {
            a.outcome = Outcome::Cancelled as i32;
        }
        let left = call_change::Change::Left(ParticipantLeft {
            participant: Some(participant("a", "sa", "g1")),
            reason: LeaveReason::Left as i32,
            call_ended: true,
        });
        let notices = mirror.apply_call("c", record(&over, left), 4);
        assert_eq!(
            notices
                .iter()
                .filter(|n| matches!(
                    n,
                    CallNotice::InviteEnded {
                        outcome: Outcome::Cancelled,
                        ..
                    }
                ))
                .count(),
            2
        );
    }

    #[test]
    fn chat_messages_are_told_once_and_a_joiner_gets_those_before_it() {
        use meetup_proto::bus::v1::{CallChat, ParticipantJoined};
        let mirror = synced();
        let created = Some(prost_types::Timestamp {
            seconds: 100,
            nanos: 0,
        });
        let mut call = Call {
            id: "c".into(),
            participants: vec![participant("a", "sa", "g1")],
            created_at: created,
            version: 1,
            ..Default::default()
        };
        mirror.apply_call(
            "c",
            record(&call, call_change::Change::Started(CallStarted {})),
            1,
        );
        let message = |seq: u64| ChatMessage {
            id: format!("m{seq}"),
            seq,
            text: format!("text {seq}"),
            ..Default::default()
        };
        let chat = |messages: Vec<ChatMessage>, created| CallChat {
            call_id: "c".into(),
            call_created_at: created,
            next_seq: messages.len() as u64 + 1,
            messages,
        };
        let told = mirror.apply_chat("c", Some(chat(vec![message(1)], created)), 2);
        assert!(matches!(&told[..], [CallNotice::Message { message, .. }] if message.seq == 1));
        // b joins at 3; message 2 comes after.
        call.participants.push(participant("b", "sb", "g1"));
        let joined = call_change::Change::Joined(ParticipantJoined {
            participant: Some(participant("b", "sb", "g1")),
        });
        mirror.apply_call("c", record(&call, joined), 3);
        let told = mirror.apply_chat("c", Some(chat(vec![message(1), message(2)], created)), 4);
        assert!(
            matches!(&told[..], [CallNotice::Message { message, call }] if message.seq == 2 && call.participants.len() == 2)
        );
        // The same chat again (a new watch's snapshot): nothing new.
        assert!(
            mirror
                .apply_chat("c", Some(chat(vec![message(1), message(2)], created)), 4)
                .is_empty()
        );
        let before: Vec<u64> = mirror.chat_before("c", 3).iter().map(|m| m.seq).collect();
        assert_eq!(before, [1], "b heard message 2 as it came");
        assert_eq!(mirror.chat_before("c", 0).len(), 2);
        // A leftover chat of an earlier call with the id is nobody's.
        let stale = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert!(
            mirror
                .apply_chat("c", Some(chat(vec![message(9)], stale)), 5)
                .is_empty()
        );
        assert!(mirror.chat_before("c", 0).is_empty());
        // Deleted with the call.
        assert!(mirror.apply_chat("c", None, 6).is_empty());
        assert!(mirror.chat_before("c", 0).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_caught_up_since_a_waiter_gave_up_is_not_taken_for_stuck() {
        let mirror = Mirror::default();
        let wait = |revision| {
            let mirror = mirror.clone();
            tokio::spawn(
                async move { mirror.wait_presence(revision, Duration::from_secs(2)).await },
            )
        };
        // The dispatcher is busy with a burst past the waiter's patience...
        let waiter = wait(5);
        tokio::time::sleep(STALLED_AFTER + Duration::from_millis(10)).await;
        // ...then applies the write: by the time it looks, it has caught up.
        mirror.apply_user("u", Some(online(user("u", 1), Vec::new())), 5);
        mirror.publish_progress();
        waiter.await.expect("waited");
        assert!(!mirror.presence_stalled().await, "caught up: not stuck");
        // A write that never comes: stuck.
        let waiter = wait(9);
        tokio::time::sleep(STALLED_AFTER + Duration::from_millis(10)).await;
        assert!(mirror.presence_stalled().await, "still behind: stuck");
        waiter.await.expect("waited");
    }
}
