//! Invitations: each invitee of a call is an attendee whose outcome, while the
//! call is live, is the invitation's state (ringing, then answered, declined,
//! cancelled or missed). Ringing, declining, cancelling and the ring timeout are
//! compare-and-set changes of the call's record like every other, so every
//! replica and gateway sees one order of them.

use std::collections::HashSet;
use std::time::SystemTime;

use meetup_platform::store::keys;
use meetup_proto::bus::v1::{CallRecord, InvitesEnded, UserRecord, UsersInvited, call_change};
use meetup_proto::calls::v1::{Attendee, Call, CallUser, Invite, InviteState, Outcome};
use prost::Message;

use super::shared::{CallRegistry, Current, Decision, change, now, user_id};
use crate::error::{CallError, MAX_INVITED, require};

/// Most invitations one call records.
pub const MAX_INVITATIONS: usize = 256;

/// Who invitations come from when an internal service rings users without
/// naming anyone.
pub fn system_user() -> CallUser {
    CallUser {
        id: "system".to_owned(),
        username: "MeetUp".to_owned(),
    }
}

/// What an invitation into a running call did.
#[derive(Debug, Default)]
pub struct Invited {
    /// The invitees ringing now (newly, or still from before).
    pub ringing: Vec<String>,
    /// Of those, the ones in another live call.
    pub busy: Vec<String>,
    /// The invitees with no session at all: missed at once.
    pub unavailable: Vec<String>,
    pub call: Option<Call>,
    pub revision: u64,
}

fn is(a: &Attendee, outcome: Outcome) -> bool {
    a.outcome == outcome as i32
}

fn attendee_id(a: &Attendee) -> &str {
    a.user.as_ref().map(|u| u.id.as_str()).unwrap_or_default()
}

/// The user who rang this attendee, if a user did.
pub(super) fn invited_by(a: &Attendee) -> Option<&str> {
    a.invited_by.as_ref().map(|u| u.id.as_str())
}

/// Ends with `outcome` every invitation still ringing that `pick` selects.
/// Returns the users whose invitation ended.
pub(super) fn end_ringing(
    call: &mut Call,
    pick: impl Fn(&Attendee) -> bool,
    outcome: Outcome,
) -> Vec<String> {
    let mut ended = Vec::new();
    for a in call
        .attendees
        .iter_mut()
        .filter(|a| is(a, Outcome::Ringing) && pick(a))
    {
        a.outcome = outcome as i32;
        a.ring_until = None;
        ended.push(attendee_id(a).to_owned());
    }
    ended
}

/// True when an invitation of `call` rang past its time at `now`.
pub(super) fn rings_out(call: &Call, now: SystemTime) -> bool {
    call.attendees.iter().any(|a| rang_out(a, now))
}

fn rang_out(a: &Attendee, now: SystemTime) -> bool {
    is(a, Outcome::Ringing)
        && a.ring_until
            .and_then(|t| SystemTime::try_from(t).ok())
            .is_some_and(|t| t <= now)
}

fn state_of(a: &Attendee) -> InviteState {
    match Outcome::try_from(a.outcome).unwrap_or(Outcome::Unspecified) {
        Outcome::Ringing => InviteState::Ringing,
        Outcome::Answered => InviteState::Accepted,
        Outcome::Declined => InviteState::Declined,
        Outcome::Cancelled => InviteState::Cancelled,
        Outcome::Missed | Outcome::Busy => InviteState::Missed,
        Outcome::Unspecified => InviteState::Unspecified,
    }
}

/// The invitations of a call (its attendees that were invited), in order.
pub fn invites_of(call: &Call) -> Vec<Invite> {
    call.attendees
        .iter()
        .filter(|a| a.invited_at.is_some())
        .map(|a| Invite {
            user: a.user.clone(),
            invited_by: a.invited_by.clone(),
            invited_at: a.invited_at,
            ring_until: a.ring_until,
            state: state_of(a) as i32,
        })
        .collect()
}

/// The invitees of a just-started call who were offline: missed at once.
pub fn unavailable_at_start(call: &Call) -> Vec<String> {
    call.attendees
        .iter()
        .filter(|a| a.invited_at.is_some() && is(a, Outcome::Missed))
        .map(|a| attendee_id(a).to_owned())
        .collect()
}

