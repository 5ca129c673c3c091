//! This gateway's sockets as sessions: who each registered as, and the
//! numbering of the relays it was given. Each session has a lock of its own,
//! held while one of its relays is numbered and emitted (so its `seq` follows
//! the order on the wire); the map of sessions is locked only to find or change
//! an entry, never across an emit. Relays to different sockets never wait on
//! each other, and a long replay holds up only its own socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::protocol::inbound::RelayKind;

/// A registered socket of this gateway: what is needed to register it again
/// after the presence service restarted.
#[derive(Debug, Clone)]
pub struct LocalSession {
    pub user_id: String,
    pub username: String,
    pub joined_at: Option<prost_types::Timestamp>,
    /// False while its registration is in flight.
    pub registered: bool,
    /// The presence revision its registration wrote (0 until registered).
    pub revision: u64,
    /// Relays given to the socket so far (or, resumed, to its session).
    pub relay_seq: u64,
    /// Whether its relays carry their `seq` (the client speaks resume).
    pub seq_in_relays: bool,
    /// While a resumed socket is given the relays kept for its session, newer
    /// ones wait here, to follow them in order.
    pub pending: Option<Vec<(RelayKind, String)>>,
}

impl LocalSession {
    /// A socket whose registration (or resume) as `user_id` is in flight.
    pub fn registering(user_id: &str, username: &str, seq_in_relays: bool) -> Self {
        LocalSession {
            user_id: user_id.to_owned(),
            username: username.to_owned(),
            joined_at: None,
            registered: false,
            revision: 0,
            relay_seq: 0,
            seq_in_relays,
            pending: None,
        }
    }
}

/// The local sessions, by socket id.
#[derive(Debug, Default)]
pub struct LocalSessions {
    // std locks are fine: never held across an `.await`.
    map: RwLock<HashMap<String, Arc<Mutex<LocalSession>>>>,
}

fn lock(session: &Mutex<LocalSession>) -> MutexGuard<'_, LocalSession> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalSessions {
    fn get(&self, session_id: &str) -> Option<Arc<Mutex<LocalSession>>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(session_id)
            .cloned()
    }

    /// Records `session`; returns the record it replaced.
    pub fn insert(&self, session_id: &str, session: LocalSession) -> Option<LocalSession> {
        let previous = self
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session_id.to_owned(), Arc::new(Mutex::new(session)));
        previous.map(|p| lock(&p).clone())
    }

    pub fn remove(&self, session_id: &str) -> Option<LocalSession> {
        let removed = self
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session_id);
        removed.map(|s| lock(&s).clone())
    }

    /// Runs `f` on the session under its own lock (and no other).
    pub fn with<R>(&self, session_id: &str, f: impl FnOnce(&mut LocalSession) -> R) -> Option<R> {
        let session = self.get(session_id)?;
        let mut guard = lock(&session);
        Some(f(&mut guard))
    }

    /// Gives a registered socket's session a new username; returns the old one.
    pub fn rename(&self, session_id: &str, username: &str) -> Option<String> {
        self.with(session_id, |s| {
            std::mem::replace(&mut s.username, username.to_owned())
        })
    }

    /// Puts back what [`LocalSessions::insert`] replaced (a registration or
    /// resume that failed): the earlier record, or none.
    pub fn restore(&self, session_id: &str, previous: Option<LocalSession>) {
        match previous {
            Some(previous) => {
                self.insert(session_id, previous);
            }
            None => {
                self.remove(session_id);
            }
        }
    }

    /// Marks a session as registered, with the user's online time and the
    /// presence revision its registration wrote.
    pub fn confirm(
        &self,
        session_id: &str,
        joined_at: Option<prost_types::Timestamp>,
        revision: u64,
    ) {
        self.with(session_id, |s| {
            s.registered = true;
            s.joined_at = joined_at;
            s.revision = revision;
        });
    }

    /// Numbers the relays of a resumed session on from those its previous
    /// socket was given.
    pub fn continue_relays(&self, session_id: &str, given: u64) {
        self.with(session_id, |s| s.relay_seq = given);
    }

    /// How many relays a session's socket was given.
    pub fn relay_seq(&self, session_id: &str) -> Option<u64> {
        self.with(session_id, |s| s.relay_seq)
    }

    /// The presence revision of a session's registration (0 while in flight).
    pub fn revision(&self, session_id: &str) -> Option<u64> {
        self.with(session_id, |s| s.revision)
    }

    pub fn contains(&self, session_id: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(session_id)
    }

    /// A copy of every session.
    pub fn snapshot(&self) -> Vec<(String, LocalSession)> {
        let sessions: Vec<(String, Arc<Mutex<LocalSession>>)> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sessions
            .into_iter()
            .map(|(k, v)| (k, lock(&v).clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_held_by_a_long_emit_holds_up_no_other_session() {
        let sessions = Arc::new(LocalSessions::default());
        for id in ["a", "b"] {
            sessions.insert(id, LocalSession::registering(id, id, true));
        }
        let (inside, release) = (
            std::sync::mpsc::channel::<()>(),
            std::sync::mpsc::channel::<()>(),
        );
        let (entered, wait) = (inside.0, release.1);
        let held = {
            let sessions = sessions.clone();
            std::thread::spawn(move || {
                sessions.with("a", |a| {
                    a.relay_seq += 1;
                    entered.send(()).expect("told");
                    // "a" stays held until the other session was served.
                    wait.recv().expect("released");
                })
            })
        };
        inside.1.recv().expect("a is held");
        // Everything about another session goes on meanwhile.
        assert_eq!(
            sessions.with("b", |b| {
                b.relay_seq += 1;
                b.relay_seq
            }),
            Some(1)
        );
        sessions.insert("c", LocalSession::registering("c", "c", false));
        assert!(sessions.contains("c"));
        assert!(sessions.remove("c").is_some());
        release.0.send(()).expect("released");
        held.join().expect("no panic");
        assert_eq!(sessions.with("a", |a| a.relay_seq), Some(1));
        assert_eq!(sessions.snapshot().len(), 2);
    }

    #[test]
    fn insert_and_remove_give_back_the_record() {
        let sessions = LocalSessions::default();
        assert!(
            sessions
                .insert("s", LocalSession::registering("u", "n", true))
                .is_none()
        );
        sessions.with("s", |s| s.relay_seq = 4);
        let previous = sessions.insert("s", LocalSession::registering("u", "m", true));
        assert_eq!(previous.map(|p| p.relay_seq), Some(4));
        assert_eq!(
            sessions.remove("s").map(|s| s.username),
            Some("m".to_owned())
        );
        assert!(sessions.with("s", |_| ()).is_none());
    }
}
