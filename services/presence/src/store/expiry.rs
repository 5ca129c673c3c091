//! Away sessions whose time ran out go: this replica's index names the users
//! who have one ([`PresenceStore::due_away`]), and each user's record, read
//! again, says which sessions.

use std::time::{Duration, SystemTime};

use meetup_proto::bus::v1::LeaveReason;

use super::PresenceStore;
use super::record::away_until;
use crate::error::PresenceError;

impl PresenceStore {
    /// Removes the away sessions whose time ran out at least `margin` ago (the
    /// call service removes them from their calls one sweep earlier, so peers
    /// hear `user-left-call` before `user-left`). Returns how many went.
    pub async fn expire_away(&self, margin: Duration) -> Result<u32, PresenceError> {
        let deadline = SystemTime::now() - margin;
        let mut removed = 0;
        for (user_id, session_id) in self.due_away(deadline).await? {
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

    /// `(user id, session id)` of the away sessions whose time ran out by
    /// `deadline`: the index names the users, and their records, read again,
    /// the sessions (one resumed meanwhile has a new id, or is no longer away).
    async fn due_away(&self, deadline: SystemTime) -> Result<Vec<(String, String)>, PresenceError> {
        let users = self.lookup(|index| index.away_by(deadline)).await?;
        self.sessions_now(users, |s| away_until(s).is_some_and(|t| t <= deadline))
            .await
    }
}