/// Checks the user ids of an invitation: 1 to [`MAX_INVITED`], each a valid id.
fn checked_ids(user_ids: Vec<String>) -> Result<Vec<String>, CallError> {
    if user_ids.is_empty() || user_ids.len() > MAX_INVITED {
        return Err(CallError::InvalidArgument(format!(
            "user_ids must list 1 to {MAX_INVITED} users"
        )));
    }
    let mut unique = Vec::with_capacity(user_ids.len());
    for id in user_ids {
        require("user_ids[]", &id)?;
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    Ok(unique)
}

impl CallRegistry {
    /// Makes `a` a ringing invitation of `user` by `by` at `at` (missed at
    /// once when the user is `offline`).
    pub(super) fn ring(
        &self,
        a: &mut Attendee,
        user: &str,
        by: Option<CallUser>,
        offline: bool,
        at: prost_types::Timestamp,
    ) {
        if a.user.is_none() {
            a.user = Some(CallUser {
                id: user.to_owned(),
                username: String::new(),
            });
        }
        a.invited_by = by;
        a.invited_at = Some(at);
        if offline {
            a.outcome = Outcome::Missed as i32;
            a.ring_until = None;
        } else {
            a.outcome = Outcome::Ringing as i32;
            let at = SystemTime::try_from(at).unwrap_or_else(|_| SystemTime::now());
            a.ring_until = Some((at + self.limits().ring_timeout).into());
        }
    }

    /// The users among `user_ids` who have no session at all (away ones count
    /// as online: they may come back).
    pub(super) async fn offline_among(
        &self,
        user_ids: &[String],
    ) -> Result<HashSet<String>, CallError> {
        let reads = user_ids.iter().map(|id| async move {
            let entry = self.presence().get(&keys::user(id)).await?;
            let online = entry
                .and_then(|e| e.value)
                .and_then(|v| UserRecord::decode(v).ok())
                .and_then(|r| r.user)
                .is_some_and(|u| !u.sessions.is_empty());
            Ok::<_, CallError>((id, online))
        });
        let mut offline = HashSet::new();
        for read in futures::future::join_all(reads).await {
            let (id, online) = read?;
            if !online {
                offline.insert(id.clone());
            }
        }
        Ok(offline)
    }

    /// The users among `user_ids` taking part in a live call other than `call_id`.
    async fn busy_among(
        &self,
        user_ids: &[String],
        call_id: &str,
    ) -> Result<HashSet<String>, CallError> {
        let mut busy = HashSet::new();
        let elsewhere = self
            .lookup(|index| index.calls_of_users(user_ids, call_id))
            .await?;
        for other in elsewhere {
            // The index may be behind: the record says who is in the call.
            let Some(call) = self.read(&other).await?.and_then(|c| c.live().cloned()) else {
                continue;
            };
            for p in &call.participants {
                let id = user_id(p);
                if user_ids.iter().any(|u| u == id) {
                    busy.insert(id.to_owned());
                }
            }
        }
        Ok(busy)
    }

    /// Rings `user_ids` into the live call `call_id`. `session_id`, when not
    /// empty, must be a participant's: the invitations are its user's. Else
    /// they come from `by` (the system when absent).
    pub async fn invite(
        &self,
        call_id: &str,
        user_ids: Vec<String>,
        session_id: &str,
        by: Option<CallUser>,
        traceparent: &str,
    ) -> Result<Invited, CallError> {
        require("call_id", call_id)?;
        let user_ids = checked_ids(user_ids)?;
        let by = match by {
            Some(user) => {
                require("as.id", &user.id)?;
                require("as.username", &user.username)?;
                Some(user)
            }
            None => Some(system_user()),
        };
        let offline = self.offline_among(&user_ids).await?;
        let busy = self.busy_among(&user_ids, call_id).await?;
        let (mut invited, revision) = self
            .modify(call_id, |current| {
                let mut call = current
                    .and_then(Current::live)
                    .cloned()
                    .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
                let inviter = if session_id.is_empty() {
                    by.clone()
                } else {
                    let p = call
                        .participants
                        .iter()
                        .find(|p| p.session_id == session_id)
                        .ok_or_else(|| CallError::NotParticipant {
                            call_id: call_id.to_owned(),
                            user_id: session_id.to_owned(),
                        })?;
                    p.user.clone()
                };
                let at = now();
                let mut rung = Vec::new();
                let mut result = Invited::default();
                for id in &user_ids {
                    if call.participants.iter().any(|p| user_id(p) == id) {
                        continue;
                    }
                    let index = match call.attendees.iter().position(|a| attendee_id(a) == id) {
                        Some(index) => index,
                        None => {
                            let invitations = call
                                .attendees
                                .iter()
                                .filter(|a| a.invited_at.is_some())
                                .count();
                            if invitations >= MAX_INVITATIONS {
                                return Err(CallError::InvalidArgument(format!(
                                    "a call records at most {MAX_INVITATIONS} invitations"
                                )));
                            }
                            call.attendees.push(Attendee::default());
                            call.attendees.len() - 1
                        }
                    };
                    let attendee = &mut call.attendees[index];
                    if is(attendee, Outcome::Ringing) {
                        result.ringing.push(id.clone());
                        continue;
                    }
                    let unavailable = offline.contains(id);
                    self.ring(attendee, id, inviter.clone(), unavailable, at);
                    if unavailable {
                        result.unavailable.push(id.clone());
                    } else {
                        result.ringing.push(id.clone());
                    }
                    if !call.invited_user_ids.contains(id) {
                        call.invited_user_ids.push(id.clone());
                    }
                    rung.push(id.clone());
                }
                result.busy = result
                    .ringing
                    .iter()
                    .filter(|id| busy.contains(*id))
                    .cloned()
                    .collect();
                if rung.is_empty() {
                    result.call = Some(call);
                    return Ok(Decision::Keep(result));
                }
                call.version += 1;
                let record = CallRecord {
                    call: Some(call.clone()),
                    change: change(call_change::Change::Invited(UsersInvited {
                        user_ids: rung,
                        by: inviter,
                    })),
                    traceparent: traceparent.to_owned(),
                };
                result.call = Some(call);
                Ok(Decision::Write(Box::new(record), result))
            })
            .await?;
        invited.revision = revision;
        if revision > 0 {
            tracing::info!(
                call_id,
                ringing = invited.ringing.len(),
                unavailable = invited.unavailable.len(),
                "users invited"
            );
        }
        Ok(invited)
    }

    /// Ends the invitations of `call_id` that `pick` selects with `outcome`,
    /// as one change. `check` sees the live call first (and may refuse).
    /// Returns the users whose invitation ended, the call and the revision.
    async fn end_invites(
        &self,
        call_id: &str,
        check: impl Fn(&Call) -> Result<(), CallError>,
        pick: impl Fn(&Call, &Attendee) -> bool,
        outcome: Outcome,
        traceparent: &str,
    ) -> Result<(Vec<String>, Call, u64), CallError> {
        let ((ended, call), revision) = self
            .modify(call_id, |current| {
                let mut call = current
                    .and_then(Current::live)
                    .cloned()
                    .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
                check(&call)?;
                let snapshot = call.clone();
                let ended = end_ringing(&mut call, |a| pick(&snapshot, a), outcome);
                if ended.is_empty() {
                    return Ok(Decision::Keep((ended, call)));
                }
                call.version += 1;
                let record = CallRecord {
                    call: Some(call.clone()),
                    change: change(call_change::Change::InvitesEnded(InvitesEnded {
                        user_ids: ended.clone(),
                        outcome: outcome as i32,
                    })),
                    traceparent: traceparent.to_owned(),
                };
                Ok(Decision::Write(Box::new(record), (ended, call)))
            })
            .await?;
        Ok((ended, call, revision))
    }

    /// `user` declines their ringing invitation to `call_id`.
    pub async fn decline(
        &self,
        call_id: &str,
        user: &str,
        traceparent: &str,
    ) -> Result<(Call, u64), CallError> {
        require("call_id", call_id)?;
        require("user_id", user)?;
        let (ended, call, revision) = self
            .end_invites(
                call_id,
                |call| {
                    let ringing = call
                        .attendees
                        .iter()
                        .any(|a| attendee_id(a) == user && is(a, Outcome::Ringing));
                    if ringing {
                        Ok(())
                    } else {
                        Err(CallError::NotInvited {
                            call_id: call_id.to_owned(),
                            user_id: user.to_owned(),
                        })
                    }
                },
                |_, a| attendee_id(a) == user,
                Outcome::Declined,
                traceparent,
            )
            .await?;
        if !ended.is_empty() {
            tracing::info!(call_id, user_id = user, "invitation declined");
        }
        Ok((call, revision))
    }

    /// Cancels the ringing invitations of `call_id`: those the user of
    /// `session_id` made (it must be a participant), else those `by_user`
    /// made, else all. Returns who stopped ringing and the revision.
    pub async fn cancel(
        &self,
        call_id: &str,
        session_id: &str,
        by_user: &str,
        traceparent: &str,
    ) -> Result<(Vec<String>, u64), CallError> {
        require("call_id", call_id)?;
        let inviter = |call: &Call| -> Result<Option<String>, CallError> {
            if session_id.is_empty() {
                return Ok((!by_user.is_empty()).then(|| by_user.to_owned()));
            }
            call.participants
                .iter()
                .find(|p| p.session_id == session_id)
                .map(|p| Some(user_id(p).to_owned()))
                .ok_or_else(|| CallError::NotParticipant {
                    call_id: call_id.to_owned(),
                    user_id: session_id.to_owned(),
                })
        };
        let (ended, _, revision) = self
            .end_invites(
                call_id,
                |call| inviter(call).map(|_| ()),
                |call, a| match inviter(call) {
                    Ok(Some(user)) => invited_by(a) == Some(user.as_str()),
                    Ok(None) => true,
                    Err(_) => false,
                },
                Outcome::Cancelled,
                traceparent,
            )
            .await?;
        if !ended.is_empty() {
            tracing::info!(call_id, invitations = ended.len(), "invitations cancelled");
        }
        Ok((ended, revision))
    }

    /// Ends as missed the invitations of `call_id` that rang past their time.
    pub(super) async fn expire_rings(
        &self,
        call_id: &str,
        now: SystemTime,
    ) -> Result<Vec<String>, CallError> {
        let ended = match self
            .end_invites(
                call_id,
                |_| Ok(()),
                |_, a| rang_out(a, now),
                Outcome::Missed,
                "",
            )
            .await
        {
            Ok((ended, _, _)) => ended,
            // It ended meanwhile, and its invitations with it.
            Err(CallError::CallNotFound(_)) => Vec::new(),
            Err(error) => return Err(error),
        };
        if !ended.is_empty() {
            tracing::info!(call_id, invitations = ended.len(), "invitations unanswered");
        }
        Ok(ended)
    }

    /// The invitations of a live call.
    pub async fn invites(&self, call_id: &str) -> Result<Vec<Invite>, CallError> {
        Ok(invites_of(&self.get(call_id).await?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::CallLimits;
    use crate::registry::testing::{online, outcome_of, p, registry};

    #[tokio::test]
    async fn invitations_ring_until_answered_declined_cancelled_or_missed() {
        use meetup_proto::calls::v1::InviteState;
        let limits = CallLimits {
            ring_timeout: Duration::from_millis(200),
            ..CallLimits::default()
        };
        let (r, state) = registry(limits);
        online(&state, &["b", "c", "d", "e"]).await;
        let (call, _) = r
            .start(
                "c1",
                p("a", "sa"),
                false,
                vec!["b".into(), "c".into(), "z".into()],
                "",
            )
            .await
            .expect("start");
        assert_eq!(
            outcome_of(&call, "z"),
            Outcome::Missed,
            "offline: missed at once"
        );
        assert_eq!(unavailable_at_start(&call), ["z"]);
        // b declines; declining twice is refused.
        let (call, _) = r.decline("c1", "b", "").await.expect("decline");
        assert_eq!(outcome_of(&call, "b"), Outcome::Declined);
        assert!(matches!(
            r.decline("c1", "b", "").await,
            Err(CallError::NotInvited { .. })
        ));
        // A participant rings d and e into the running call; a stranger cannot.
        r.join("c1", p("d", "sd"), "").await.expect("d walks in");
        assert!(matches!(
            r.invite("c1", vec!["e".into()], "nobody", None, "").await,
            Err(CallError::NotParticipant { .. })
        ));
        let invited = r
            .invite(
                "c1",
                vec!["e".into(), "b".into(), "a".into()],
                "sd",
                None,
                "",
            )
            .await
            .expect("invite");
        assert_eq!(
            invited.ringing,
            ["e", "b"],
            "b rings again; a is in the call"
        );
        assert!(invited.revision > 0);
        // d cancels its own invitations: e and b, not c (a's).
        let (cancelled, _) = r.cancel("c1", "sd", "", "").await.expect("cancel");
        assert_eq!(cancelled, ["b", "e"]);
        // c is left ringing until the timeout.
        let invites = r.invites("c1").await.expect("invites");
        let state_of = |user: &str| {
            invites
                .iter()
                .find(|i| i.user.as_ref().is_some_and(|u| u.id == user))
                .map(|i| i.state)
        };
        assert_eq!(state_of("c"), Some(InviteState::Ringing as i32));
        assert_eq!(state_of("b"), Some(InviteState::Cancelled as i32));
        tokio::time::sleep(Duration::from_millis(250)).await;
        r.expire_away().await.expect("expire");
        let call = r.get("c1").await.expect("live");
        assert_eq!(outcome_of(&call, "c"), Outcome::Missed);
        // a rings b again, then leaves: a's invitations are cancelled.
        r.invite("c1", vec!["b".into()], "sa", None, "")
            .await
            .expect("ring b");
        r.leave("c1", "sa", "").await.expect("a leaves");
        let call = r.get("c1").await.expect("live with d");
        assert_eq!(outcome_of(&call, "b"), Outcome::Cancelled);
    }
}
