//! Gateways going: one leaving on purpose takes its sessions with it, and the
//! sweep finds the gateways whose lease is gone and removes their sessions
//! (or turns them away for the resume grace). Which gateways online users are
//! on, and which users are on one, this replica's index says.

use std::time::{Duration, SystemTime};

use meetup_platform::store::leases::LeaseView;
use meetup_proto::bus::v1::LeaveReason;
use meetup_proto::presence::v1::Session;

use super::PresenceStore;
use super::record::registered_before;
use crate::error::{PresenceError, require};

impl PresenceStore {
    /// Removes every session of one gateway registered before `cutoff` (all of
    /// them without one). Returns the sessions removed and the users that went
    /// offline. Idempotent: sessions already gone are skipped.
    pub async fn unregister_gateway(
        &self,
        gateway_id: &str,
        cutoff: Option<SystemTime>,
    ) -> Result<(u32, Vec<String>), PresenceError> {
        require("gateway_id", gateway_id)?;
        let doomed = self
            .sessions_on(gateway_id, |s| registered_before(s, cutoff))
            .await?;
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

    /// One sweep: removes the sessions of gateways whose lease has been gone for
    /// `confirm`. Returns how many sessions went.
    pub async fn sweep(
        &self,
        view: &mut LeaseView,
        confirm: Duration,
    ) -> Result<u32, PresenceError> {
        let mentioned = self.lookup(|index| index.gateways()).await?;
        let dead = self
            .dead_gateways(view, mentioned.iter().map(String::as_str), confirm)
            .await?;
        let grace = self.resume_grace();
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
            let doomed = self
                .sessions_on(&gateway.gateway_id, |s| {
                    s.away_until.is_none() && registered_before(s, Some(gateway.cutoff))
                })
                .await?;
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

    /// `(user id, session id)` of the sessions on `gateway_id` that `pick`
    /// selects, as the records of the users the index has on it say.
    async fn sessions_on(
        &self,
        gateway_id: &str,
        pick: impl Fn(&Session) -> bool,
    ) -> Result<Vec<(String, String)>, PresenceError> {
        let users = self.lookup(|index| index.users_on(gateway_id)).await?;
        self.sessions_now(users, |s| s.gateway_id == gateway_id && pick(s))
            .await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use meetup_platform::store::keys;

    use super::*;
    use crate::store::state::in_memory as store;

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
        let mut view = LeaseView::default();
        let removed = store.sweep(&mut view, Duration::ZERO).await.expect("sweep");
        assert_eq!(removed, 1);
        assert!(store.get("u1").await.is_ok());
        assert!(store.get("u2").await.is_err());
    }
}
