//! The gateway's mirror of presence and calls, kept from the services' bus events.
//!
//! It answers every per-relay question (may these two talk, where is the target)
//! without a round trip, and `GET /`'s cluster-wide counters. A std `RwLock` is
//! fine: it is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use meetup_proto::bus::v1::{CallEvent, PresenceEvent, call_event, presence_event};
use meetup_proto::calls::v1::{Call, ListCallsResponse};
use meetup_proto::presence::v1::{ListUsersResponse, Session, User};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::ack::{AckError, ErrorCode};

/// Cheap-to-clone handle on the mirror.
#[derive(Clone, Debug)]
pub struct Replica {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    /// Bumped after each applied event, once its notifications are out.
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub presence_version: u64,
    pub calls_sequence: u64,
    pub synced: bool,
}

#[derive(Debug, Default)]
struct State {
    presence_instance: String,
    presence_version: u64,
    presence_synced: bool,
    users: HashMap<String, MirroredUser>,
    users_list: Option<Arc<Value>>,
    calls_instance: String,
    calls_sequence: u64,
    calls_synced: bool,
    calls: HashMap<String, Call>,
}

#[derive(Debug, Clone)]
struct MirroredUser {
    public: Value,
    online_sequence: u64,
    sessions: Vec<Session>,
}

/// Where a relay goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub session_id: String,
    pub gateway_id: String,
}

/// What applying an event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// Already seen (from a snapshot or a duplicate).
    Stale,
    /// One or more events were missed, or the service restarted: resynchronise.
    Gap,
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

/// The public user record `{ id, username, joinedAt }`.
pub fn public_user(user: &User) -> Value {
    json!({ "id": user.id, "username": user.username, "joinedAt": iso_time(user.joined_at) })
}

/// `{ id, username }` of each user in the call, once each, in joining order.
pub fn public_participants(call: &Call) -> Value {
    let mut seen: Vec<&str> = Vec::new();
    let mut list = Vec::new();
    for p in &call.participants {
        if let Some(user) = &p.user
            && !seen.contains(&user.id.as_str())
        {
            seen.push(&user.id);
            list.push(json!({ "id": user.id, "username": user.username }));
        }
    }
    Value::Array(list)
}

/// True when `user_id` takes part in or was invited to `call`.
fn belongs(call: &Call, user_id: &str) -> bool {
    call.initiator.as_ref().is_some_and(|u| u.id == user_id)
        || call.invited_user_ids.iter().any(|id| id == user_id)
        || call
            .participants
            .iter()
            .any(|p| p.user.as_ref().is_some_and(|u| u.id == user_id))
}

impl Default for Replica {
    fn default() -> Self {
        let (progress, _) = watch::channel(Progress::default());
        Replica {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                progress,
            }),
        }
    }
}

impl Replica {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the presence mirror with a snapshot.
    pub fn reset_presence(&self, snapshot: ListUsersResponse) {
        let mut state = self.write();
        state.presence_instance = snapshot.instance_id;
        state.presence_version = snapshot.version;
        state.presence_synced = true;
        state.users = snapshot
            .users
            .into_iter()
            .filter_map(|u| {
                let user = u.user?;
                Some((
                    user.id.clone(),
                    MirroredUser {
                        public: public_user(&user),
                        online_sequence: u.online_sequence,
                        sessions: u.sessions,
                    },
                ))
            })
            .collect();
        state.users_list = None;
        drop(state);
        self.publish_progress();
    }

    /// Replaces the calls mirror with a snapshot.
    pub fn reset_calls(&self, snapshot: ListCallsResponse) {
        let mut state = self.write();
        state.calls_instance = snapshot.instance_id;
        state.calls_sequence = snapshot.sequence;
        state.calls_synced = true;
        state.calls = snapshot
            .calls
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        drop(state);
        self.publish_progress();
    }

