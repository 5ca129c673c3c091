//! Away and back: a session whose socket went without saying goodbye turns
//! away for a grace period, and a new socket may resume it (take it over)
//! before that runs out. Removing the sessions whose time ran out is
//! `expiry`'s.

use std::time::{Duration, SystemTime};

use meetup_platform::store::Change;
use meetup_proto::bus::v1::{SessionAway, SessionResumed, presence_change};
use meetup_proto::presence::v1::{Session, User};

use super::PresenceStore;
use super::record::{away_until, note_change};
use crate::error::{PresenceError, require};

/// How long before its time runs out an away session stops being resumable:
/// the call service lets it go when its time has run out, and a resume must
/// reach the calls before that.
const EXPIRY_MARGIN: Duration = Duration::from_millis(250);

/// What a resumption did.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub user: User,
    /// The session taken over.
    pub previous: Session,
    pub revision: u64,
}

impl PresenceStore {
    /// Turns one session away until `grace` from now (its socket went without
    /// saying goodbye). The user stays online; a sweep removes the session
    /// once that time has passed, unless a new socket resumed it.
    pub async fn set_away(
        &self,
        user_id: &str,
        session_id: &str,
        grace: Duration,
        relays_given: Option<u64>,
        traceparent: &str,
    ) -> Result<(SystemTime, u64), PresenceError> {
        require("user_id", user_id)?;
        require("session_id", session_id)?;
        let until = SystemTime::now() + grace;
        let ((), revision) = self
            .modify(user_id, |current| async move {
                let mut record = current.map(|c| c.record).unwrap_or_default();
                let Some(session) = record
                    .user
                    .as_mut()
                    .and_then(|u| u.sessions.iter_mut().find(|s| s.session_id == session_id))
                else {
                    return Err(PresenceError::SessionNotFound(session_id.to_owned()));
                };
                session.away_until = Some(until.into());
                session.relays_given = relays_given.unwrap_or_default();
                session.relays_counted = relays_given.is_some();
                let session = session.clone();
                note_change(
                    &mut record,
                    presence_change::Change::Away(SessionAway {
                        session: Some(session),
                    }),
                    traceparent,
                );
                Ok(Change::Put(record, ()))
            })
            .await?;
        tracing::info!(user_id, session_id, ?grace, "session away");
        Ok((until, revision))
    }

