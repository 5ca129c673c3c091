//! Reading who is online: one user, everyone in the order they came online,
//! and the counts behind the gauges.

use meetup_proto::presence::v1::OnlineUser;

use super::PresenceStore;
use super::record::online;
use crate::error::{PresenceError, require};

/// How many users, sessions and gateways are online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub online_users: u32,
    pub sessions: u32,
    pub gateways: u32,
}

impl PresenceStore {
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

    /// As this replica's index counts them.
    pub async fn counts(&self) -> Result<Counts, PresenceError> {
        self.lookup(|index| index.counts()).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::state::in_memory as store;

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
}
