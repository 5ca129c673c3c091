//! What each replica keeps of the presence bucket, fed by its watch (see
//! `meetup_platform::store::due`): the users by when their first away session
//! runs out, the owner of each session, the users on each gateway, and the
//! counts. The expiry, the sweep, a session's owner and the gauges ask it
//! instead of scanning every user. It is a hint: whoever acts on what it names
//! reads the user's record again first.

use std::collections::{BTreeSet, HashMap};

use meetup_platform::store::due::{Deadlines, View};
use meetup_platform::store::{Entry, keys};
use meetup_proto::presence::v1::OnlineUser;

use super::reading::Counts;
use super::record::{away_until, decode, online};

/// This replica's index of the presence bucket.
#[derive(Debug, Default)]
pub(super) struct PresenceIndex {
    /// What the index holds of each online user, to take it out when the
    /// record changes.
    users: HashMap<String, Held>,
    /// Online users by the earliest time one of their away sessions runs out.
    away: Deadlines<String>,
    /// The user holding each session.
    owners: HashMap<String, String>,
    /// The users with a session on each gateway.
    by_gateway: HashMap<String, BTreeSet<String>>,
    sessions: u32,
}

/// One online user as the index holds it.
#[derive(Debug, Default)]
struct Held {
    sessions: Vec<String>,
    gateways: Vec<String>,
}

impl View for PresenceIndex {
    fn apply(&mut self, entry: &Entry) {
        if let Some(user_id) = keys::user_id_of(&entry.key) {
            let record = decode(entry);
            self.set_user(user_id, record.as_ref().and_then(online));
        }
    }
}

impl PresenceIndex {
    fn set_user(&mut self, user_id: String, user: Option<&OnlineUser>) {
        if let Some(old) = self.users.remove(&user_id) {
            for session_id in &old.sessions {
                // Session ids are the gateways' socket ids: one user's, but
                // should two users ever share one, each keeps its own.
                if self.owners.get(session_id) == Some(&user_id) {
                    self.owners.remove(session_id);
                }
            }
            for gateway_id in &old.gateways {
                if let Some(users) = self.by_gateway.get_mut(gateway_id) {
                    users.remove(&user_id);
                    if users.is_empty() {
                        self.by_gateway.remove(gateway_id);
                    }
                }
            }
            self.sessions -= old.sessions.len() as u32;
        }
        let Some(user) = user else {
            self.away.remove(&user_id);
            return;
        };
        let first_away = user.sessions.iter().filter_map(away_until).min();
        self.away.set(user_id.clone(), first_away);
        let sessions: Vec<String> = user.sessions.iter().map(|s| s.session_id.clone()).collect();
        let mut gateways: Vec<String> =
            user.sessions.iter().map(|s| s.gateway_id.clone()).collect();
        gateways.sort_unstable();
        gateways.dedup();
        for session_id in &sessions {
            self.owners.insert(session_id.clone(), user_id.clone());
        }
        for gateway_id in &gateways {
            self.by_gateway
                .entry(gateway_id.clone())
                .or_default()
                .insert(user_id.clone());
        }
        self.sessions += sessions.len() as u32;
        self.users.insert(user_id, Held { sessions, gateways });
    }

    /// The users with an away session whose time ran out by `at`.
    pub(super) fn away_by(&self, at: std::time::SystemTime) -> Vec<String> {
        self.away.due(at)
    }

    /// The user holding `session_id`.
    pub(super) fn owner_of(&self, session_id: &str) -> Option<String> {
        self.owners.get(session_id).cloned()
    }

    /// The gateways that online users have sessions on.
    pub(super) fn gateways(&self) -> Vec<String> {
        self.by_gateway.keys().cloned().collect()
    }

