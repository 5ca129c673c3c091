//! Sessions away from their calls: turned away when their socket went (they
//! stay participants for a grace), resumed by a new socket, or taken out when
//! the grace ran out; and a session removed from all its calls.

use std::time::{Duration, SystemTime};

use meetup_proto::bus::v1::{
    CallRecord, LeaveReason, ParticipantAway, ParticipantResumed, call_change,
};
use meetup_proto::calls::v1::Participant;

use super::invites;
use super::shared::{CallRegistry, Current, Decision, change};
use crate::error::{CallError, require};

impl CallRegistry {
    /// Removes a session from every call it is in (its socket went away).
    /// `call_ids` are the calls the caller knows it is in; without them every
    /// live call is looked at. Returns the calls it left and the last revision.
    pub async fn remove_session(
        &self,
        session_id: &str,
        call_ids: Vec<String>,
        traceparent: &str,
    ) -> Result<(Vec<String>, u64), CallError> {
        self.remove_session_if(session_id, call_ids, false, traceparent)
            .await
    }

    /// [`CallRegistry::remove_session`]; with `keep_away`, the session stays
    /// in the calls where it is away (handed over for a resume).
    pub async fn remove_session_if(
        &self,
        session_id: &str,
        call_ids: Vec<String>,
        keep_away: bool,
        traceparent: &str,
    ) -> Result<(Vec<String>, u64), CallError> {
        require("session_id", session_id)?;
        let call_ids = self.calls_of(session_id, call_ids).await?;
        let mut left_calls = Vec::new();
        let mut last = 0;
        for call_id in call_ids {
            let left = self
                .remove_sessions(
                    &call_id,
                    |p| p.session_id == session_id && !(keep_away && p.away_until.is_some()),
                    LeaveReason::Disconnected,
                    traceparent,
                )
                .await?;
            if left.left {
                last = last.max(left.revision);
                left_calls.push(call_id);
            }
        }
        Ok((left_calls, last))
    }

    /// Changes the participants `pick` selects in one call with `update`, as one
    /// change described by `describe` (given the first one changed). Returns
    /// the revision written, 0 when none was picked.
    pub(super) async fn update_participants(
        &self,
        call_id: &str,
        pick: impl Fn(&Participant) -> bool,
        update: impl Fn(&mut Participant),
        describe: impl Fn(&Participant, &Participant) -> call_change::Change,
        traceparent: &str,
    ) -> Result<u64, CallError> {
        let ((), revision) = self
            .modify(call_id, |current| {
                let Some(live) = current.and_then(Current::live) else {
                    return Ok(Decision::Keep(()));
                };
                let mut call = live.clone();
                let mut first = None;
                for p in call.participants.iter_mut().filter(|p| pick(p)) {
                    let before = p.clone();
                    update(p);
                    first.get_or_insert((before, p.clone()));
                }
                let Some((before, after)) = first else {
                    return Ok(Decision::Keep(()));
                };
                call.version += 1;
                let record = CallRecord {
                    call: Some(call),
                    change: change(describe(&before, &after)),
                    traceparent: traceparent.to_owned(),
                };
                Ok(Decision::Write(Box::new(record), ()))
            })
            .await?;
        Ok(revision)
    }

    /// [`CallRegistry::update_participants`] in each of `calls`. Returns the
    /// calls that changed and the last revision written.
    async fn update_in_calls(
        &self,
        calls: Vec<String>,
        pick: impl Fn(&Participant) -> bool,
        update: impl Fn(&mut Participant),
        describe: impl Fn(&Participant, &Participant) -> call_change::Change,
        traceparent: &str,
    ) -> Result<(Vec<String>, u64), CallError> {
        let mut changed = Vec::new();
        let mut last = 0;
        for call_id in calls {
            let revision = self
                .update_participants(&call_id, &pick, &update, &describe, traceparent)
                .await?;
            if revision > 0 {
                last = last.max(revision);
                changed.push(call_id);
            }
        }
        Ok((changed, last))
    }

    /// The live calls `session_id` is in, or `call_ids` when the caller knows them.
    async fn calls_of(
        &self,
        session_id: &str,
        call_ids: Vec<String>,
    ) -> Result<Vec<String>, CallError> {
        if !call_ids.is_empty() {
            return Ok(call_ids);
        }
        // Each is read again by the change that picks the session in it.
        self.lookup(|index| index.calls_of_session(session_id))
            .await
    }

    /// Turns a session away in its calls until `grace` from now: it stays a
    /// participant (its peers hear `user-reconnecting`) until a sweep takes it
    /// out, unless a new socket resumed it first. Returns the calls and the
    /// last revision.
    pub async fn set_away(
        &self,
        session_id: &str,
        call_ids: Vec<String>,
        grace: Duration,
        traceparent: &str,
    ) -> Result<(Vec<String>, u64), CallError> {
        require("session_id", session_id)?;
        let until: prost_types::Timestamp = (SystemTime::now() + grace).into();
        let calls = self.calls_of(session_id, call_ids).await?;
        let (changed, last) = self
            .update_in_calls(
                calls,
                |p| p.session_id == session_id && p.away_until.is_none(),
                |p| p.away_until = Some(until),
                |_, after| {
                    call_change::Change::Away(ParticipantAway {
                        participant: Some(after.clone()),
                    })
                },
                traceparent,
            )
            .await?;
        if !changed.is_empty() {
            tracing::info!(session_id, calls = changed.len(), "participant away");
        }
        Ok((changed, last))
    }

