//! The presence state: one key per online user in the presence bucket, holding
//! the user and its sessions (sockets) on gateways. Every change is one
//! compare-and-set on that key, so any number of replicas serve the same state,
//! and the per-user session limit holds under concurrency.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meetup_platform::store::{self, Bucket, Change, StateStore, Versioned, keys};
use meetup_proto::bus::v1::{
    LeaveReason, PresenceChange, SessionAway, SessionRegistered, SessionResumed,
    SessionUnregistered, UserRecord, presence_change,
};
use meetup_proto::presence::v1::{OnlineUser, Session, User};
use prost::Message;

use crate::error::{PresenceError, require};

/// Cheap-to-clone handle on the presence bucket.
#[derive(Clone, Debug)]
pub struct PresenceStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    bucket: Bucket,
    leases: Bucket,
    max_sessions_per_user: usize,
    /// How long the sessions of a dead gateway stay away before they go
    /// (zero: they go at once).
    resume_grace: Duration,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub user: User,
    pub first_session: bool,
    pub revision: u64,
}

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

/// What an unregistration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Unregistered {
    pub user_id: String,
    pub last_session: bool,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub online_users: u32,
    pub sessions: u32,
    pub gateways: u32,
}

/// A user's record and the revision it was read at.
struct Current {
    record: UserRecord,
    revision: u64,
}

impl Current {
    fn sessions(&self) -> &[Session] {
        self.record
            .user
            .as_ref()
            .map(|u| u.sessions.as_slice())
            .unwrap_or_default()
    }
}

fn decode(entry: &store::Entry) -> Option<UserRecord> {
    let value = entry.value.as_ref()?;
    match UserRecord::decode(value.clone()) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::error!(key = %entry.key, %error, "undecodable user record; treated as absent");
            None
        }
    }
}

fn online(record: &UserRecord) -> Option<&OnlineUser> {
    record.user.as_ref().filter(|u| !u.sessions.is_empty())
}

impl PresenceStore {
    /// A store that lets one user id hold at most `max_sessions_per_user` sessions.
    pub fn new(state: &StateStore, max_sessions_per_user: usize) -> Self {
        PresenceStore {
            shared: Arc::new(Shared {
                bucket: state.presence.clone(),
                leases: state.gateways.clone(),
                max_sessions_per_user: max_sessions_per_user.max(1),
                resume_grace: Duration::ZERO,
            }),
        }
    }

    /// The sessions of a gateway whose lease is gone stay away for `grace`
    /// (a client may resume them elsewhere) instead of going at once.
    pub fn with_resume_grace(self, grace: Duration) -> Self {
        let shared = &self.shared;
        PresenceStore {
            shared: Arc::new(Shared {
                bucket: shared.bucket.clone(),
                leases: shared.leases.clone(),
                max_sessions_per_user: shared.max_sessions_per_user,
                resume_grace: grace,
            }),
        }
    }

    async fn read(&self, user_id: &str) -> Result<Option<Current>, PresenceError> {
        let entry = self.shared.bucket.get(&keys::user(user_id)).await?;
        Ok(entry.and_then(|e| {
            decode(&e).map(|record| Current {
                record,
                revision: e.revision,
            })
        }))
    }

