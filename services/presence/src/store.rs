//! The presence state: users, their sessions and the gateways that hold them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use meetup_proto::bus::v1::{
    PresenceEvent, SessionRegistered, SessionUnregistered, presence_event,
};
use meetup_proto::presence::v1::{OnlineUser, Session, User};
use meetup_runtime::{OrderedPublisher, Receipt, subjects};
use prost::Message;

use crate::error::{PresenceError, require};

/// Cheap-to-clone handle on the presence state; methods hide the lock and queue
/// the resulting events for publication in state order.
#[derive(Clone, Debug)]
pub struct PresenceStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    instance_id: String,
    publisher: OrderedPublisher,
    max_sessions_per_user: usize,
    // A std Mutex is fine: it is never held across an `.await`, and every
    // critical section is a few map operations.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    version: u64,
    next_sequence: u64,
    users: HashMap<String, UserEntry>,
    /// session id -> user id
    sessions: HashMap<String, String>,
}

#[derive(Debug)]
struct UserEntry {
    username: String,
    joined_at: SystemTime,
    /// Sequence of the first live session: orders the users list.
    online_sequence: u64,
    sessions: Vec<Session>,
}

impl UserEntry {
    fn user(&self, id: &str) -> User {
        User {
            id: id.to_owned(),
            username: self.username.clone(),
            joined_at: Some(self.joined_at.into()),
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub user: User,
    pub first_session: bool,
    pub version: u64,
}

/// What an unregistration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Unregistered {
    pub user_id: String,
    pub last_session: bool,
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub online_users: u32,
    pub sessions: u32,
    pub gateways: u32,
    pub version: u64,
}

impl PresenceStore {
    /// A store that lets one user id hold at most `max_sessions_per_user` sessions.
    pub fn new(publisher: OrderedPublisher, max_sessions_per_user: usize) -> Self {
        let instance_id = format!("{:016x}", rand::random::<u64>());
        PresenceStore {
            shared: Arc::new(Shared {
                instance_id,
                publisher,
                max_sessions_per_user: max_sessions_per_user.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics with the lock held; recover the state if one ever did.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one event; called with the state lock held so events keep state order.
    fn publish(&self, version: u64, change: presence_event::Change) -> Receipt {
        let event = PresenceEvent {
            instance_id: self.shared.instance_id.clone(),
            version,
            change: Some(change),
        };
        self.shared.publisher.enqueue(
            subjects::PRESENCE_EVENTS,
            Bytes::from(event.encode_to_vec()),
        )
    }

    /// Registers `session_id` for `user_id`. Registering a session again for the
    /// same user refreshes the username; for another user it is refused.
    /// `joined_at` restores the original online time of a user after a restart.
    pub fn register(
        &self,
        user_id: &str,
        username: &str,
        gateway_id: &str,
        session_id: &str,
        joined_at: Option<SystemTime>,
    ) -> Result<(Registered, Receipt), PresenceError> {
        require("user_id", user_id)?;
        require("username", username)?;
        require("gateway_id", gateway_id)?;
        require("session_id", session_id)?;
        let now = SystemTime::now();
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(owner) = state.sessions.get(session_id)
            && owner != user_id
        {
            return Err(PresenceError::SessionTaken {
                session_id: session_id.to_owned(),
            });
        }
        if let Some(entry) = state.users.get(user_id)
            && entry.sessions.len() >= self.shared.max_sessions_per_user
            && !entry.sessions.iter().any(|s| s.session_id == session_id)
        {
            return Err(PresenceError::TooManySessions {
                user_id: user_id.to_owned(),
                max: self.shared.max_sessions_per_user,
            });
        }
        state.next_sequence += 1;
        let sequence = state.next_sequence;
        let session = Session {
            session_id: session_id.to_owned(),
            gateway_id: gateway_id.to_owned(),
            registered_at: Some(now.into()),
            sequence,
        };
        let entry = state
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| UserEntry {
                username: username.to_owned(),
                joined_at: joined_at.filter(|t| *t < now).unwrap_or(now),
                online_sequence: sequence,
                sessions: Vec::new(),
            });
        entry.username = username.to_owned();
        let first_session = entry.sessions.is_empty();
        // A repeated registration moves the session to the most recent position.
        entry.sessions.retain(|s| s.session_id != session_id);
        entry.sessions.push(session.clone());
        state
            .sessions
            .insert(session_id.to_owned(), user_id.to_owned());
        state.version += 1;
        let user = entry.user(user_id);
        let receipt = self.publish(
            state.version,
            presence_event::Change::Registered(SessionRegistered {
                user: Some(user.clone()),
                session: Some(session),
                first_session,
            }),
        );
        tracing::info!(
            user_id,
            session_id,
            gateway_id,
            first_session,
            "session registered"
        );
        Ok((
            Registered {
                user,
                first_session,
                version: state.version,
            },
            receipt,
        ))
    }

    pub fn unregister(&self, session_id: &str) -> Result<(Unregistered, Receipt), PresenceError> {
        let mut state = self.lock();
        let (unregistered, receipt) = self
            .remove_session(&mut state, session_id)
            .ok_or_else(|| PresenceError::SessionNotFound(session_id.to_owned()))?;
        Ok((unregistered, receipt))
    }

    fn remove_session(
        &self,
        state: &mut State,
        session_id: &str,
    ) -> Option<(Unregistered, Receipt)> {
        let user_id = state.sessions.remove(session_id)?;
        let last_session = match state.users.get_mut(&user_id) {
            Some(entry) => {
                entry.sessions.retain(|s| s.session_id != session_id);
                entry.sessions.is_empty()
            }
            None => true,
        };
        if last_session {
            state.users.remove(&user_id);
        }
        state.version += 1;
        let receipt = self.publish(
            state.version,
            presence_event::Change::Unregistered(SessionUnregistered {
                user_id: user_id.clone(),
                session_id: session_id.to_owned(),
                last_session,
            }),
        );
        tracing::info!(user_id = %user_id, session_id, last_session, "session unregistered");
        Some((
            Unregistered {
                user_id,
                last_session,
                version: state.version,
            },
            receipt,
        ))
    }

    /// Removes every session of one gateway. Returns the number of sessions removed,
    /// the users that went offline, and the receipt of the last event.
    pub fn unregister_gateway(
        &self,
        gateway_id: &str,
    ) -> Result<(u32, Vec<String>, Option<Receipt>), PresenceError> {
        require("gateway_id", gateway_id)?;
        let mut state = self.lock();
        let doomed: Vec<String> = state
            .users
            .values()
            .flat_map(|u| u.sessions.iter())
            .filter(|s| s.gateway_id == gateway_id)
            .map(|s| s.session_id.clone())
            .collect();
        let mut offline = Vec::new();
        let mut last_receipt = None;
        for session_id in &doomed {
            if let Some((unregistered, receipt)) = self.remove_session(&mut state, session_id) {
                if unregistered.last_session {
                    offline.push(unregistered.user_id);
                }
                last_receipt = Some(receipt);
            }
        }
        Ok((doomed.len() as u32, offline, last_receipt))
    }

    /// All online users, in the order they came online, and the current version.
    pub fn list(&self) -> (Vec<OnlineUser>, u64) {
        let state = self.lock();
        let mut entries: Vec<(&String, &UserEntry)> = state.users.iter().collect();
        entries.sort_by_key(|(_, e)| e.online_sequence);
        let users = entries
            .into_iter()
            .map(|(id, e)| OnlineUser {
                user: Some(e.user(id)),
                sessions: e.sessions.clone(),
                online_sequence: e.online_sequence,
            })
            .collect();
        (users, state.version)
    }

    pub fn get(&self, user_id: &str) -> Result<OnlineUser, PresenceError> {
        require("user_id", user_id)?;
        let state = self.lock();
        let entry = state
            .users
            .get(user_id)
            .ok_or_else(|| PresenceError::UserNotFound(user_id.to_owned()))?;
        Ok(OnlineUser {
            user: Some(entry.user(user_id)),
            sessions: entry.sessions.clone(),
            online_sequence: entry.online_sequence,
        })
    }

    pub fn counts(&self) -> Counts {
        let state = self.lock();
        let gateways: std::collections::HashSet<&str> = state
            .users
            .values()
            .flat_map(|u| u.sessions.iter().map(|s| s.gateway_id.as_str()))
            .collect();
        Counts {
            online_users: state.users.len() as u32,
            sessions: state.sessions.len() as u32,
            gateways: gateways.len() as u32,
            version: state.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use meetup_runtime::Bus;

    use super::*;

    async fn store_with_events() -> (PresenceStore, meetup_runtime::Subscription) {
        let bus = Bus::local();
        let events = bus
            .subscribe(subjects::PRESENCE_EVENTS.into())
            .await
            .expect("subscribe");
        (PresenceStore::new(OrderedPublisher::start(bus), 3), events)
    }

    async fn next_event(events: &mut meetup_runtime::Subscription) -> PresenceEvent {
        let message = events.next().await.expect("event");
        PresenceEvent::decode(message.payload).expect("decodes")
    }

    #[tokio::test]
    async fn first_and_last_session_bring_a_user_on_and_off_line() {
        let (store, mut events) = store_with_events().await;
        let (a, _) = store
            .register("u1", "Ann", "gw", "s1", None)
            .expect("register");
        assert!(a.first_session);
        assert_eq!(a.version, 1);
        let (b, _) = store
            .register("u1", "Annie", "gw", "s2", None)
            .expect("register");
        assert!(!b.first_session);
        assert_eq!(b.user.username, "Annie");
        assert_eq!(b.user.joined_at, a.user.joined_at, "joinedAt stays");
        assert_eq!(store.counts().online_users, 1);
        assert_eq!(store.counts().sessions, 2);

        let (gone, _) = store.unregister("s1").expect("unregister");
        assert!(!gone.last_session);
        let (gone, _) = store.unregister("s2").expect("unregister");
        assert!(gone.last_session);
        assert_eq!(
            (store.counts().online_users, store.counts().sessions),
            (0, 0)
        );
        assert!(matches!(
            store.unregister("s2"),
            Err(PresenceError::SessionNotFound(_))
        ));

        let versions: Vec<u64> = [
            next_event(&mut events).await,
            next_event(&mut events).await,
            next_event(&mut events).await,
            next_event(&mut events).await,
        ]
        .iter()
        .map(|e| e.version)
        .collect();
        assert_eq!(versions, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_user_holds_at_most_the_configured_sessions() {
        let (store, _events) = store_with_events().await;
        for session in ["s1", "s2", "s3"] {
            store
                .register("u1", "Ann", "gw", session, None)
                .expect("register");
        }
        assert!(matches!(
            store.register("u1", "Ann", "gw", "s4", None),
            Err(PresenceError::TooManySessions { max: 3, .. })
        ));
        // Refreshing a session it holds is no new session.
        assert!(store.register("u1", "Ann", "gw", "s2", None).is_ok());
        assert_eq!(store.counts().sessions, 3);
    }

    #[tokio::test]
    async fn a_session_cannot_change_user() {
        let (store, _events) = store_with_events().await;
        store
            .register("u1", "Ann", "gw", "s1", None)
            .expect("register");
        assert!(matches!(
            store.register("u2", "Bob", "gw", "s1", None),
            Err(PresenceError::SessionTaken { .. })
        ));
        assert_eq!(store.counts().online_users, 1);
    }

    #[tokio::test]
    async fn list_is_in_coming_online_order() {
        let (store, _events) = store_with_events().await;
        for (user, session) in [("c", "1"), ("a", "2"), ("b", "3")] {
            store
                .register(user, user, "gw", session, None)
                .expect("register");
        }
        // A later session of "c" does not move it.
        store.register("c", "c", "gw", "4", None).expect("register");
        let (users, version) = store.list();
        let ids: Vec<_> = users
            .iter()
            .filter_map(|u| u.user.as_ref().map(|u| u.id.as_str()))
            .collect();
        assert_eq!(ids, ["c", "a", "b"]);
        assert_eq!(version, 4);
    }

    #[tokio::test]
    async fn a_gateway_going_away_takes_its_sessions_only() {
        let (store, _events) = store_with_events().await;
        store
            .register("u1", "Ann", "gw1", "s1", None)
            .expect("register");
        store
            .register("u1", "Ann", "gw2", "s2", None)
            .expect("register");
        store
            .register("u2", "Bob", "gw1", "s3", None)
            .expect("register");
        let (removed, offline, receipt) = store.unregister_gateway("gw1").expect("valid");
        assert_eq!(removed, 2);
        assert_eq!(offline, vec!["u2".to_string()]);
        assert!(receipt.is_some());
        let ann = store.get("u1").expect("still online");
        assert_eq!(ann.sessions.len(), 1);
        assert_eq!(ann.sessions[0].gateway_id, "gw2");
        assert!(matches!(
            store.get("u2"),
            Err(PresenceError::UserNotFound(_))
        ));
    }

    #[tokio::test]
    async fn bad_fields_are_invalid_arguments() {
        let (store, _events) = store_with_events().await;
        let long = "x".repeat(129);
        for (user, name, gw, session) in [
            ("", "n", "g", "s"),
            ("u", "", "g", "s"),
            ("u", "n", "", "s"),
            ("u", "n", "g", ""),
            (long.as_str(), "n", "g", "s"),
        ] {
            assert!(matches!(
                store.register(user, name, gw, session, None),
                Err(PresenceError::InvalidArgument(_))
            ));
        }
        assert_eq!(
            (store.counts().online_users, store.counts().sessions),
            (0, 0)
        );
    }
}