    /// Hands `previous_session_id` over to `session_id` on `gateway_id` in all
    /// its calls (no longer away). Returns the calls and the last revision.
    pub async fn resume(
        &self,
        previous_session_id: &str,
        session_id: &str,
        gateway_id: &str,
        call_ids: Vec<String>,
        traceparent: &str,
    ) -> Result<(Vec<String>, u64), CallError> {
        require("previous_session_id", previous_session_id)?;
        require("session_id", session_id)?;
        require("gateway_id", gateway_id)?;
        let calls = self.calls_of(previous_session_id, call_ids).await?;
        let (changed, last) = self
            .update_in_calls(
                calls,
                |p| p.session_id == previous_session_id,
                |p| {
                    p.session_id = session_id.to_owned();
                    p.gateway_id = gateway_id.to_owned();
                    p.away_until = None;
                },
                |before, after| {
                    call_change::Change::Resumed(ParticipantResumed {
                        previous_session_id: before.session_id.clone(),
                        participant: Some(after.clone()),
                    })
                },
                traceparent,
            )
            .await?;
        if !changed.is_empty() {
            tracing::info!(
                previous_session_id,
                session_id,
                calls = changed.len(),
                "participant resumed"
            );
        }
        Ok((changed, last))
    }

    /// Takes out of their calls the away sessions whose time ran out, and
    /// ends as missed the invitations that rang too long. Returns how many
    /// sessions went.
    pub async fn expire_away(&self) -> Result<u32, CallError> {
        let now = SystemTime::now();
        let expired = |p: &Participant| {
            p.away_until
                .and_then(|t| SystemTime::try_from(t).ok())
                .is_some_and(|t| t <= now)
        };
        let mut removed = 0;
        for call_id in self.lookup(|index| index.expiring(now)).await? {
            // The index may be behind: the record says what is due.
            let Some(call) = self.read(&call_id).await?.and_then(|c| c.live().cloned()) else {
                continue;
            };
            if invites::rings_out(&call, now) {
                self.expire_rings(&call.id, now).await?;
            }
            removed += self.disconnect_picked(&call, expired).await?.0;
        }
        if removed > 0 {
            tracing::info!(sessions = removed, "away participants expired");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::CallLimits;
    use crate::registry::testing::{p, registry};

    #[tokio::test]
    async fn a_disconnected_session_leaves_all_its_calls() {
        let (r, _state) = registry(CallLimits::default());
        r.start("c1", p("a", "sa"), false, vec![], "")
            .await
            .expect("start");
        r.start("c2", p("b", "sb"), false, vec![], "")
            .await
            .expect("start");
        r.join("c2", p("a", "sa"), "").await.expect("join");
        let (left, revision) = r.remove_session("sa", vec![], "").await.expect("remove");
        assert_eq!(left.len(), 2);
        assert!(revision > 0);
        assert!(r.get("c1").await.is_err(), "emptied call ended");
        assert_eq!(r.get("c2").await.expect("live").participants.len(), 1);
    }

    #[tokio::test]
    async fn an_away_session_stays_in_its_calls_until_resumed_or_expired() {
        let (r, _state) = registry(CallLimits::default());
        r.start("c1", p("a", "sa"), false, vec![], "")
            .await
            .expect("start");
        r.join("c1", p("b", "sb"), "").await.expect("join");
        let (calls, revision) = r
            .set_away("sb", vec![], Duration::from_millis(50), "")
            .await
            .expect("away");
        assert_eq!((calls.len(), revision > 0), (1, true));
        // Turned away again: nothing changes.
        let (calls, _) = r
            .set_away("sb", vec![], Duration::from_millis(50), "")
            .await
            .expect("away");
        assert!(calls.is_empty());
        let call = r.get("c1").await.expect("live");
        assert!(call.participants[1].away_until.is_some());
        let (calls, _) = r
            .resume("sb", "sb2", "gw2", vec![], "")
            .await
            .expect("resume");
        assert_eq!(calls, ["c1"]);
        let call = r.get("c1").await.expect("live");
        let b = &call.participants[1];
        assert_eq!(
            (b.session_id.as_str(), b.gateway_id.as_str()),
            ("sb2", "gw2")
        );
        assert!(b.away_until.is_none());
        assert_eq!(r.expire_away().await.expect("expire"), 0);
        r.set_away("sb2", vec![], Duration::from_millis(20), "")
            .await
            .expect("away");
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(r.expire_away().await.expect("expire"), 1);
        assert_eq!(r.get("c1").await.expect("live").participants.len(), 1);
    }
}
