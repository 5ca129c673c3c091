//! A call's life: started, joined, left (it ends when left empty), ended for
//! everyone, a user removed.

use meetup_proto::bus::v1::{
    CallEnded, CallRecord, CallStarted, EndReason, LeaveReason, ParticipantJoined, ParticipantLeft,
    call_change,
};
use meetup_proto::calls::v1::{Attendee, Call, CallUser, Outcome, Participant};

use super::invites;
use super::shared::{CallRegistry, Current, Decision, change, now, user_id};
use crate::error::{CallError, MAX_INVITED, require};

/// What a leave did.
#[derive(Debug)]
pub struct Left {
    pub left: bool,
    pub ended: bool,
    pub call: Option<Call>,
    /// Store revision of the change; 0 when nothing changed.
    pub revision: u64,
}

fn validate_participant(p: &Participant) -> Result<(), CallError> {
    let user = p
        .user
        .as_ref()
        .ok_or_else(|| CallError::InvalidArgument("participant.user is required".into()))?;
    require("participant.user.id", &user.id)?;
    require("participant.user.username", &user.username)?;
    require("participant.session_id", &p.session_id)?;
    require("participant.gateway_id", &p.gateway_id)?;
    Ok(())
}

/// Records in `call.attendees` that `user` joined now.
fn attend(call: &mut Call, user: &CallUser) {
    let at = now();
    match call
        .attendees
        .iter_mut()
        .find(|a| a.user.as_ref().is_some_and(|u| u.id == user.id))
    {
        Some(a) => {
            a.user = Some(user.clone());
            a.joined_at.get_or_insert(at);
            a.left_at = None;
            a.outcome = Outcome::Answered as i32;
            a.ring_until = None;
        }
        None => call.attendees.push(Attendee {
            user: Some(user.clone()),
            joined_at: Some(at),
            outcome: Outcome::Answered as i32,
            ..Attendee::default()
        }),
    }
}

/// Marks the call ended: the invitations still ringing are cancelled.
fn finish(call: &mut Call) {
    let at = now();
    call.ended_at = Some(at);
    for a in &mut call.attendees {
        if a.joined_at.is_some() && a.left_at.is_none() {
            a.left_at = Some(at);
        }
        if a.outcome == Outcome::Ringing as i32 {
            a.outcome = Outcome::Cancelled as i32;
            a.ring_until = None;
        }
    }
}

impl CallRegistry {
    pub async fn start(
        &self,
        call_id: &str,
        mut initiator: Participant,
        is_video: bool,
        invited_user_ids: Vec<String>,
        traceparent: &str,
    ) -> Result<(Call, u64), CallError> {
        require("call_id", call_id)?;
        validate_participant(&initiator)?;
        if invited_user_ids.len() > MAX_INVITED {
            return Err(CallError::InvalidArgument(format!(
                "at most {MAX_INVITED} users can be invited"
            )));
        }
        for id in &invited_user_ids {
            require("invited_user_ids[]", id)?;
        }
        let initiator_id = user_id(&initiator).to_owned();
        let mut invited: Vec<String> = Vec::with_capacity(invited_user_ids.len());
        for id in invited_user_ids {
            if id != initiator_id && !invited.contains(&id) {
                invited.push(id);
            }
        }
        if self
            .read(call_id)
            .await?
            .is_some_and(|c| c.live().is_some())
        {
            return Err(CallError::CallExists(call_id.to_owned()));
        }
        let offline = self.offline_among(&invited).await?;
        let reserved = self.reserve(&initiator_id, call_id).await?;
        initiator.joined_at = Some(now());
        let started = self
            .modify(call_id, |current| {
                if current.is_some_and(|c| c.live().is_some()) {
                    return Err(CallError::CallExists(call_id.to_owned()));
                }
                let at = now();
                let mut attendees = vec![Attendee {
                    user: initiator.user.clone(),
                    joined_at: Some(at),
                    outcome: Outcome::Answered as i32,
                    ..Attendee::default()
                }];
                attendees.extend(invited.iter().map(|id| {
                    let mut invitee = Attendee::default();
                    self.ring(
                        &mut invitee,
                        id,
                        initiator.user.clone(),
                        offline.contains(id),
                        at,
                    );
                    invitee
                }));
                let call = Call {
                    id: call_id.to_owned(),
                    initiator: initiator.user.clone(),
                    is_video,
                    participants: vec![initiator.clone()],
                    invited_user_ids: invited.clone(),
                    created_at: Some(at),
                    // Versions go on across a reused id, so no reader takes the new
                    // call for an older state of the ended one.
                    version: current
                        .and_then(|c| c.record.call.as_ref())
                        .map_or(1, |c| c.version + 1),
                    ended_at: None,
                    attendees,
                };
                let record = CallRecord {
                    call: Some(call.clone()),
                    change: change(call_change::Change::Started(CallStarted {})),
                    traceparent: traceparent.to_owned(),
                };
                Ok(Decision::Write(Box::new(record), call))
            })
            .await;
        match started {
            Ok((call, revision)) => {
                tracing::info!(call_id, user_id = %initiator_id, "call started");
                Ok((call, revision))
            }
            Err(error) => {
                if reserved {
                    self.release(&initiator_id, call_id).await;
                }
                Err(error)
            }
        }
    }