    /// Changes `user_id`'s record by compare-and-set ([`Bucket::modify`]):
    /// `decide` sees the record as it is; what it decides is written with the
    /// revision read, or decided again when another writer came first.
    /// Returns its answer and the revision written (0 when nothing was).
    async fn modify<T, F, Fut>(
        &self,
        user_id: &str,
        mut decide: F,
    ) -> Result<(T, u64), PresenceError>
    where
        F: FnMut(Option<Current>) -> Fut,
        Fut: std::future::Future<Output = Result<Change<UserRecord, T>, PresenceError>>,
    {
        self.shared
            .bucket
            .modify(
                &keys::user(user_id),
                |read: Option<Versioned<UserRecord>>| {
                    decide(read.map(|r| Current {
                        record: r.value,
                        revision: r.revision,
                    }))
                },
            )
            .await
    }

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
                if previous.len() >= self.shared.max_sessions_per_user
                    && !previous.iter().any(|s| s.session_id == session_id)
                {
                    return Err(PresenceError::TooManySessions {
                        user_id: user_id.to_owned(),
                        max: self.shared.max_sessions_per_user,
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
                let record = UserRecord {
                    user: Some(OnlineUser {
                        user: Some(user.clone()),
                        sessions,
                    }),
                    change: Some(PresenceChange {
                        change: Some(presence_change::Change::Registered(SessionRegistered {
                            session: Some(session),
                            first_session,
                        })),
                    }),
                    traceparent: traceparent.to_owned(),
                };
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
    /// else every user is scanned for it.
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
                record.change = Some(PresenceChange {
                    change: Some(presence_change::Change::Unregistered(SessionUnregistered {
                        session_id: session_id.to_owned(),
                        reason: reason as i32,
                    })),
                });
                record.traceparent = traceparent.to_owned();
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
            // The empty record already says "offline"; deleting the key only keeps
            // the bucket small. A registration that came in between wins.
            let key = keys::user(&user_id);
            if let Err(error) = self.shared.bucket.delete(&key, gone.revision).await
                && error != store::StoreError::Conflict
            {
                tracing::warn!(user_id, %error, "offline user's key not deleted");
            }
        }
        tracing::info!(user_id = %gone.user_id, session_id, last_session = gone.last_session, "session unregistered");
        Ok(gone)
    }

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
                let current = current
                    .filter(|c| c.sessions().iter().any(|s| s.session_id == session_id))
                    .ok_or_else(|| PresenceError::SessionNotFound(session_id.to_owned()))?;
                let mut record = current.record.clone();
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
                record.change = Some(PresenceChange {
                    change: Some(presence_change::Change::Away(SessionAway {
                        session: Some(session),
                    })),
                });
                record.traceparent = traceparent.to_owned();
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
                record.change = Some(PresenceChange {
                    change: Some(presence_change::Change::Resumed(SessionResumed {
                        previous_session_id: previous.session_id.clone(),
                        session: Some(session),
                    })),
                });
                record.traceparent = traceparent.to_owned();
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

    /// True when `gateway_id` holds its lease (it is alive).
    async fn lease_held(&self, gateway_id: &str) -> Result<bool, PresenceError> {
        Ok(self
            .shared
            .leases
            .exists_on_leader(&keys::lease(gateway_id))
            .await?)
    }

    /// Removes the away sessions whose time ran out at least `margin` ago (the
    /// call service removes them from their calls one sweep earlier, so peers
    /// hear `user-left-call` before `user-left`). Returns how many went.
    pub async fn expire_away(&self, margin: Duration) -> Result<u32, PresenceError> {
        let deadline = SystemTime::now() - margin;
        let expired = sessions_where(&self.all().await?, |s| {
            away_until(s).is_some_and(|t| t <= deadline)
        });
        let mut removed = 0;
        for (user_id, session_id) in expired {
            // Resumed meanwhile: the session id is gone, or no longer away.
            let still_away = self.read(&user_id).await?.is_some_and(|c| {
                c.sessions().iter().any(|s| {
                    s.session_id == session_id && away_until(s).is_some_and(|t| t <= deadline)
                })
            });
            if !still_away {
                continue;
            }
            match self
                .unregister(&session_id, Some(&user_id), LeaveReason::Disconnected, "")
                .await
            {
                Ok(_) => removed += 1,
                Err(PresenceError::SessionNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        if removed > 0 {
            tracing::info!(sessions = removed, "away sessions expired");
        }
        Ok(removed)
    }

    async fn owner_of(&self, session_id: &str) -> Result<Option<String>, PresenceError> {
        Ok(self.all().await?.into_iter().find_map(|u| {
            u.sessions
                .iter()
                .any(|s| s.session_id == session_id)
                .then(|| u.user.map(|u| u.id))
                .flatten()
        }))
    }

    /// Removes every session of one gateway registered before `cutoff` (all of
    /// them without one). Returns the sessions removed and the users that went
    /// offline. Idempotent: sessions already gone are skipped.
    pub async fn unregister_gateway(
        &self,
        gateway_id: &str,
        cutoff: Option<SystemTime>,
    ) -> Result<(u32, Vec<String>), PresenceError> {
        require("gateway_id", gateway_id)?;
        let doomed = sessions_where(&self.all().await?, |s| {
            s.gateway_id == gateway_id && registered_before(s, cutoff)
        });
        let mut removed = 0;
        let mut offline = Vec::new();
        for (user_id, session_id) in doomed {
            match self
                .unregister(&session_id, Some(&user_id), LeaveReason::Disconnected, "")
                .await
            {
                Ok(gone) => {
                    removed += 1;
                    if gone.last_session {
                        offline.push(gone.user_id);
                    }
                }
                Err(PresenceError::SessionNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok((removed, offline))
    }

    /// Every online user with its sessions, in no particular order.
    async fn all(&self) -> Result<Vec<OnlineUser>, PresenceError> {
        let entries = self.shared.bucket.scan(keys::USER_PREFIX).await?;
        Ok(entries
            .iter()
            .filter_map(decode)
            .filter_map(|r| online(&r).cloned())
            .collect())
    }

    /// All online users, in the order they came online.
    pub async fn list(&self) -> Result<Vec<OnlineUser>, PresenceError> {
        let mut users = self.all().await?;
        users.sort_by_key(|u| {
            let user = u.user.as_ref();
            (
                user.and_then(|u| u.joined_at)
                    .map(|t| (t.seconds, t.nanos))
                    .unwrap_or_default(),
                user.map(|u| u.id.clone()).unwrap_or_default(),
            )
        });
        Ok(users)
    }

    pub async fn get(&self, user_id: &str) -> Result<OnlineUser, PresenceError> {
        require("user_id", user_id)?;
        self.read(user_id)
            .await?
            .and_then(|c| online(&c.record).cloned())
            .ok_or_else(|| PresenceError::UserNotFound(user_id.to_owned()))
    }

    /// Follows the users' keys from `after` (see
    /// [`meetup_platform::store::Bucket::follow_after`]).
    pub async fn follow_after(&self, after: u64) -> Result<store::TrackedStream, PresenceError> {
        Ok(self
            .shared
            .bucket
            .follow_after(after, keys::USER_PREFIX)
            .await?)
    }

    pub async fn counts(&self) -> Result<Counts, PresenceError> {
        let users = self.all().await?;
        let gateways: std::collections::HashSet<&str> = users
            .iter()
            .flat_map(|u| u.sessions.iter().map(|s| s.gateway_id.as_str()))
            .collect();
        Ok(Counts {
            online_users: users.len() as u32,
            sessions: users.iter().map(|u| u.sessions.len() as u32).sum(),
            gateways: gateways.len() as u32,
        })
    }

    /// One sweep: removes the sessions of gateways whose lease has been gone for
    /// `confirm`. Returns how many sessions went.
    pub async fn sweep(
        &self,
        view: &mut store::leases::LeaseView,
        confirm: std::time::Duration,
    ) -> Result<u32, PresenceError> {
        let users = self.all().await?;
        let mentioned: std::collections::BTreeSet<&str> = users
            .iter()
            .flat_map(|u| u.sessions.iter().map(|s| s.gateway_id.as_str()))
            .collect();
        let dead = view
            .dead_gateways(&self.shared.leases, mentioned, confirm)
            .await?;
        let grace = self.shared.resume_grace;
        let mut removed = 0;
        for gateway in dead {
            if grace.is_zero() {
                let (count, _) = self
                    .unregister_gateway(&gateway.gateway_id, Some(gateway.cutoff))
                    .await?;
                if count > 0 {
                    tracing::warn!(gateway_id = %gateway.gateway_id, sessions = count, "gateway lease gone; its sessions removed");
                }
                removed += count;
                continue;
            }
            // Its clients may come back through another gateway: their sessions
            // turn away, and go only if nobody resumes them in time.
            let doomed = sessions_where(&users, |s| {
                s.gateway_id == gateway.gateway_id
                    && s.away_until.is_none()
                    && registered_before(s, Some(gateway.cutoff))
            });
            let count = doomed.len();
            for (user_id, session_id) in doomed {
                match self.set_away(&user_id, &session_id, grace, None, "").await {
                    Ok(_) | Err(PresenceError::SessionNotFound(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            if count > 0 {
                tracing::warn!(gateway_id = %gateway.gateway_id, sessions = count, "gateway lease gone; its sessions are away");
            }
        }
        Ok(removed)
    }
}

/// `(user id, session id)` of every session of `users` that `pick` selects.
fn sessions_where(users: &[OnlineUser], pick: impl Fn(&Session) -> bool) -> Vec<(String, String)> {
    users
        .iter()
        .flat_map(|u| {
            let user_id = u.user.as_ref().map(|u| u.id.clone()).unwrap_or_default();
            u.sessions
                .iter()
                .filter(|s| pick(s))
                .map(move |s| (user_id.clone(), s.session_id.clone()))
        })
        .collect()
}

fn away_until(session: &Session) -> Option<SystemTime> {
    session
        .away_until
        .and_then(|t| SystemTime::try_from(t).ok())
}

fn registered_before(session: &Session, cutoff: Option<SystemTime>) -> bool {
    let Some(cutoff) = cutoff else { return true };
    session
        .registered_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .is_none_or(|t| t < cutoff)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::StreamExt;
    use meetup_platform::store::{BucketSettings, Watched};

    use super::*;

    fn store(max: usize) -> (PresenceStore, StateStore) {
        let state = StateStore::memory(BucketSettings::default());
        (PresenceStore::new(&state, max), state)
    }

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

    #[tokio::test]
    async fn list_is_in_coming_online_order() {
        let (store, _state) = store(5);
        for (user, session) in [("c", "1"), ("a", "2"), ("b", "3")] {
            store
                .register(user, user, "gw", session, "", "")
                .await
                .expect("register");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A later session of "c" does not move it.
        store
            .register("c", "c", "gw", "4", "", "")
            .await
            .expect("register");
        let ids: Vec<_> = store
            .list()
            .await
            .expect("list")
            .iter()
            .filter_map(|u| u.user.as_ref().map(|u| u.id.clone()))
            .collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }

    #[tokio::test]
    async fn a_gateway_going_away_takes_its_sessions_only() {
        let (store, _state) = store(5);
        store
            .register("u1", "Ann", "gw1", "s1", "", "")
            .await
            .expect("register");
        store
            .register("u1", "Ann", "gw2", "s2", "", "")
            .await
            .expect("register");
        store
            .register("u2", "Bob", "gw1", "s3", "", "")
            .await
            .expect("register");
        let (removed, offline) = store.unregister_gateway("gw1", None).await.expect("valid");
        assert_eq!(removed, 2);
        assert_eq!(offline, vec!["u2".to_string()]);
        let ann = store.get("u1").await.expect("still online");
        assert_eq!(ann.sessions.len(), 1);
        assert_eq!(ann.sessions[0].gateway_id, "gw2");
        assert!(matches!(
            store.get("u2").await,
            Err(PresenceError::UserNotFound(_))
        ));
        // Again: nothing left to do.
        assert_eq!(
            store
                .unregister_gateway("gw1", None)
                .await
                .expect("valid")
                .0,
            0
        );
    }

    #[tokio::test]
    async fn a_sweep_removes_the_sessions_of_gateways_without_lease() {
        let (store, state) = store(5);
        state
            .gateways
            .put(&keys::lease("alive"), Bytes::from_static(b"x"))
            .await
            .expect("lease");
        store
            .register("u1", "Ann", "alive", "s1", "", "")
            .await
            .expect("register");
        store
            .register("u2", "Bob", "dead", "s2", "", "")
            .await
            .expect("register");
        let mut view = store::leases::LeaseView::default();
        let removed = store.sweep(&mut view, Duration::ZERO).await.expect("sweep");
        assert_eq!(removed, 1);
        assert!(store.get("u1").await.is_ok());
        assert!(store.get("u2").await.is_err());
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
