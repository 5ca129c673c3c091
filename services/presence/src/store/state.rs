//! The handle on the presence bucket and the one way into it that every
//! concern of the store goes through: a user's record read, or changed by
//! compare-and-set; this replica's index of the bucket asked; the
//! whole-bucket scan; the gateways' leases. The handle's state is private to
//! this module; the concerns see only these methods.

use std::sync::Arc;
use std::time::Duration;

use meetup_platform::store::due::Followed;
use meetup_platform::store::leases::{DeadGateway, LeaseView};
use meetup_platform::store::{self, Bucket, Change, StateStore, Versioned, keys};
use meetup_proto::bus::v1::UserRecord;
use meetup_proto::presence::v1::{OnlineUser, Session};

use super::index::PresenceIndex;
use super::record::{Current, decode, online, sessions_where};
use crate::error::PresenceError;

/// How long a lookup waits for this replica's index to catch up with the
/// bucket before it reads the bucket itself.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Cheap-to-clone handle on the presence bucket.
#[derive(Clone, Debug)]
pub struct PresenceStore {
    shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
struct Shared {
    bucket: Bucket,
    /// What this replica knows of the presence bucket, from its watch.
    seen: Followed<PresenceIndex>,
    leases: Bucket,
    max_sessions_per_user: usize,
    /// How long the sessions of a dead gateway stay away before they go
    /// (zero: they go at once).
    resume_grace: Duration,
}

impl PresenceStore {
    /// A store that lets one user id hold at most `max_sessions_per_user` sessions.
    pub fn new(state: &StateStore, max_sessions_per_user: usize) -> Self {
        PresenceStore {
            shared: Arc::new(Shared {
                bucket: state.presence.clone(),
                seen: Followed::start(state.presence.clone()),
                leases: state.gateways.clone(),
                max_sessions_per_user: max_sessions_per_user.max(1),
                resume_grace: Duration::ZERO,
            }),
        }
    }

    /// The sessions of a gateway whose lease is gone stay away for `grace`
    /// (a client may resume them elsewhere) instead of going at once.
    pub fn with_resume_grace(self, grace: Duration) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        shared.resume_grace = grace;
        PresenceStore {
            shared: Arc::new(shared),
        }
    }

    /// Most sessions one user id may hold (at least one).
    pub(super) fn max_sessions_per_user(&self) -> usize {
        self.shared.max_sessions_per_user
    }

    /// How long the sessions of a dead gateway stay away (zero: none do).
    pub(super) fn resume_grace(&self) -> Duration {
        self.shared.resume_grace
    }

    /// `user_id`'s record as it is now, if it has one.
    pub(super) async fn read(&self, user_id: &str) -> Result<Option<Current>, PresenceError> {
        let entry = self.shared.bucket.get(&keys::user(user_id)).await?;
        Ok(entry.and_then(|e| {
            decode(&e).map(|record| Current {
                record,
                revision: e.revision,
            })
        }))
    }

    /// `(user id, session id)` of the sessions of `user_ids` that `pick`
    /// selects, as their records are now (the index named the users; it may
    /// be behind, the records are not).
    pub(super) async fn sessions_now(
        &self,
        user_ids: Vec<String>,
        pick: impl Fn(&Session) -> bool,
    ) -> Result<Vec<(String, String)>, PresenceError> {
        let mut users = Vec::new();
        for user_id in user_ids {
            if let Some(user) = self
                .read(&user_id)
                .await?
                .and_then(|c| online(&c.record).cloned())
            {
                users.push(user);
            }
        }
        Ok(sessions_where(&users, pick))
    }

    /// Changes `user_id`'s record by compare-and-set ([`Followed::modify`]):
    /// `decide` sees the record as it is; what it decides is written with the
    /// revision read, or decided again when another writer came first. This
    /// replica's index knows the write at once, before the watch brings it
    /// back. Returns its answer and the revision written (0 when nothing was).
    pub(super) async fn modify<T, F, Fut>(
        &self,
        user_id: &str,
        mut decide: F,
    ) -> Result<(T, u64), PresenceError>
    where
        F: FnMut(Option<Current>) -> Fut,
        Fut: std::future::Future<Output = Result<Change<UserRecord, T>, PresenceError>>,
    {
        self.shared
            .seen
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

    /// Asks `query` of this replica's index of the presence bucket, once it
    /// has followed every write the bucket had; when it cannot within
    /// [`CATCH_UP_WAIT`] (starting, resyncing, far behind), of an index made
    /// of one full read. Either way what it names is a hint to re-read.
    pub(super) async fn lookup<R>(
        &self,
        query: impl Fn(&PresenceIndex) -> R,
    ) -> Result<R, PresenceError> {
        Ok(self
            .shared
            .seen
            .ask(CATCH_UP_WAIT, keys::USER_PREFIX, query)
            .await?)
    }

    /// Deletes the key of a user who went offline with the write at
    /// `revision`. The empty record already says "offline"; deleting the key
    /// only keeps the bucket small, so a registration that came in between
    /// wins and a failure is only logged.
    pub(super) async fn forget_offline(&self, user_id: &str, revision: u64) {
        let key = keys::user(user_id);
        if let Err(error) = self.shared.bucket.delete(&key, revision).await
            && error != store::StoreError::Conflict
        {
            tracing::warn!(user_id, %error, "offline user's key not deleted");
        }
    }

    /// Every online user with its sessions, in no particular order: a scan of
    /// the whole bucket (for the list, which returns them all anyway).
    pub(super) async fn all(&self) -> Result<Vec<OnlineUser>, PresenceError> {
        let entries = self.shared.bucket.scan(keys::USER_PREFIX).await?;
        Ok(entries
            .iter()
            .filter_map(decode)
            .filter_map(|r| online(&r).cloned())
            .collect())
    }

    /// The users' keys followed from `after` (see [`Bucket::follow_after`]).
    pub(super) async fn follow_users(
        &self,
        after: u64,
    ) -> Result<store::TrackedStream, PresenceError> {
        Ok(self
            .shared
            .bucket
            .follow_after(after, keys::USER_PREFIX)
            .await?)
    }

    /// True when `gateway_id` holds its lease (it is alive).
    pub(super) async fn lease_held(&self, gateway_id: &str) -> Result<bool, PresenceError> {
        Ok(self
            .shared
            .leases
            .exists_on_leader(&keys::lease(gateway_id))
            .await?)
    }

    /// The gateways among `mentioned` whose lease has been gone for `confirm`
    /// (see [`LeaseView::dead_gateways`]).
    pub(super) async fn dead_gateways<'a>(
        &self,
        view: &mut LeaseView,
        mentioned: impl IntoIterator<Item = &'a str>,
        confirm: Duration,
    ) -> Result<Vec<DeadGateway>, PresenceError> {
        Ok(view
            .dead_gateways(&self.shared.leases, mentioned, confirm)
            .await?)
    }
}

/// A store on in-memory buckets, for the unit tests of every concern, and the
/// state under it (to plant leases).
#[cfg(test)]
pub(super) fn in_memory(max_sessions_per_user: usize) -> (PresenceStore, StateStore) {
    let state = StateStore::memory(store::BucketSettings::default());
    (PresenceStore::new(&state, max_sessions_per_user), state)
}