    pub fn apply_presence(&self, event: &PresenceEvent) -> Applied {
        let mut state = self.write();
        if !state.presence_synced {
            return Applied::Gap;
        }
        if event.instance_id != state.presence_instance {
            return Applied::Gap;
        }
        if event.version <= state.presence_version {
            return Applied::Stale;
        }
        if event.version != state.presence_version + 1 {
            return Applied::Gap;
        }
        state.presence_version = event.version;
        state.users_list = None;
        match &event.change {
            Some(presence_event::Change::Registered(r)) => {
                if let (Some(user), Some(session)) = (&r.user, &r.session) {
                    let entry =
                        state
                            .users
                            .entry(user.id.clone())
                            .or_insert_with(|| MirroredUser {
                                public: Value::Null,
                                online_sequence: session.sequence,
                                sessions: Vec::new(),
                            });
                    entry.public = public_user(user);
                    entry
                        .sessions
                        .retain(|s| s.session_id != session.session_id);
                    entry.sessions.push(session.clone());
                }
            }
            Some(presence_event::Change::Unregistered(u)) => {
                if let Some(entry) = state.users.get_mut(&u.user_id) {
                    entry.sessions.retain(|s| s.session_id != u.session_id);
                    if entry.sessions.is_empty() {
                        state.users.remove(&u.user_id);
                    }
                }
            }
            None => {}
        }
        Applied::Yes
    }

    pub fn apply_calls(&self, event: &CallEvent) -> Applied {
        let mut state = self.write();
        if !state.calls_synced || event.instance_id != state.calls_instance {
            return Applied::Gap;
        }
        if event.sequence <= state.calls_sequence {
            return Applied::Stale;
        }
        if event.sequence != state.calls_sequence + 1 {
            return Applied::Gap;
        }
        state.calls_sequence = event.sequence;
        let Some(call) = &event.call else {
            return Applied::Yes;
        };
        let gone = match &event.change {
            Some(call_event::Change::Ended(_)) => true,
            Some(call_event::Change::Left(left)) => left.call_ended,
            _ => false,
        };
        if gone {
            state.calls.remove(&call.id);
        } else {
            state.calls.insert(call.id.clone(), call.clone());
        }
        Applied::Yes
    }

    /// Tells waiters that everything applied so far has been announced.
    pub fn publish_progress(&self) {
        let state = self.read();
        let progress = Progress {
            presence_version: state.presence_version,
            calls_sequence: state.calls_sequence,
            synced: state.presence_synced && state.calls_synced,
        };
        drop(state);
        self.shared.progress.send_replace(progress);
    }

    /// Marks the presence mirror as needing a snapshot (its service restarted,
    /// or events were lost).
    pub fn mark_presence_unsynced(&self) {
        self.write().presence_synced = false;
        self.publish_progress();
    }

    pub fn mark_calls_unsynced(&self) {
        self.write().calls_synced = false;
        self.publish_progress();
    }

    /// The run of the presence service the mirror follows ("" before the first snapshot).
    pub fn presence_position(&self) -> (String, u64) {
        let state = self.read();
        (state.presence_instance.clone(), state.presence_version)
    }

    pub fn calls_position(&self) -> (String, u64) {
        let state = self.read();
        (state.calls_instance.clone(), state.calls_sequence)
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.read().calls.values().cloned().collect()
    }

    /// Every gateway that holds a session, in presence or in a call.
    pub fn gateway_ids(&self) -> std::collections::HashSet<String> {
        let state = self.read();
        let in_presence = state
            .users
            .values()
            .flat_map(|u| u.sessions.iter().map(|s| s.gateway_id.clone()));
        let in_calls = state
            .calls
            .values()
            .flat_map(|c| c.participants.iter().map(|p| p.gateway_id.clone()));
        in_presence.chain(in_calls).collect()
    }

    /// Sessions of `gateway_id` known to presence.
    pub fn presence_sessions_on(&self, gateway_id: &str) -> Vec<String> {
        self.read()
            .users
            .values()
            .flat_map(|u| u.sessions.iter())
            .filter(|s| s.gateway_id == gateway_id)
            .map(|s| s.session_id.clone())
            .collect()
    }

    /// Sessions of `gateway_id` taking part in a call.
    pub fn call_sessions_on(&self, gateway_id: &str) -> std::collections::HashSet<String> {
        self.read()
            .calls
            .values()
            .flat_map(|c| c.participants.iter())
            .filter(|p| p.gateway_id == gateway_id)
            .map(|p| p.session_id.clone())
            .collect()
    }

    pub fn is_synced(&self) -> bool {
        let state = self.read();
        state.presence_synced && state.calls_synced
    }

    pub fn needs_presence_sync(&self) -> bool {
        !self.read().presence_synced
    }

    pub fn needs_calls_sync(&self) -> bool {
        !self.read().calls_synced
    }

    /// Waits until the mirror has applied (and announced) presence version
    /// `version`, at most `limit`.
    pub async fn wait_presence(&self, version: u64, limit: Duration) {
        self.wait(limit, |p| p.presence_version >= version).await;
    }

