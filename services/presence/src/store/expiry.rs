//! Away sessions whose time ran out go. Finding which are due is one function,
//! [`PresenceStore::due_away`]: a scan of the whole bucket today, so that an
//! index of due times can take its place without the rest changing.

use std::time::{Duration, SystemTime};

use meetup_proto::bus::v1::LeaveReason;

use super::PresenceStore;
use super::record::{away_until, sessions_where};
use crate::error::PresenceError;

impl PresenceStore {
    /// Removes the away sessions whose time ran out at least `margin` ago (the
    /// call service removes them from their calls one sweep earlier, so peers
    /// hear `user-left-call` before `user-left`). Returns how many went.
    pub async fn expire_away(&self, margin: Duration) -> Result<u32, PresenceError> {
        let deadline = SystemTime::now() - margin;
        let mut removed = 0;
        for (user_id, session_id) in self.due_away(deadline).await? {
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

    /// `(user id, session id)` of the away sessions whose time ran out by
    /// `deadline`, as the bucket's whole scan shows them (each is checked
    /// again before it goes).
    async fn due_away(&self, deadline: SystemTime) -> Result<Vec<(String, String)>, PresenceError> {
        Ok(sessions_where(&self.all().await?, |s| {
            away_until(s).is_some_and(|t| t <= deadline)
        }))
    }
}
