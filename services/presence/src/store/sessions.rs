//! Sessions coming and going: registering one (within the per-user limit),
//! and unregistering one, with the user going offline after the last.

use std::time::SystemTime;

use meetup_platform::store::Change;
use meetup_proto::bus::v1::{
    LeaveReason, SessionRegistered, SessionUnregistered, UserRecord, presence_change,
};
use meetup_proto::presence::v1::{OnlineUser, Session, User};

use super::PresenceStore;
use super::record::{Current, note_change, online};
use crate::error::{PresenceError, require};

/// What a registration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub user: User,
    pub first_session: bool,
    pub revision: u64,
}

/// What an unregistration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Unregistered {
    pub user_id: String,
    pub last_session: bool,
    pub revision: u64,
}

impl PresenceStore {
    /// Registers `session_id` for `user_id`. Registering a session again refreshes
    /// the username and makes it the user's most recent session.
    pub async fn register(
        &self,
        user_id: &str,
        username: &str,
        gateway_id: &str,
        session_id: &str,
        resume_token_hash: &str,
        traceparent: &str,
    ) -> Result<Registered, PresenceError> {
        require("user_id", user_id)?;
        require("username", username)?;
        require("gateway_id", gateway_id)?;
        require("session_id", session_id)?;
        let (mut registered, revision) = self
            .modify(user_id, |current| async move {
                let now = SystemTime::now();
                let previous = current.as_ref().map(Current::sessions).unwrap_or_default();
                let first_session = previous.is_empty();
                if previous.len() >= self.max_sessions_per_user()
                    && !previous.iter().any(|s| s.session_id == session_id)
                {
                    return Err(PresenceError::TooManySessions {
                        user_id: user_id.to_owned(),
                        max: self.max_sessions_per_user(),
                    });
                }
                let joined_at = match current.as_ref().and_then(|c| online(&c.record)) {
                    Some(u) => u.user.as_ref().and_then(|u| u.joined_at),
                    None => None,
                }
                .unwrap_or_else(|| now.into());
                let session = Session {
                    session_id: session_id.to_owned(),
                    gateway_id: gateway_id.to_owned(),
                    registered_at: Some(now.into()),
                    away_until: None,
                    resume_token_hash: resume_token_hash.to_owned(),
                    ..Default::default()
                };
                let mut sessions: Vec<Session> = previous
                    .iter()
                    .filter(|s| s.session_id != session_id)
                    .cloned()
                    .collect();
                sessions.push(session.clone());
                let user = User {
                    id: user_id.to_owned(),
                    username: username.to_owned(),
                    joined_at: Some(joined_at),
                };
                let mut record = UserRecord {
                    user: Some(OnlineUser {
                        user: Some(user.clone()),
                        sessions,
                    }),
                    ..UserRecord::default()
                };
                note_change(
                    &mut record,
                    presence_change::Change::Registered(SessionRegistered {
                        session: Some(session),
                        first_session,
                    }),
                    traceparent,
                );
                Ok(Change::Put(
                    record,
                    Registered {
                        user,
                        first_session,
                        revision: 0,
                    },
                ))
            })
            .await?;
        registered.revision = revision;
        tracing::info!(
            user_id,
            session_id,
            gateway_id,
            first_session = registered.first_session,
            "session registered"
        );
        Ok(registered)
    }

    /// Removes one session. `user_id` names its user when the caller knows it;
    /// else this replica's index is asked.
    pub async fn unregister(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        reason: LeaveReason,
        traceparent: &str,
    ) -> Result<Unregistered, PresenceError> {
        self.unregister_if(session_id, user_id, false, reason, traceparent)
            .await
    }

    /// [`PresenceStore::unregister`]; with `keep_away`, a session that is away
    /// stays (`SessionNotFound`: no live session to remove).
    pub async fn unregister_if(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        keep_away: bool,
        reason: LeaveReason,
        traceparent: &str,
    ) -> Result<Unregistered, PresenceError> {
        require("session_id", session_id)?;
        let user_id = match user_id.filter(|u| !u.is_empty()) {
            Some(user_id) => user_id.to_owned(),
            None => self
                .owner_of(session_id)
                .await?
                .ok_or_else(|| PresenceError::SessionNotFound(session_id.to_owned()))?,
        };
        let user = user_id.as_str();
        let (mut gone, revision) = self
            .modify(user, |current| async move {
                let current = current
                    .filter(|c| {
                        c.sessions().iter().any(|s| {
                            s.session_id == session_id && !(keep_away && s.away_until.is_some())
                        })
                    })
                    .ok_or_else(|| PresenceError::SessionNotFound(session_id.to_owned()))?;
                let mut record = current.record.clone();
                if let Some(user) = record.user.as_mut() {
                    user.sessions.retain(|s| s.session_id != session_id);
                }
                let last_session = online(&record).is_none();
                note_change(
                    &mut record,
                    presence_change::Change::Unregistered(SessionUnregistered {
                        session_id: session_id.to_owned(),
                        reason: reason as i32,
                    }),
                    traceparent,
                );
                Ok(Change::Put(
                    record,
                    Unregistered {
                        user_id: user.to_owned(),
                        last_session,
                        revision: 0,
                    },
                ))
            })
            .await?;
        gone.revision = revision;
        if gone.last_session {
            self.forget_offline(&user_id, gone.revision).await;
        }
        tracing::info!(user_id = %gone.user_id, session_id, last_session = gone.last_session, "session unregistered");
        Ok(gone)
    }