    /// Waits until the mirror has applied (and announced) call event `sequence`.
    pub async fn wait_calls(&self, sequence: u64, limit: Duration) {
        if sequence > 0 {
            self.wait(limit, |p| p.calls_sequence >= sequence).await;
        }
    }

    async fn wait(&self, limit: Duration, done: impl Fn(&Progress) -> bool) {
        let mut rx = self.shared.progress.subscribe();
        if tokio::time::timeout(limit, rx.wait_for(done))
            .await
            .is_err()
        {
            tracing::warn!(?limit, "mirror did not catch up in time");
        }
    }

    /// The `users-list` payload: every online user once, in coming-online order.
    pub fn users_list(&self) -> Arc<Value> {
        if let Some(list) = &self.read().users_list {
            return list.clone();
        }
        let mut state = self.write();
        let mut users: Vec<&MirroredUser> = state.users.values().collect();
        users.sort_by_key(|u| u.online_sequence);
        let list = Arc::new(Value::Array(
            users.into_iter().map(|u| u.public.clone()).collect(),
        ));
        state.users_list = Some(list.clone());
        list
    }

    pub fn public_user(&self, user_id: &str) -> Option<Value> {
        self.read().users.get(user_id).map(|u| u.public.clone())
    }

    /// Sessions of `user_id` held by `gateway_id`.
    pub fn sessions_on(&self, user_id: &str, gateway_id: &str) -> Vec<String> {
        self.read()
            .users
            .get(user_id)
            .map(|u| {
                u.sessions
                    .iter()
                    .filter(|s| s.gateway_id == gateway_id)
                    .map(|s| s.session_id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn counts(&self) -> (usize, usize) {
        let state = self.read();
        (state.users.len(), state.calls.len())
    }

    pub fn call(&self, call_id: &str) -> Option<Call> {
        self.read().calls.get(call_id).cloned()
    }

    /// Decides where a relay from `from_user` to `to_user` in `call_id` goes:
    /// only between users who share the call, to the target's latest socket in
    /// the call, else to its most recently registered socket.
    pub fn route_relay(
        &self,
        call_id: &str,
        from_user: &str,
        to_user: &str,
    ) -> Result<Route, AckError> {
        let state = self.read();
        let shared = state
            .calls
            .get(call_id)
            .filter(|c| belongs(c, from_user) && belongs(c, to_user));
        let Some(call) = shared else {
            return Err(AckError::new(
                ErrorCode::NotInCall,
                "you and the target do not share this call",
            ));
        };
        if let Some(p) = call
            .participants
            .iter()
            .rev()
            .find(|p| p.user.as_ref().is_some_and(|u| u.id == to_user))
        {
            return Ok(Route {
                session_id: p.session_id.clone(),
                gateway_id: p.gateway_id.clone(),
            });
        }
        state
            .users
            .get(to_user)
            .and_then(|u| u.sessions.iter().max_by_key(|s| s.sequence))
            .map(|s| Route {
                session_id: s.session_id.clone(),
                gateway_id: s.gateway_id.clone(),
            })
            .ok_or_else(|| AckError::new(ErrorCode::UserOffline, "the target user is not online"))
    }
}

#[cfg(test)]
mod tests {
    use meetup_proto::bus::v1::{ParticipantJoined, SessionRegistered, SessionUnregistered};
    use meetup_proto::calls::v1::{CallUser, Participant};
    use meetup_proto::presence::v1::OnlineUser;

    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            username: format!("name-{id}"),
            joined_at: Some(SystemTime::UNIX_EPOCH.into()),
        }
    }

    fn session(id: &str, gateway: &str, sequence: u64) -> Session {
        Session {
            session_id: id.into(),
            gateway_id: gateway.into(),
            registered_at: None,
            sequence,
        }
    }

    fn registered(version: u64, u: &str, s: Session) -> PresenceEvent {
        PresenceEvent {
            instance_id: "p".into(),
            version,
            change: Some(presence_event::Change::Registered(SessionRegistered {
                user: Some(user(u)),
                session: Some(s),
                first_session: true,
            })),
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
            joined_at: None,
        }
    }

    fn synced() -> Replica {
        let replica = Replica::default();
        replica.reset_presence(ListUsersResponse {
            users: vec![],
            version: 0,
            instance_id: "p".into(),
        });
        replica.reset_calls(ListCallsResponse {
            calls: vec![],
            sequence: 0,
            instance_id: "c".into(),
        });
        replica
    }

    #[test]
    fn presence_events_apply_in_order_and_gaps_are_detected() {
        let replica = synced();
        assert_eq!(
            replica.apply_presence(&registered(1, "a", session("s1", "g", 1))),
            Applied::Yes
        );
        assert_eq!(
            replica.apply_presence(&registered(1, "a", session("s1", "g", 1))),
            Applied::Stale
        );
        assert_eq!(
            replica.apply_presence(&registered(3, "b", session("s3", "g", 3))),
            Applied::Gap
        );
        let mut other_instance = registered(2, "b", session("s2", "g", 2));
        other_instance.instance_id = "restarted".into();
        assert_eq!(replica.apply_presence(&other_instance), Applied::Gap);
        assert_eq!(
            replica.apply_presence(&registered(2, "b", session("s2", "g", 2))),
            Applied::Yes
        );
        let list = replica.users_list();
        assert_eq!(list.as_array().map(Vec::len), Some(2));
        assert_eq!(list[0]["id"], "a");
        assert_eq!(list[0]["joinedAt"], "1970-01-01T00:00:00.000Z");
        let gone = PresenceEvent {
            instance_id: "p".into(),
            version: 3,
            change: Some(presence_event::Change::Unregistered(SessionUnregistered {
                user_id: "a".into(),
                session_id: "s1".into(),
                last_session: true,
            })),
        };
        assert_eq!(replica.apply_presence(&gone), Applied::Yes);
        assert_eq!(replica.users_list()[0]["id"], "b");
        assert_eq!(replica.counts(), (1, 0));
    }

    #[test]
    fn relays_only_between_users_sharing_a_call() {
        let replica = Replica::default();
        replica.reset_presence(ListUsersResponse {
            users: vec![
                OnlineUser {
                    user: Some(user("a")),
                    sessions: vec![session("sa", "g1", 1)],
                    online_sequence: 1,
                },
                OnlineUser {
                    user: Some(user("b")),
                    sessions: vec![session("sb1", "g1", 2), session("sb2", "g2", 3)],
                    online_sequence: 2,
                },
                OnlineUser {
                    user: Some(user("c")),
                    sessions: vec![session("sc", "g1", 4)],
                    online_sequence: 4,
                },
            ],
            version: 4,
            instance_id: "p".into(),
        });
        let call = Call {
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
        replica.reset_calls(ListCallsResponse {
            calls: vec![call.clone()],
            sequence: 1,
            instance_id: "c".into(),
        });

        // b is invited, not joined: its most recent socket.
        assert_eq!(
            replica.route_relay("call", "a", "b"),
            Ok(Route {
                session_id: "sb2".into(),
                gateway_id: "g2".into()
            })
        );
        assert_eq!(
            replica.route_relay("call", "a", "c").map_err(|e| e.code),
            Err(ErrorCode::NotInCall)
        );
        assert_eq!(
            replica.route_relay("call", "c", "a").map_err(|e| e.code),
            Err(ErrorCode::NotInCall)
        );
        assert_eq!(
            replica.route_relay("nope", "a", "b").map_err(|e| e.code),
            Err(ErrorCode::NotInCall)
        );

        // Once b joins from its older socket, relays go there.
        let mut joined = call;
        joined.participants.push(participant("b", "sb1", "g1"));
        let event = CallEvent {
            instance_id: "c".into(),
            sequence: 2,
            call: Some(joined),
            change: Some(call_event::Change::Joined(ParticipantJoined {
                participant: Some(participant("b", "sb1", "g1")),
            })),
        };
        assert_eq!(replica.apply_calls(&event), Applied::Yes);
        assert_eq!(
            replica.route_relay("call", "a", "b"),
            Ok(Route {
                session_id: "sb1".into(),
                gateway_id: "g1".into()
            })
        );
        assert_eq!(replica.sessions_on("b", "g2"), vec!["sb2".to_string()]);
    }

    #[tokio::test]
    async fn waiters_wake_when_progress_is_published() {
        let replica = synced();
        let waiter = {
            let replica = replica.clone();
            tokio::spawn(async move { replica.wait_presence(1, Duration::from_secs(10)).await })
        };
        replica.apply_presence(&registered(1, "a", session("s1", "g", 1)));
        replica.publish_progress();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken before the limit")
            .expect("task");
    }
}
