//! The live calls each user started, one key per user in the call index
//! bucket: what holds `CallLimits::max_calls_per_user` across replicas.

use std::time::{Duration, SystemTime};

use meetup_platform::store::{self, Change, Versioned, keys};
use meetup_proto::bus::v1::{StartedCall, StartedCalls};

use super::shared::{CallRegistry, now};
use crate::error::CallError;

/// How long a reservation in a user's started calls waits for its call to be
/// written before it counts as abandoned.
const RESERVATION_TTL: Duration = Duration::from_secs(10);

impl CallRegistry {
    /// Adds `call_id` to the live calls `user` started, unless they already have
    /// the most allowed. Ids whose call is over are dropped; so are reservations
    /// whose call never came (its writer died in between) after [`RESERVATION_TTL`].
    pub(super) async fn reserve(&self, user: &str, call_id: &str) -> Result<bool, CallError> {
        let key = keys::started_calls(user);
        let max = self.limits().max_calls_per_user;
        let (reserved, _) = self
            .started_calls()
            .modify(&key, |read: Option<Versioned<StartedCalls>>| async move {
                let mut started = read.map(|r| r.value).unwrap_or_default();
                if started.calls.iter().any(|c| c.call_id == call_id) {
                    return Ok(Change::Keep(false));
                }
                if started.calls.len() >= max {
                    let mut kept = Vec::new();
                    for reserved in std::mem::take(&mut started.calls) {
                        let keep = match self.read(&reserved.call_id).await? {
                            Some(current) => current.live().is_some(),
                            None => reserved
                                .reserved_at
                                .and_then(|t| SystemTime::try_from(t).ok())
                                .and_then(|t| t.elapsed().ok())
                                .is_none_or(|age| age < RESERVATION_TTL),
                        };
                        if keep {
                            kept.push(reserved);
                        }
                    }
                    started.calls = kept;
                }
                if started.calls.len() >= max {
                    return Err(CallError::TooManyCalls {
                        user_id: user.to_owned(),
                        max,
                    });
                }
                started.calls.push(StartedCall {
                    call_id: call_id.to_owned(),
                    reserved_at: Some(now()),
                });
                Ok(Change::Put(started, true))
            })
            .await?;
        Ok(reserved)
    }

    /// Takes `call_id` out of the live calls `user` started (best effort: a
    /// leftover id is dropped by the next [`CallRegistry::reserve`] that needs room).
    pub(super) async fn release(&self, user: &str, call_id: &str) {
        let key = keys::started_calls(user);
        let released = self
            .started_calls()
            .modify(&key, |read: Option<Versioned<StartedCalls>>| async move {
                let Some(mut started) = read.map(|r| r.value) else {
                    return Ok::<_, store::StoreError>(Change::Keep(()));
                };
                let before = started.calls.len();
                started.calls.retain(|c| c.call_id != call_id);
                Ok(if started.calls.len() == before {
                    Change::Keep(())
                } else if started.calls.is_empty() {
                    Change::Delete(())
                } else {
                    Change::Put(started, ())
                })
            })
            .await;
        if let Err(error) = released {
            tracing::warn!(user_id = user, call_id, %error, "call not released from the index");
        }
    }
}
