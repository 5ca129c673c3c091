//! The presence half of the mirror: users and their sessions, the users list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use meetup_proto::bus::v1::{UserRecord, presence_change};
use meetup_proto::presence::v1::User;
use serde_json::Value;

use super::{Mirror, MirroredUser, PresenceNotice};
use crate::protocol::outbound::public_user;

impl Mirror {
    /// A new presence watch starts: its snapshot follows, then [`Mirror::presence_current`].
    pub fn presence_watch_started(&self) {
        self.write().presence.resync = Some(HashSet::new());
    }

    /// The presence watch has delivered every key: users it did not mention are
    /// gone (changes missed while the watch was down).
    pub fn presence_current(&self) -> Vec<PresenceNotice> {
        let mut state = self.write();
        let seen = state.presence.resync.take().unwrap_or_default();
        state.presence.synced = true;
        let gone: Vec<String> = state
            .users
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        // The list first, then each user-left, as for a change seen live.
        state.users_list = None;
        let mut notices = vec![PresenceNotice::ListChanged];
        for user_id in gone {
            state.users.remove(&user_id);
            notices.push(PresenceNotice::Offline { user_id });
        }
        notices
    }

    /// Applies a user's key at `revision` (`None`: deleted).
    pub fn apply_user(
        &self,
        user_id: &str,
        record: Option<UserRecord>,
        revision: u64,
    ) -> Vec<PresenceNotice> {
        let mut state = self.write();
        state.presence.saw(user_id, revision);
        let online = record
            .as_ref()
            .and_then(|r| r.user.as_ref())
            .filter(|u| !u.sessions.is_empty());
        let (previous, known_sessions) = match state.users.get(user_id) {
            Some(u) => (Some(u.public.clone()), u.sessions.clone()),
            None => (None, Vec::new()),
        };
        let was_online = previous.is_some();
        let mut notices = Vec::new();
        match online {
            None => {
                if was_online {
                    state.users.remove(user_id);
                    notices.push(PresenceNotice::ListChanged);
                    notices.push(PresenceNotice::Offline {
                        user_id: user_id.to_owned(),
                    });
                }
            }
            Some(online) => {
                let user = online.user.clone().unwrap_or_else(|| User {
                    id: user_id.to_owned(),
                    ..Default::default()
                });
                let joined = user.joined_at.unwrap_or_default();
                let public = public_user(&user);
                state.users.insert(
                    user_id.to_owned(),
                    MirroredUser {
                        public: public.clone(),
                        order: (joined.seconds, joined.nanos, user_id.to_owned()),
                        sessions: online.sessions.clone(),
                    },
                );
                let registered = record
                    .as_ref()
                    .and_then(|r| r.change.as_ref())
                    .and_then(|c| match &c.change {
                        Some(presence_change::Change::Registered(r)) => Some(r.session.clone()),
                        _ => None,
                    });
                if registered.is_some() || !was_online {
                    notices.push(PresenceNotice::ListChanged);
                }
                if !was_online && let Some(session) = online.sessions.last() {
                    notices.push(PresenceNotice::Online {
                        user: public.clone(),
                        session: session.clone(),
                    });
                } else if was_online && previous.as_ref() != Some(&public) {
                    notices.push(PresenceNotice::Updated { user: public });
                }
                // Once per session: a watch read again brings the same record.
                if let Some(Some(session)) = registered
                    && !known_sessions
                        .iter()
                        .any(|s| s.session_id == session.session_id)
                {
                    notices.push(PresenceNotice::Registered {
                        session,
                        user_id: user_id.to_owned(),
                    });
                }
            }
        }
        if !notices.is_empty() {
            state.users_list = None;
        }
        notices
    }

    /// Live (not away) sessions of `gateway_id` known to presence.
    pub fn presence_sessions_on(&self, gateway_id: &str) -> HashMap<String, String> {
        self.read()
            .users
            .iter()
            .flat_map(|(id, u)| u.sessions.iter().map(move |s| (id, s)))
            .filter(|(_, s)| s.gateway_id == gateway_id && s.away_until.is_none())
            .map(|(id, s)| (s.session_id.clone(), id.clone()))
            .collect()
    }

    /// True when presence holds `session_id` (live or away).
    pub fn holds_session(&self, session_id: &str) -> bool {
        self.read()
            .users
            .values()
            .any(|u| u.sessions.iter().any(|s| s.session_id == session_id))
    }

    /// The `users-list` payload: every online user once, in coming-online order.
    pub fn users_list(&self) -> Arc<Value> {
        if let Some(list) = &self.read().users_list {
            return list.clone();
        }
        let mut state = self.write();
        let mut users: Vec<&MirroredUser> = state.users.values().collect();
        users.sort_by(|a, b| a.order.cmp(&b.order));
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
}
