//! The sweep: the sessions of gateways whose lease is gone leave their calls
//! (or turn away, when they may resume elsewhere), and the records of calls
//! ended long ago are deleted.

use std::time::{Duration, SystemTime};

use meetup_platform::store::keys;
use meetup_platform::store::leases::LeaseView;
use meetup_proto::bus::v1::{ParticipantAway, call_change};
use meetup_proto::calls::v1::Participant;

use super::shared::CallRegistry;
use crate::error::{CallError, require};

/// How long an ended call's record stays in the bucket.
pub const ENDED_RETENTION: Duration = Duration::from_secs(600);

impl CallRegistry {
    /// Removes every session of one gateway that joined before `cutoff` (all
    /// without one) from every call.
    pub async fn remove_gateway(
        &self,
        gateway_id: &str,
        cutoff: Option<SystemTime>,
    ) -> Result<(u32, u64), CallError> {
        require("gateway_id", gateway_id)?;
        let doomed = |p: &Participant| {
            p.gateway_id == gateway_id
                && cutoff.is_none_or(|cutoff| {
                    p.joined_at
                        .and_then(|t| SystemTime::try_from(t).ok())
                        .is_none_or(|t| t < cutoff)
                })
        };
        let mut removed = 0;
        let mut last = 0;
        let on_gateway = self
            .lookup(|index| index.calls_on_gateway(gateway_id))
            .await?;
        for call_id in on_gateway {
            // The index may be behind: the record says who is in the call.
            let Some(call) = self.read(&call_id).await?.and_then(|c| c.live().cloned()) else {
                continue;
            };
            let (count, revision) = self.disconnect_picked(&call, doomed).await?;
            removed += count;
            last = last.max(revision);
        }
        Ok((removed, last))
    }

    /// One sweep: takes the sessions of gateways whose lease is gone out of their
    /// calls, and deletes the records of calls ended longer than `retention` ago.
    pub async fn sweep(&self, view: &mut LeaseView, retention: Duration) -> Result<u32, CallError> {
        let expired = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (mentioned, ended, orphan_chats) = self
            .lookup(|index| {
                (
                    index.gateways(),
                    index.ended_before(expired),
                    index.orphan_chats(),
                )
            })
            .await?;
        let dead = view
            .dead_gateways(
                self.leases(),
                mentioned.iter().map(String::as_str),
                Duration::ZERO,
            )
            .await?;
        let mut removed = 0;
        let grace = self.limits().resume_grace;
        for gateway in dead {
            if grace.is_zero() {
                let (count, _) = self
                    .remove_gateway(&gateway.gateway_id, Some(gateway.cutoff))
                    .await?;
                if count > 0 {
                    tracing::warn!(gateway_id = %gateway.gateway_id, sessions = count, "gateway lease gone; its sessions left their calls");
                }
                removed += count;
                continue;
            }
            // Its clients may come back through another gateway: their sessions
            // turn away, and leave only if nobody resumes them in time.
            let until: prost_types::Timestamp = (SystemTime::now() + grace).into();
            let cutoff = gateway.cutoff;
            let doomed = |p: &Participant| {
                p.gateway_id == gateway.gateway_id
                    && p.away_until.is_none()
                    && p.joined_at
                        .and_then(|t| SystemTime::try_from(t).ok())
                        .is_none_or(|t| t < cutoff)
            };
            let mut count = 0;
            let on_gateway = self
                .lookup(|index| index.calls_on_gateway(&gateway.gateway_id))
                .await?;
            for call_id in on_gateway {
                // The index may be behind: the change picks from the record.
                count += self
                    .update_participants(
                        &call_id,
                        doomed,
                        |p| p.away_until = Some(until),
                        |_, after| {
                            call_change::Change::Away(ParticipantAway {
                                participant: Some(after.clone()),
                            })
                        },
                        "",
                    )
                    .await
                    .map(|revision| u32::from(revision > 0))?;
            }
            if count > 0 {
                tracing::warn!(gateway_id = %gateway.gateway_id, calls = count, "gateway lease gone; its sessions are away in their calls");
            }
        }
        self.sweep_chats(orphan_chats).await?;
        for call_id in ended {
            // The index may be behind: the record says when the call ended.
            let Some(current) = self.read(&call_id).await? else {
                continue;
            };
            let ended = current
                .record
                .call
                .as_ref()
                .and_then(|c| c.ended_at)
                .and_then(|t| SystemTime::try_from(t).ok());
            if ended.is_some_and(|ended| ended < expired) {
                // A conflict means the id was reused meanwhile: keep it.
                let _ = self
                    .calls()
                    .delete(&keys::call(&call_id), current.revision)
                    .await;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use meetup_platform::store::keys;

    use super::*;
    use crate::registry::testing::registry;
    use crate::registry::{CallLimits, participant};

    #[tokio::test]
    async fn a_sweep_takes_dead_gateways_out_and_old_records_away() {
        let (r, state) = registry(CallLimits::default());
        state
            .gateways
            .put(&keys::lease("alive"), Bytes::from_static(b"x"))
            .await
            .expect("lease");
        r.start(
            "c1",
            participant("a", "A", "sa", "alive"),
            false,
            vec![],
            "",
        )
        .await
        .expect("start");
        r.join("c1", participant("b", "B", "sb", "dead"), "")
            .await
            .expect("join");
        r.start("c2", participant("b", "B", "sb", "dead"), false, vec![], "")
            .await
            .expect("start");
        let mut view = LeaseView::default();
        let removed = r.sweep(&mut view, Duration::ZERO).await.expect("sweep");
        assert_eq!(removed, 2);
        assert_eq!(r.get("c1").await.expect("live").participants.len(), 1);
        assert!(r.get("c2").await.is_err());
        // Ended with no retention: its record goes on the next sweep.
        r.sweep(&mut view, Duration::ZERO).await.expect("sweep");
        assert!(
            state
                .calls
                .get(&keys::call("c2"))
                .await
                .expect("get")
                .is_none()
        );
    }
}
