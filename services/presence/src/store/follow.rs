//! Following the presence bucket: the users' keys from a position on.

use meetup_runtime::store::TrackedStream;

use super::PresenceStore;
use crate::error::PresenceError;

impl PresenceStore {
    /// Follows the users' keys from `after` (see
    /// [`meetup_runtime::store::Bucket::follow_after`]).
    pub async fn follow_after(&self, after: u64) -> Result<TrackedStream, PresenceError> {
        self.follow_users(after).await
    }
}