    /// Adds a session to a call; a revision of 0 when it was already in it.
    pub async fn join(
        &self,
        call_id: &str,
        mut participant: Participant,
        traceparent: &str,
    ) -> Result<(Call, u64), CallError> {
        require("call_id", call_id)?;
        validate_participant(&participant)?;
        participant.joined_at = Some(now());
        let max = self.limits().max_participants;
        let (call, revision) = self
            .modify(call_id, |current| {
                let mut call = current
                    .and_then(Current::live)
                    .cloned()
                    .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
                if call
                    .participants
                    .iter()
                    .any(|p| p.session_id == participant.session_id)
                {
                    return Ok(Decision::Keep(call));
                }
                if call.participants.len() >= max {
                    return Err(CallError::CallFull {
                        call_id: call_id.to_owned(),
                        max,
                    });
                }
                call.participants.push(participant.clone());
                if let Some(user) = &participant.user {
                    attend(&mut call, user);
                }
                call.version += 1;
                let record = CallRecord {
                    call: Some(call.clone()),
                    change: change(call_change::Change::Joined(ParticipantJoined {
                        participant: Some(participant.clone()),
                    })),
                    traceparent: traceparent.to_owned(),
                };
                Ok(Decision::Write(Box::new(record), call))
            })
            .await?;
        if revision > 0 {
            tracing::info!(call_id, user_id = %user_id(&participant), "joined call");
        }
        Ok((call, revision))
    }

    /// Disconnects the sessions `leaving` picks from `call`, as a periodic
    /// pass read it: nothing when the read names none. Returns how many the
    /// read named, and the revision written, when they left; `(0, 0)` when
    /// they did not (the call changed meanwhile: the next pass sees it).
    pub(super) async fn disconnect_picked(
        &self,
        call: &Call,
        leaving: impl Fn(&Participant) -> bool,
    ) -> Result<(u32, u64), CallError> {
        let count = call.participants.iter().filter(|p| leaving(p)).count() as u32;
        if count == 0 {
            return Ok((0, 0));
        }
        let left = self
            .remove_sessions(&call.id, leaving, LeaveReason::Disconnected, "")
            .await?;
        Ok(if left.left {
            (count, left.revision)
        } else {
            (0, 0)
        })
    }

