//! Reading calls: one live call, all of them, their counts, and a follow of
//! every change from a position.

use meetup_platform::store::keys;
use meetup_proto::calls::v1::Call;

use super::shared::CallRegistry;
use crate::error::{CallError, require};

/// How many calls are live, and how many sessions are in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub active_calls: u32,
    pub participants: u32,
}

impl CallRegistry {
    pub async fn get(&self, call_id: &str) -> Result<Call, CallError> {
        require("call_id", call_id)?;
        self.read(call_id)
            .await?
            .and_then(|c| c.live().cloned())
            .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))
    }

    /// Follows the calls bucket's call keys from `after` (see
    /// [`meetup_platform::store::Bucket::follow_after`]).
    pub async fn follow_after(
        &self,
        after: u64,
    ) -> Result<meetup_platform::store::TrackedStream, CallError> {
        Ok(self.calls().follow_after(after, keys::CALL_PREFIX).await?)
    }

    /// Every live call, oldest first.
    pub async fn list(&self) -> Result<Vec<Call>, CallError> {
        let mut calls = self.live_calls().await?;
        calls.sort_by(|a, b| {
            let key = |c: &Call| c.created_at.map(|t| (t.seconds, t.nanos));
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(calls)
    }

    pub async fn counts(&self) -> Result<Counts, CallError> {
        self.lookup(|index| index.counts()).await
    }
}