    /// The users with a session on `gateway_id`.
    pub(super) fn users_on(&self, gateway_id: &str) -> Vec<String> {
        self.by_gateway
            .get(gateway_id)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn counts(&self) -> Counts {
        Counts {
            online_users: self.users.len() as u32,
            sessions: self.sessions,
            gateways: self.by_gateway.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use meetup_platform::store::keys;
    use meetup_platform::store::leases::LeaseView;
    use meetup_proto::bus::v1::{LeaveReason, UserRecord};
    use meetup_proto::presence::v1::{Session, User};
    use prost::Message;

    use super::*;
    use crate::error::PresenceError;
    use crate::store::PresenceStore;
    use crate::store::state::in_memory as store;

    fn session(id: &str, gateway: &str, away_until: Option<SystemTime>) -> Session {
        Session {
            session_id: id.into(),
            gateway_id: gateway.into(),
            away_until: away_until.map(Into::into),
            ..Session::default()
        }
    }

    fn entry(user_id: &str, sessions: Option<Vec<Session>>, revision: u64) -> Entry {
        Entry {
            key: keys::user(user_id),
            value: sessions.map(|sessions| {
                Bytes::from(
                    UserRecord {
                        user: Some(OnlineUser {
                            user: Some(User {
                                id: user_id.into(),
                                ..User::default()
                            }),
                            sessions,
                        }),
                        ..UserRecord::default()
                    }
                    .encode_to_vec(),
                )
            }),
            revision,
        }
    }

    #[test]
    fn a_user_is_filed_under_its_sessions_gateways_and_away_time_and_moves_with_them() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = at + Duration::from_secs(5);
        let mut index = PresenceIndex::default();
        index.apply(&entry(
            "u1",
            Some(vec![
                session("s1", "gw1", Some(later)),
                session("s2", "gw2", Some(at)),
                session("s3", "gw1", None),
            ]),
            1,
        ));
        index.apply(&entry("u2", Some(vec![session("s4", "gw1", None)]), 2));
        assert_eq!(index.owner_of("s3").as_deref(), Some("u1"));
        assert_eq!(index.users_on("gw1"), ["u1", "u2"]);
        assert_eq!(index.away_by(at), ["u1"], "its first away session");
        assert!(index.away_by(at - Duration::from_secs(1)).is_empty());
        assert_eq!(
            index.counts(),
            Counts {
                online_users: 2,
                sessions: 4,
                gateways: 2
            }
        );

        // s2 resumed on gw1 as s5, s1 still away.
        index.apply(&entry(
            "u1",
            Some(vec![
                session("s1", "gw1", Some(later)),
                session("s3", "gw1", None),
                session("s5", "gw1", None),
            ]),
            3,
        ));
        assert_eq!(index.owner_of("s2"), None);
        assert_eq!(index.gateways(), ["gw1"]);
        assert!(index.away_by(at).is_empty());
        assert_eq!(index.away_by(later), ["u1"]);

        // Offline: the empty record, then the key's deletion.
        index.apply(&entry("u1", Some(vec![]), 4));
        assert!(index.away_by(later).is_empty() && index.owner_of("s1").is_none());
        assert_eq!(index.users_on("gw1"), ["u2"]);
        index.apply(&entry("u1", None, 5));
        index.apply(&entry("u2", None, 6));
        assert_eq!(index.counts(), Counts::default());
        assert!(index.users.is_empty() && index.owners.is_empty() && index.by_gateway.is_empty());
    }

    #[tokio::test]
    async fn periodic_passes_with_nothing_due_read_nothing_of_many_users() {
        let (store, state) = store(5);
        state
            .gateways
            .put(&keys::lease("gw"), Bytes::from_static(b"x"))
            .await
            .expect("lease");
        for n in 0..200 {
            store
                .register(&format!("u{n}"), "U", "gw", &format!("s{n}"), "", "")
                .await
                .expect("register");
        }
        // One away, not yet due.
        store
            .set_away("u0", "s0", Duration::from_secs(60), None, "")
            .await
            .expect("away");
        let mut costly = Vec::new();
        let mut read = |what: &str, before: u64| {
            let now = state.presence.scanned().expect("in memory");
            if now - before > 2 {
                costly.push(format!("{what} read {} entries", now - before));
            }
            now
        };
        let before = state.presence.scanned().expect("in memory");
        assert_eq!(store.expire_away(Duration::ZERO).await.expect("expire"), 0);
        let before = read("an expiry pass", before);
        let mut view = LeaseView::default();
        assert_eq!(
            store.sweep(&mut view, Duration::ZERO).await.expect("sweep"),
            0
        );
        let before = read("a sweep", before);
        let counts = store.counts().await.expect("counts");
        assert_eq!(
            (counts.online_users, counts.sessions, counts.gateways),
            (200, 200, 1)
        );
        let before = read("the counts", before);
        assert!(matches!(
            store
                .unregister("nobody", None, LeaveReason::Left, "")
                .await,
            Err(PresenceError::SessionNotFound(_))
        ));
        let gone = store
            .unregister("s7", None, LeaveReason::Left, "")
            .await
            .expect("unregister");
        assert_eq!(gone.user_id, "u7");
        let before = read("a session's owner", before);
        assert_eq!(
            store
                .unregister_gateway("elsewhere", None)
                .await
                .expect("valid"),
            (0, vec![])
        );
        read("a gateway going with no sessions", before);
        assert!(costly.is_empty(), "{costly:?}");
    }

    #[tokio::test]
    async fn a_replica_finds_its_own_write_before_its_watch_brings_it() {
        let (store, _state) = store(5);
        assert_eq!(store.counts().await.expect("counts"), Counts::default());
        // No await between here and the lookup lets the watch's task run (one
        // thread, and every in-memory write is ready at once).
        store
            .register("u1", "Ann", "gw", "s1", "", "")
            .await
            .expect("register");
        assert_eq!(store.counts().await.expect("counts").sessions, 1);
        let gone = store
            .unregister("s1", None, LeaveReason::Left, "")
            .await
            .expect("its owner found");
        assert!(gone.last_session);
        assert_eq!(store.counts().await.expect("counts"), Counts::default());
    }

    #[tokio::test]
    async fn a_replica_learns_from_its_watch_what_another_wrote() {
        let (a, state) = store(5);
        let b = PresenceStore::new(&state, 5);
        state
            .gateways
            .put(&keys::lease("alive"), Bytes::from_static(b"x"))
            .await
            .expect("lease");
        for (user, gateway, session) in [
            ("u1", "alive", "s1"),
            ("u2", "alive", "s2"),
            ("u3", "dead", "s3"),
        ] {
            a.register(user, user, gateway, session, "", "")
                .await
                .expect("register");
        }
        a.set_away("u2", "s2", Duration::from_millis(20), None, "")
            .await
            .expect("away");
        tokio::time::sleep(Duration::from_millis(40)).await;
        // b's index has followed a's writes once it is current.
        let before = state.presence.scanned().expect("in memory");
        assert_eq!(
            b.expire_away(Duration::ZERO).await.expect("expire"),
            1,
            "s2"
        );
        let mut view = LeaseView::default();
        assert_eq!(
            b.sweep(&mut view, Duration::ZERO).await.expect("sweep"),
            1,
            "s3"
        );
        let gone = b
            .unregister("s1", None, LeaveReason::Left, "")
            .await
            .expect("its owner found");
        assert_eq!(gone.user_id, "u1");
        assert_eq!(b.counts().await.expect("counts"), Counts::default());
        assert_eq!(
            state.presence.scanned().expect("in memory"),
            before,
            "all from b's index"
        );
    }
}