    /// Removes the sessions `leaving` picks from one call; the call ends when
    /// left empty. Returns what happened; nothing when none of them was in it.
    pub(super) async fn remove_sessions(
        &self,
        call_id: &str,
        leaving: impl Fn(&Participant) -> bool,
        reason: LeaveReason,
        traceparent: &str,
    ) -> Result<Left, CallError> {
        let (left, revision) = self
            .modify(call_id, |current| {
                let Some(live) = current.and_then(Current::live) else {
                    return Ok(Decision::Keep(Left {
                        left: false,
                        ended: false,
                        call: None,
                        revision: 0,
                    }));
                };
                let mut call = live.clone();
                let (gone, stay): (Vec<Participant>, Vec<Participant>) =
                    call.participants.drain(..).partition(|p| leaving(p));
                call.participants = stay;
                let Some(first) = gone.first().cloned() else {
                    return Ok(Decision::Keep(Left {
                        left: false,
                        ended: false,
                        call: Some(call),
                        revision: 0,
                    }));
                };
                let at = now();
                for p in &gone {
                    let id = user_id(p);
                    if call.participants.iter().any(|q| user_id(q) == id) {
                        continue;
                    }
                    if let Some(a) = call
                        .attendees
                        .iter_mut()
                        .find(|a| a.user.as_ref().is_some_and(|u| u.id == id))
                    {
                        a.left_at = Some(at);
                    }
                    // Whom the user rang stops ringing: the caller hung up.
                    invites::end_ringing(
                        &mut call,
                        |a| invites::invited_by(a) == Some(id),
                        Outcome::Cancelled,
                    );
                }
                let ended = call.participants.is_empty();
                if ended {
                    finish(&mut call);
                }
                call.version += 1;
                let record = CallRecord {
                    call: Some(call.clone()),
                    change: change(call_change::Change::Left(ParticipantLeft {
                        participant: Some(first),
                        reason: reason as i32,
                        call_ended: ended,
                    })),
                    traceparent: traceparent.to_owned(),
                };
                Ok(Decision::Write(
                    Box::new(record),
                    Left {
                        left: true,
                        ended,
                        call: Some(call),
                        revision: 0,
                    },
                ))
            })
            .await?;
        if left.ended {
            if let Some(initiator) = left.call.as_ref().and_then(|c| c.initiator.as_ref()) {
                self.release(&initiator.id, call_id).await;
            }
            self.drop_chat(call_id).await;
        }
        if left.left {
            tracing::info!(call_id, ?reason, ended = left.ended, "left call");
        }
        Ok(Left { revision, ..left })
    }

    pub async fn leave(
        &self,
        call_id: &str,
        session_id: &str,
        traceparent: &str,
    ) -> Result<Left, CallError> {
        require("call_id", call_id)?;
        require("session_id", session_id)?;
        self.remove_sessions(
            call_id,
            |p| p.session_id == session_id,
            LeaveReason::Left,
            traceparent,
        )
        .await
    }

    /// Removes every session of `user_id_to_remove` from one call.
    pub async fn remove_participant(
        &self,
        call_id: &str,
        user_id_to_remove: &str,
        traceparent: &str,
    ) -> Result<(u32, Left), CallError> {
        require("call_id", call_id)?;
        require("user_id", user_id_to_remove)?;
        let call = self.get(call_id).await?;
        let sessions = call
            .participants
            .iter()
            .filter(|p| user_id(p) == user_id_to_remove)
            .count() as u32;
        if sessions == 0 {
            return Err(CallError::NotParticipant {
                call_id: call_id.to_owned(),
                user_id: user_id_to_remove.to_owned(),
            });
        }
        let left = self
            .remove_sessions(
                call_id,
                |p| user_id(p) == user_id_to_remove,
                LeaveReason::Removed,
                traceparent,
            )
            .await?;
        Ok((sessions, left))
    }