    /// Hands a session of `user_id` over to a new socket: the session whose
    /// resume token hashes to `token_hash`, else (no token) the user's only
    /// session when it is away. `None` when there is no such session.
    pub async fn resume(
        &self,
        user_id: &str,
        token_hash: Option<&str>,
        session_id: &str,
        gateway_id: &str,
        new_token_hash: &str,
        traceparent: &str,
    ) -> Result<Option<Resumed>, PresenceError> {
        require("user_id", user_id)?;
        require("session_id", session_id)?;
        require("gateway_id", gateway_id)?;
        let (mut resumed, revision) = self
            .modify(user_id, |current| async move {
                let Some(current) = current else {
                    return Ok(Change::Keep(None));
                };
                let sessions = current.sessions();
                // Resumed already by this very request (a retry after an answer
                // that was lost): the same answer again.
                if let Some(mine) = sessions.iter().find(|s| s.session_id == session_id) {
                    if mine.resumed_from.is_empty() {
                        return Ok(Change::Keep(None));
                    }
                    return Ok(Change::Keep(Some(Resumed {
                        user: current
                            .record
                            .user
                            .as_ref()
                            .and_then(|u| u.user.clone())
                            .unwrap_or_default(),
                        previous: Session {
                            session_id: mine.resumed_from.clone(),
                            relays_given: mine.relays_given,
                            relays_counted: mine.relays_counted,
                            ..Default::default()
                        },
                        revision: current.revision,
                    })));
                }
                // An away session whose time has (nearly) run out is not taken
                // over: its calls may already have let it go.
                let resumable = |s: &Session| {
                    away_until(s).is_none_or(|t| t > SystemTime::now() + EXPIRY_MARGIN)
                };
                let taken = match token_hash {
                    Some(hash) => sessions.iter().position(|s| {
                        !s.resume_token_hash.is_empty()
                            && s.resume_token_hash == hash
                            && resumable(s)
                    }),
                    // No live socket: its one session is away, or on a gateway
                    // whose lease is gone (a sweep has yet to turn it away).
                    None => match sessions {
                        [only] if !resumable(only) => None,
                        [only] if only.away_until.is_some() => Some(0),
                        [only] if !self.lease_held(&only.gateway_id).await? => Some(0),
                        _ => None,
                    },
                };
                let Some(taken) = taken else {
                    return Ok(Change::Keep(None));
                };
                let mut record = current.record.clone();
                let Some(online) = record.user.as_mut() else {
                    return Ok(Change::Keep(None));
                };
                let previous = online.sessions.remove(taken);
                let session = Session {
                    session_id: session_id.to_owned(),
                    gateway_id: gateway_id.to_owned(),
                    registered_at: previous.registered_at,
                    away_until: None,
                    resume_token_hash: new_token_hash.to_owned(),
                    relays_given: previous.relays_given,
                    relays_counted: previous.relays_counted,
                    resumed_from: previous.session_id.clone(),
                };
                online.sessions.push(session.clone());
                let user = online.user.clone().unwrap_or_default();
                note_change(
                    &mut record,
                    presence_change::Change::Resumed(SessionResumed {
                        previous_session_id: previous.session_id.clone(),
                        session: Some(session),
                    }),
                    traceparent,
                );
                Ok(Change::Put(
                    record,
                    Some(Resumed {
                        user,
                        previous,
                        revision: 0,
                    }),
                ))
            })
            .await?;
        // A write's revision; a repeated request's answer has its own.
        if let Some(resumed) = resumed.as_mut()
            && revision != 0
        {
            resumed.revision = revision;
        }
        if let Some(resumed) = &resumed {
            tracing::info!(
                user_id,
                session_id,
                previous = %resumed.previous.session_id,
                gateway_id,
                "session resumed"
            );
        }
        Ok(resumed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use meetup_platform::store::keys;

    use super::*;
    use crate::store::state::in_memory as store;

    #[tokio::test]
    async fn an_away_session_keeps_the_user_online_until_resumed_or_expired() {
        let (store, state) = store(3);
        // gw2 is alive: a session there is a live socket.
        state
            .gateways
            .put(&keys::lease("gw2"), Bytes::from_static(b"lease"))
            .await
            .expect("lease");
        store
            .register("u1", "Ann", "gw1", "s1", "hash-1", "")
            .await
            .expect("register");
        let (_, away) = store
            .set_away("u1", "s1", Duration::from_secs(5), Some(4), "")
            .await
            .expect("away");
        assert!(away > 0);
        let online = store.get("u1").await.expect("still online");
        assert!(online.sessions[0].away_until.is_some());
        assert_eq!(
            (
                online.sessions[0].relays_given,
                online.sessions[0].relays_counted
            ),
            (4, true)
        );
        // Someone else's token, or none while a live session exists elsewhere: nothing.
        assert!(
            store
                .resume("u1", Some("hash-x"), "s2", "gw2", "hash-2", "")
                .await
                .expect("resume")
                .is_none()
        );
        // The right token: the session moves to the new socket, no longer away.
        let resumed = store
            .resume("u1", Some("hash-1"), "s2", "gw2", "hash-2", "")
            .await
            .expect("resume")
            .expect("resumed");
        assert_eq!(resumed.previous.session_id, "s1");
        assert_eq!(resumed.previous.relays_given, 4);
        // The same request again (its answer was lost): the same answer.
        let again = store
            .resume("u1", Some("hash-1"), "s2", "gw2", "hash-2", "")
            .await
            .expect("resume")
            .expect("resumed");
        assert_eq!(
            (
                again.previous.session_id.as_str(),
                again.previous.relays_given
            ),
            ("s1", 4)
        );
        let online = store.get("u1").await.expect("online");
        assert_eq!(online.sessions.len(), 1);
        assert_eq!(online.sessions[0].session_id, "s2");
        assert_eq!(online.sessions[0].gateway_id, "gw2");
        assert!(online.sessions[0].away_until.is_none());
        // The old token is spent.
        assert!(
            store
                .resume("u1", Some("hash-1"), "s3", "gw2", "hash-3", "")
                .await
                .expect("resume")
                .is_none()
        );
        // Without a token: only the user's only session, when it is away.
        assert!(
            store
                .resume("u1", None, "s3", "gw2", "hash-3", "")
                .await
                .expect("resume")
                .is_none()
        );
        store
            .set_away("u1", "s2", Duration::from_millis(50), None, "")
            .await
            .expect("away");
        // Its time nearly run out: no longer resumable, with or without token.
        for token in [Some("hash-2"), None] {
            assert!(
                store
                    .resume("u1", token, "s4", "gw2", "hash-4", "")
                    .await
                    .expect("resume")
                    .is_none()
            );
        }
        assert_eq!(
            store
                .expire_away(Duration::from_secs(5))
                .await
                .expect("expire"),
            0
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.expire_away(Duration::ZERO).await.expect("expire"), 1);
        assert!(matches!(
            store.get("u1").await,
            Err(PresenceError::UserNotFound(_))
        ));
    }

    #[tokio::test]
    async fn without_a_token_only_a_lone_away_session_is_taken_over() {
        let (store, _state) = store(3);
        store
            .register("u1", "Ann", "gw1", "s1", "", "")
            .await
            .expect("register");
        store
            .set_away("u1", "s1", Duration::from_secs(10), Some(0), "")
            .await
            .expect("away");
        let resumed = store
            .resume("u1", None, "s2", "gw1", "h2", "")
            .await
            .expect("resume")
            .expect("taken over");
        assert_eq!(resumed.previous.session_id, "s1");
        // Two sessions, one away: not taken over without its token.
        store
            .register("u1", "Ann", "gw1", "s3", "", "")
            .await
            .expect("register");
        store
            .set_away("u1", "s3", Duration::from_secs(10), Some(0), "")
            .await
            .expect("away");
        assert!(
            store
                .resume("u1", None, "s4", "gw1", "h4", "")
                .await
                .expect("resume")
                .is_none()
        );
    }
}