    /// The user holding `session_id`, for a caller that does not know it, as
    /// this replica's index says (the removal reads the record again).
    async fn owner_of(&self, session_id: &str) -> Result<Option<String>, PresenceError> {
        self.lookup(|index| index.owner_of(session_id)).await
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use meetup_platform::store::Watched;

    use super::*;
    use crate::store::Counts;
    use crate::store::state::in_memory as store;

    #[tokio::test]
    async fn first_and_last_session_bring_a_user_on_and_off_line() {
        let (store, state) = store(3);
        let mut watch = state.presence.watch().await.expect("watch");
        assert_eq!(watch.next().await, Some(Ok(Watched::Current)));
        let a = store
            .register("u1", "Ann", "gw", "s1", "", "")
            .await
            .expect("register");
        assert!(a.first_session);
        let b = store
            .register("u1", "Annie", "gw", "s2", "", "")
            .await
            .expect("register");
        assert!(!b.first_session);
        assert!(b.revision > a.revision);
        assert_eq!(b.user.username, "Annie");
        assert_eq!(b.user.joined_at, a.user.joined_at, "joinedAt stays");
        let counts = store.counts().await.expect("counts");
        assert_eq!((counts.online_users, counts.sessions), (1, 2));

        let gone = store
            .unregister("s1", None, LeaveReason::Left, "")
            .await
            .expect("unregister");
        assert!(!gone.last_session);
        let gone = store
            .unregister("s2", Some("u1"), LeaveReason::Left, "")
            .await
            .expect("unregister");
        assert!(gone.last_session);
        assert_eq!(store.counts().await.expect("counts"), Counts::default());
        assert!(matches!(
            store
                .unregister("s2", Some("u1"), LeaveReason::Left, "")
                .await,
            Err(PresenceError::SessionNotFound(_))
        ));
        // Every change reached the watch in order: 4 writes and the key's deletion.
        let mut revisions = Vec::new();
        for _ in 0..5 {
            match watch.next().await {
                Some(Ok(Watched::Entry(e))) => revisions.push(e.revision),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(revisions.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test]
    async fn a_user_holds_at_most_the_configured_sessions() {
        let (store, _state) = store(3);
        for session in ["s1", "s2", "s3"] {
            store
                .register("u1", "Ann", "gw", session, "", "")
                .await
                .expect("register");
        }
        assert!(matches!(
            store.register("u1", "Ann", "gw", "s4", "", "").await,
            Err(PresenceError::TooManySessions { max: 3, .. })
        ));
        // Refreshing a session it holds is no new session.
        assert!(
            store
                .register("u1", "Ann", "gw", "s2", "", "")
                .await
                .is_ok()
        );
        assert_eq!(store.counts().await.expect("counts").sessions, 3);
    }

    #[tokio::test]
    async fn racing_registrations_never_exceed_the_limit() {
        let (store, _state) = store(2);
        let attempts = (0..16).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .register("u1", "Ann", "gw", &format!("s{i}"), "", "")
                    .await
                    .is_ok()
            })
        });
        let won = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        assert_eq!(won, 2);
        assert_eq!(store.get("u1").await.expect("online").sessions.len(), 2);
    }

    #[tokio::test]
    async fn bad_fields_are_invalid_arguments() {
        let (store, _state) = store(3);
        let long = "x".repeat(129);
        for (user, name, gw, session) in [
            ("", "n", "g", "s"),
            ("u", "", "g", "s"),
            ("u", "n", "", "s"),
            ("u", "n", "g", ""),
            (long.as_str(), "n", "g", "s"),
        ] {
            assert!(matches!(
                store.register(user, name, gw, session, "", "").await,
                Err(PresenceError::InvalidArgument(_))
            ));
        }
        assert_eq!(store.counts().await.expect("counts"), Counts::default());
    }
}