    /// Ends a call for everyone in it.
    pub async fn end(&self, call_id: &str, traceparent: &str) -> Result<(Call, u64), CallError> {
        require("call_id", call_id)?;
        let (call, revision) = self
            .modify(call_id, |current| {
                let mut call = current
                    .and_then(Current::live)
                    .cloned()
                    .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
                let participants = std::mem::take(&mut call.participants);
                finish(&mut call);
                call.version += 1;
                let record = CallRecord {
                    call: Some(call.clone()),
                    change: change(call_change::Change::Ended(CallEnded {
                        reason: EndReason::Ended as i32,
                        participants: participants.clone(),
                    })),
                    traceparent: traceparent.to_owned(),
                };
                // The caller learns who was in the call when it ended.
                call.participants = participants;
                Ok(Decision::Write(Box::new(record), call))
            })
            .await?;
        if let Some(initiator) = &call.initiator {
            self.release(&initiator.id, call_id).await;
        }
        self.drop_chat(call_id).await;
        tracing::info!(call_id, "call ended");
        Ok((call, revision))
    }
}

/// A participant record for `user` on `session_id` of `gateway_id`.
pub fn participant(
    user_id: &str,
    username: &str,
    session_id: &str,
    gateway_id: &str,
) -> Participant {
    Participant {
        user: Some(CallUser {
            id: user_id.to_owned(),
            username: username.to_owned(),
        }),
        session_id: session_id.to_owned(),
        gateway_id: gateway_id.to_owned(),
        joined_at: None,
        away_until: None,
    }
}

#[cfg(test)]
mod tests {
    use meetup_platform::store::keys;

    use super::*;
    use crate::registry::CallLimits;
    use crate::registry::Counts;
    use crate::registry::testing::{online, outcome_of, p, registry};

    #[tokio::test]
    async fn start_join_leave_until_the_call_ends() {
        let (r, state) = registry(CallLimits::default());
        online(&state, &["b", "c"]).await;
        let (call, r1) = r
            .start(
                "c1",
                p("a", "sa"),
                true,
                vec!["b".into(), "a".into(), "b".into(), "c".into()],
                "",
            )
            .await
            .expect("start");
        assert_eq!(
            call.invited_user_ids,
            ["b", "c"],
            "deduplicated, initiator dropped"
        );
        assert_eq!(outcome_of(&call, "b"), Outcome::Ringing);
        assert!(matches!(
            r.start("c1", p("z", "sz"), false, vec![], "").await,
            Err(CallError::CallExists(_))
        ));
        let (call, r2) = r.join("c1", p("b", "sb"), "").await.expect("join");
        assert!(r2 > r1);
        assert_eq!(call.participants.len(), 2);
        assert_eq!(outcome_of(&call, "b"), Outcome::Answered);
        let (_, again) = r.join("c1", p("b", "sb"), "").await.expect("join again");
        assert_eq!(again, 0, "joining twice changes nothing");

        let left = r.leave("c1", "sa", "").await.expect("leave");
        assert!(left.left && !left.ended);
        let left = r.leave("c1", "sa", "").await.expect("leave again");
        assert!(!left.left);
        let left = r.leave("c1", "sb", "").await.expect("last leave");
        assert!(left.left && left.ended);
        let ended = left.call.expect("final call");
        assert!(ended.ended_at.is_some());
        assert_eq!(
            outcome_of(&ended, "c"),
            Outcome::Cancelled,
            "the callers hung up on c"
        );
        assert!(matches!(r.get("c1").await, Err(CallError::CallNotFound(_))));
        assert_eq!(r.counts().await.expect("counts"), Counts::default());
        // The ended record stays for the history; the id can be used again.
        assert!(
            state
                .calls
                .get(&keys::call("c1"))
                .await
                .expect("get")
                .is_some()
        );
        let (again, _) = r
            .start("c1", p("a", "sa"), false, vec![], "")
            .await
            .expect("reuse");
        assert!(again.version > ended.version);
    }

    #[tokio::test]
    async fn remove_participant_and_end() {
        let (r, _state) = registry(CallLimits::default());
        r.start("c1", p("a", "sa"), false, vec![], "")
            .await
            .expect("start");
        r.join("c1", p("b", "sb1"), "").await.expect("join");
        r.join("c1", p("b", "sb2"), "").await.expect("join");
        let (removed, left) = r.remove_participant("c1", "b", "").await.expect("remove");
        assert_eq!(removed, 2);
        assert!(!left.ended);
        assert!(matches!(
            r.remove_participant("c1", "b", "").await,
            Err(CallError::NotParticipant { .. })
        ));
        let (call, _) = r.end("c1", "").await.expect("end");
        assert!(call.participants.len() == 1 && call.ended_at.is_some());
        assert!(matches!(
            r.end("c1", "").await,
            Err(CallError::CallNotFound(_))
        ));
    }

    #[tokio::test]
    async fn calls_have_a_size_and_users_a_number_of_calls() {
        let limits = CallLimits {
            max_participants: 2,
            max_calls_per_user: 2,
            ..Default::default()
        };
        let (r, _state) = registry(limits);
        r.start("c1", p("a", "s1"), false, vec![], "")
            .await
            .expect("start");
        r.join("c1", p("b", "s2"), "").await.expect("join");
        assert!(matches!(
            r.join("c1", p("c", "s3"), "").await,
            Err(CallError::CallFull { .. })
        ));
        r.start("c2", p("a", "s1"), false, vec![], "")
            .await
            .expect("second call");
        assert!(matches!(
            r.start("c3", p("a", "s1"), false, vec![], "").await,
            Err(CallError::TooManyCalls { .. })
        ));
        // Ending one frees a place.
        r.end("c2", "").await.expect("end");
        r.start("c3", p("a", "s1"), false, vec![], "")
            .await
            .expect("room again");
    }

    /// How many of `attempts`, run at once, succeeded.
    async fn winners(attempts: impl Iterator<Item = tokio::task::JoinHandle<bool>>) -> usize {
        futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count()
    }

    #[tokio::test]
    async fn racing_replicas_let_exactly_one_win() {
        let limits = CallLimits {
            max_participants: 2,
            max_calls_per_user: 1,
            ..Default::default()
        };
        let (r, _state) = registry(limits);
        // The same call id started many times at once.
        let starts = (0..12).map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.start(
                    "same",
                    p(&format!("u{i}"), &format!("s{i}")),
                    false,
                    vec![],
                    "",
                )
                .await
                .is_ok()
            })
        });
        assert_eq!(winners(starts).await, 1);
        // The last free seat.
        let joins = (0..12).map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.join("same", p(&format!("j{i}"), &format!("js{i}")), "")
                    .await
                    .is_ok()
            })
        });
        assert_eq!(winners(joins).await, 1);
        assert_eq!(r.get("same").await.expect("live").participants.len(), 2);
        // One user's last allowed call, started under many ids at once.
        let mine = (0..12).map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.start(&format!("mine{i}"), p("solo", "s"), false, vec![], "")
                    .await
                    .is_ok()
            })
        });
        assert_eq!(winners(mine).await, 1);
    }

    #[tokio::test]
    async fn bad_fields_are_invalid_arguments() {
        let (r, _state) = registry(CallLimits::default());
        let long = "x".repeat(129);
        assert!(matches!(
            r.start("", p("a", "s"), false, vec![], "").await,
            Err(CallError::InvalidArgument(_))
        ));
        assert!(matches!(
            r.start(&long, p("a", "s"), false, vec![], "").await,
            Err(CallError::InvalidArgument(_))
        ));
        assert!(matches!(
            r.start("c", p("", "s"), false, vec![], "").await,
            Err(CallError::InvalidArgument(_))
        ));
        let too_many: Vec<String> = (0..=MAX_INVITED).map(|i| format!("u{i}")).collect();
        assert!(matches!(
            r.start("c", p("a", "s"), false, too_many, "").await,
            Err(CallError::InvalidArgument(_))
        ));
        assert!(matches!(
            r.join("c", p("a", ""), "").await,
            Err(CallError::InvalidArgument(_))
        ));
        assert_eq!(r.counts().await.expect("counts"), Counts::default());
    }
}
