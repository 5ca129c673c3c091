//! The state of every live call.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use meetup_proto::bus::v1::{
    CallEnded, CallEvent, CallRestored, CallStarted, LeaveReason, ParticipantJoined,
    ParticipantLeft, call_event,
};
use meetup_proto::calls::v1::{Call, CallUser, Participant};
use meetup_runtime::{OrderedPublisher, Receipt, subjects};

/// An event queued for the bus: its sequence, and the receipt that resolves once
/// it is published.
#[derive(Debug)]
pub struct Announcement {
    pub sequence: u64,
    pub receipt: Receipt,
}

/// The sequence of the last announcement, 0 when there was none.
pub fn sequence_of(announcement: &Option<Announcement>) -> u64 {
    announcement.as_ref().map_or(0, |a| a.sequence)
}
use prost::Message;

use crate::error::{CallError, MAX_INVITED, require};

/// Cheap-to-clone handle on all calls; methods hide the lock and queue the
/// resulting events for publication in state order.
#[derive(Clone, Debug)]
pub struct CallRegistry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    instance_id: String,
    publisher: OrderedPublisher,
    limits: CallLimits,
    // A std Mutex is fine: it is never held across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sequence: u64,
    calls: HashMap<String, Call>,
    /// session id -> ids of the calls it is in
    session_calls: HashMap<String, BTreeSet<String>>,
}

/// Limits that hold across the cluster, since every call lives here.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Most sessions in one call.
    pub max_participants: usize,
    /// Most live calls one user may have started.
    pub max_calls_per_user: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_participants: 16,
            max_calls_per_user: 5,
        }
    }
}

/// What a leave did.
#[derive(Debug)]
pub struct Left {
    pub left: bool,
    pub ended: bool,
    pub call: Option<Call>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub active_calls: u32,
    pub participants: u32,
    pub sequence: u64,
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

fn user_id(p: &Participant) -> &str {
    p.user.as_ref().map(|u| u.id.as_str()).unwrap_or_default()
}

impl CallRegistry {
    pub fn new(publisher: OrderedPublisher, limits: CallLimits) -> Self {
        CallRegistry {
            shared: Arc::new(Shared {
                instance_id: format!("{:016x}", rand::random::<u64>()),
                publisher,
                limits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one event; called with the state lock held so events keep state order.
    fn publish(&self, state: &mut State, call: Call, change: call_event::Change) -> Announcement {
        state.sequence += 1;
        let event = CallEvent {
            instance_id: self.shared.instance_id.clone(),
            sequence: state.sequence,
            call: Some(call),
            change: Some(change),
        };
        let receipt = self
            .shared
            .publisher
            .enqueue(subjects::CALL_EVENTS, Bytes::from(event.encode_to_vec()));
        Announcement {
            sequence: state.sequence,
            receipt,
        }
    }

    pub fn start(
        &self,
        call_id: &str,
        mut initiator: Participant,
        is_video: bool,
        invited_user_ids: Vec<String>,
    ) -> Result<(Call, Announcement), CallError> {
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
        let now = SystemTime::now();
        initiator.joined_at = Some(now.into());
        let mut state = self.lock();
        if state.calls.contains_key(call_id) {
            return Err(CallError::CallExists(call_id.to_owned()));
        }
        let started = state
            .calls
            .values()
            .filter(|c| c.initiator.as_ref().is_some_and(|u| u.id == initiator_id))
            .count();
        if started >= self.shared.limits.max_calls_per_user {
            return Err(CallError::TooManyCalls {
                user_id: initiator_id,
                max: self.shared.limits.max_calls_per_user,
            });
        }
        let call = Call {
            id: call_id.to_owned(),
            initiator: initiator.user.clone(),
            is_video,
            participants: vec![initiator.clone()],
            invited_user_ids: invited,
            created_at: Some(now.into()),
            version: 1,
        };
        state.calls.insert(call_id.to_owned(), call.clone());
        state
            .session_calls
            .entry(initiator.session_id.clone())
            .or_default()
            .insert(call_id.to_owned());
        let receipt = self.publish(
            &mut state,
            call.clone(),
            call_event::Change::Started(CallStarted {}),
        );
        tracing::info!(call_id, user_id = %initiator_id, "call started");
        Ok((call, receipt))
    }

    /// Adds a session to a call; `None` receipt when it was already in it.
    pub fn join(
        &self,
        call_id: &str,
        mut participant: Participant,
    ) -> Result<(Call, Option<Announcement>), CallError> {
        require("call_id", call_id)?;
        validate_participant(&participant)?;
        participant.joined_at = Some(SystemTime::now().into());
        let mut state = self.lock();
        let call = state
            .calls
            .get_mut(call_id)
            .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
        if call
            .participants
            .iter()
            .any(|p| p.session_id == participant.session_id)
        {
            return Ok((call.clone(), None));
        }
        if call.participants.len() >= self.shared.limits.max_participants {
            return Err(CallError::CallFull {
                call_id: call_id.to_owned(),
                max: self.shared.limits.max_participants,
            });
        }
        call.participants.push(participant.clone());
        call.version += 1;
        let call = call.clone();
        state
            .session_calls
            .entry(participant.session_id.clone())
            .or_default()
            .insert(call_id.to_owned());
        tracing::info!(call_id, user_id = %user_id(&participant), "joined call");
        let receipt = self.publish(
            &mut state,
            call.clone(),
            call_event::Change::Joined(ParticipantJoined {
                participant: Some(participant),
            }),
        );
        Ok((call, Some(receipt)))
    }

    /// Removes one session from one call; the call ends when left empty.
    fn remove_from_call(
        &self,
        state: &mut State,
        call_id: &str,
        session_id: &str,
        reason: LeaveReason,
    ) -> Option<(Call, bool, Announcement)> {
        let call = state.calls.get_mut(call_id)?;
        let index = call
            .participants
            .iter()
            .position(|p| p.session_id == session_id)?;
        let participant = call.participants.remove(index);
        call.version += 1;
        let call = call.clone();
        let ended = call.participants.is_empty();
        if ended {
            state.calls.remove(call_id);
        }
        if let Some(calls) = state.session_calls.get_mut(session_id) {
            calls.remove(call_id);
            if calls.is_empty() {
                state.session_calls.remove(session_id);
            }
        }
        tracing::info!(call_id, user_id = %user_id(&participant), ?reason, ended, "left call");
        let receipt = self.publish(
            state,
            call.clone(),
            call_event::Change::Left(ParticipantLeft {
                participant: Some(participant),
                reason: reason as i32,
                call_ended: ended,
            }),
        );
        Some((call, ended, receipt))
    }

    pub fn leave(
        &self,
        call_id: &str,
        session_id: &str,
    ) -> Result<(Left, Option<Announcement>), CallError> {
        require("call_id", call_id)?;
        require("session_id", session_id)?;
        let mut state = self.lock();
        match self.remove_from_call(&mut state, call_id, session_id, LeaveReason::Left) {
            Some((call, ended, receipt)) => Ok((
                Left {
                    left: true,
                    ended,
                    call: Some(call),
                },
                Some(receipt),
            )),
            None => Ok((
                Left {
                    left: false,
                    ended: false,
                    call: state.calls.get(call_id).cloned(),
                },
                None,
            )),
        }
    }

    /// Removes a session from every call it is in (its socket went away).
    pub fn remove_session(
        &self,
        session_id: &str,
    ) -> Result<(Vec<String>, Option<Announcement>), CallError> {
        require("session_id", session_id)?;
        let mut state = self.lock();
        let call_ids: Vec<String> = state
            .session_calls
            .get(session_id)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        let mut last = None;
        for call_id in &call_ids {
            if let Some((_, _, receipt)) =
                self.remove_from_call(&mut state, call_id, session_id, LeaveReason::Disconnected)
            {
                last = Some(receipt);
            }
        }
        Ok((call_ids, last))
    }

    /// Removes every session of one gateway from every call.
    pub fn remove_gateway(
        &self,
        gateway_id: &str,
    ) -> Result<(u32, Option<Announcement>), CallError> {
        require("gateway_id", gateway_id)?;
        let mut state = self.lock();
        let doomed: Vec<(String, String)> = state
            .calls
            .values()
            .flat_map(|c| {
                c.participants
                    .iter()
                    .filter(|p| p.gateway_id == gateway_id)
                    .map(|p| (c.id.clone(), p.session_id.clone()))
            })
            .collect();
        let mut last = None;
        for (call_id, session_id) in &doomed {
            if let Some((_, _, receipt)) =
                self.remove_from_call(&mut state, call_id, session_id, LeaveReason::Disconnected)
            {
                last = Some(receipt);
            }
        }
        Ok((doomed.len() as u32, last))
    }

    /// Removes every session of `user_id` from one call.
    pub fn remove_participant(
        &self,
        call_id: &str,
        user_id_to_remove: &str,
    ) -> Result<(u32, bool, Option<Announcement>), CallError> {
        require("call_id", call_id)?;
        require("user_id", user_id_to_remove)?;
        let mut state = self.lock();
        let call = state
            .calls
            .get(call_id)
            .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
        let sessions: Vec<String> = call
            .participants
            .iter()
            .filter(|p| user_id(p) == user_id_to_remove)
            .map(|p| p.session_id.clone())
            .collect();
        if sessions.is_empty() {
            return Err(CallError::NotParticipant {
                call_id: call_id.to_owned(),
                user_id: user_id_to_remove.to_owned(),
            });
        }
        let mut ended = false;
        let mut last = None;
        for session_id in &sessions {
            if let Some((_, e, receipt)) =
                self.remove_from_call(&mut state, call_id, session_id, LeaveReason::Removed)
            {
                ended |= e;
                last = Some(receipt);
            }
        }
        Ok((sessions.len() as u32, ended, last))
    }

    /// Ends a call for everyone in it.
    pub fn end(&self, call_id: &str) -> Result<(Call, Announcement), CallError> {
        require("call_id", call_id)?;
        let mut state = self.lock();
        let mut call = state
            .calls
            .remove(call_id)
            .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))?;
        for p in &call.participants {
            if let Some(calls) = state.session_calls.get_mut(&p.session_id) {
                calls.remove(call_id);
                if calls.is_empty() {
                    state.session_calls.remove(&p.session_id);
                }
            }
        }
        call.version += 1;
        tracing::info!(call_id, "call ended");
        let receipt = self.publish(
            &mut state,
            call.clone(),
            call_event::Change::Ended(CallEnded {}),
        );
        Ok((call, receipt))
    }

    /// Puts back a call after a restart: creates it when missing, else adds the
    /// participants whose sessions it lacks. `None` when nothing changed.
    pub fn restore(&self, call: Call) -> Result<(Call, Option<Announcement>), CallError> {
        require("call.id", &call.id)?;
        let initiator = call
            .initiator
            .as_ref()
            .ok_or_else(|| CallError::InvalidArgument("call.initiator is required".into()))?;
        require("call.initiator.id", &initiator.id)?;
        if call.participants.is_empty() {
            return Err(CallError::InvalidArgument(
                "a restored call needs at least one participant".into(),
            ));
        }
        for p in &call.participants {
            validate_participant(p)?;
        }
        if call.invited_user_ids.len() > MAX_INVITED {
            return Err(CallError::InvalidArgument(format!(
                "at most {MAX_INVITED} users can be invited"
            )));
        }
        let mut state = self.lock();
        let state = &mut *state;
        let sessions: Vec<String> = call
            .participants
            .iter()
            .map(|p| p.session_id.clone())
            .collect();
        let merged = match state.calls.get_mut(&call.id) {
            None => {
                let restored = Call {
                    version: 1,
                    created_at: call.created_at.or_else(|| Some(SystemTime::now().into())),
                    ..call
                };
                state.calls.insert(restored.id.clone(), restored.clone());
                restored
            }
            Some(existing) => {
                let before = existing.participants.len();
                for p in call.participants {
                    if !existing
                        .participants
                        .iter()
                        .any(|q| q.session_id == p.session_id)
                    {
                        existing.participants.push(p);
                    }
                }
                if existing.participants.len() == before {
                    return Ok((existing.clone(), None));
                }
                existing.version += 1;
                existing.clone()
            }
        };
        for session_id in sessions {
            state
                .session_calls
                .entry(session_id)
                .or_default()
                .insert(merged.id.clone());
        }
        tracing::info!(call_id = %merged.id, participants = merged.participants.len(), "call restored");
        let announcement = self.publish(
            state,
            merged.clone(),
            call_event::Change::Restored(CallRestored {}),
        );
        Ok((merged, Some(announcement)))
    }

    pub fn get(&self, call_id: &str) -> Result<Call, CallError> {
        require("call_id", call_id)?;
        self.lock()
            .calls
            .get(call_id)
            .cloned()
            .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))
    }

    /// Every live call, oldest first, and the sequence of the last event.
    pub fn list(&self) -> (Vec<Call>, u64) {
        let state = self.lock();
        let mut calls: Vec<Call> = state.calls.values().cloned().collect();
        calls.sort_by(|a, b| {
            let key = |c: &Call| c.created_at.map(|t| (t.seconds, t.nanos));
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        (calls, state.sequence)
    }

    pub fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            active_calls: state.calls.len() as u32,
            participants: state
                .calls
                .values()
                .map(|c| c.participants.len() as u32)
                .sum(),
            sequence: state.sequence,
        }
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
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use meetup_runtime::Bus;

    use super::*;

    async fn registry_with_events() -> (CallRegistry, meetup_runtime::Subscription) {
        let bus = Bus::local();
        let events = bus
            .subscribe(subjects::CALL_EVENTS.into())
            .await
            .expect("subscribe");
        let limits = CallLimits {
            max_participants: 3,
            max_calls_per_user: 2,
        };
        (
            CallRegistry::new(OrderedPublisher::start(bus), limits),
            events,
        )
    }

    async fn next_event(events: &mut meetup_runtime::Subscription) -> CallEvent {
        CallEvent::decode(events.next().await.expect("event").payload).expect("decodes")
    }

    #[tokio::test]
    async fn start_join_leave_until_the_call_ends() {
        let (calls, mut events) = registry_with_events().await;
        let (call, _) = calls
            .start(
                "c1",
                participant("a", "Ann", "s1", "gw"),
                true,
                vec!["b".into(), "a".into(), "b".into()],
            )
            .expect("start");
        assert_eq!(
            call.invited_user_ids,
            vec!["b".to_string()],
            "deduplicated, initiator dropped"
        );
        assert_eq!(call.participants.len(), 1);
        assert!(matches!(
            calls.start("c1", participant("x", "X", "s9", "gw"), false, vec![]),
            Err(CallError::CallExists(_))
        ));

        let (call, receipt) = calls
            .join("c1", participant("b", "Bob", "s2", "gw"))
            .expect("join");
        assert!(receipt.is_some());
        assert_eq!(call.participants.len(), 2);
        let (again, receipt) = calls
            .join("c1", participant("b", "Bob", "s2", "gw"))
            .expect("join");
        assert!(receipt.is_none(), "second join is a no-op");
        assert_eq!(again.version, call.version);

        let (left, _) = calls.leave("c1", "s1").expect("leave");
        assert!(left.left && !left.ended);
        let (left, _) = calls.leave("c1", "s1").expect("leave");
        assert!(!left.left, "not in the call any more");
        let (left, _) = calls.leave("c1", "s2").expect("leave");
        assert!(left.left && left.ended);
        assert!(matches!(calls.get("c1"), Err(CallError::CallNotFound(_))));
        assert!(matches!(
            calls.join("c1", participant("b", "Bob", "s2", "gw")),
            Err(CallError::CallNotFound(_))
        ));

        let kinds: Vec<_> = [
            next_event(&mut events).await,
            next_event(&mut events).await,
            next_event(&mut events).await,
            next_event(&mut events).await,
        ]
        .into_iter()
        .map(|e| (e.sequence, e.change))
        .collect();
        assert!(matches!(
            kinds[0],
            (1, Some(call_event::Change::Started(_)))
        ));
        assert!(matches!(kinds[1], (2, Some(call_event::Change::Joined(_)))));
        assert!(matches!(&kinds[2], (3, Some(call_event::Change::Left(l))) if !l.call_ended));
        assert!(matches!(&kinds[3], (4, Some(call_event::Change::Left(l))) if l.call_ended));
    }

    #[tokio::test]
    async fn a_disconnected_session_leaves_all_its_calls() {
        let (calls, _events) = registry_with_events().await;
        calls
            .start("c1", participant("a", "Ann", "s1", "gw1"), false, vec![])
            .expect("start");
        calls
            .start("c2", participant("b", "Bob", "s2", "gw2"), false, vec![])
            .expect("start");
        calls
            .join("c2", participant("a", "Ann", "s1", "gw1"))
            .expect("join");
        let (left, _) = calls.remove_session("s1").expect("remove");
        assert_eq!(left, vec!["c1".to_string(), "c2".to_string()]);
        let counts = calls.counts();
        assert_eq!((counts.active_calls, counts.participants), (1, 1));
        let (removed, _) = calls.remove_gateway("gw2").expect("remove");
        assert_eq!(removed, 1);
        assert_eq!(calls.counts().active_calls, 0);
    }

    #[tokio::test]
    async fn remove_participant_and_end() {
        let (calls, _events) = registry_with_events().await;
        calls
            .start("c1", participant("a", "Ann", "s1", "gw"), false, vec![])
            .expect("start");
        calls
            .join("c1", participant("b", "Bob", "s2", "gw"))
            .expect("join");
        calls
            .join("c1", participant("b", "Bob", "s3", "gw"))
            .expect("join");
        assert!(matches!(
            calls.remove_participant("c1", "zed"),
            Err(CallError::NotParticipant { .. })
        ));
        let (removed, ended, _) = calls.remove_participant("c1", "b").expect("remove");
        assert_eq!((removed, ended), (2, false));
        let (call, _) = calls.end("c1").expect("end");
        assert_eq!(call.participants.len(), 1);
        assert!(matches!(calls.end("c1"), Err(CallError::CallNotFound(_))));
        assert_eq!(calls.counts().active_calls, 0);
    }

    #[tokio::test]
    async fn restore_creates_missing_calls_and_merges_participants() {
        let (calls, _events) = registry_with_events().await;
        let (original, _) = calls
            .start(
                "c1",
                participant("a", "Ann", "s1", "gw1"),
                true,
                vec!["b".into()],
            )
            .expect("start");
        // A fresh registry, as after a restart, gets the call back from two gateways.
        let (restarted, _events) = registry_with_events().await;
        let mut from_gw2 = original.clone();
        from_gw2.participants = vec![participant("b", "Bob", "s2", "gw2")];
        let (call, announced) = restarted.restore(from_gw2).expect("restore");
        assert!(announced.is_some());
        assert_eq!(call.invited_user_ids, vec!["b".to_string()]);
        assert!(call.is_video);
        let (call, announced) = restarted.restore(original.clone()).expect("restore");
        assert!(announced.is_some());
        assert_eq!(call.participants.len(), 2);
        let (_, announced) = restarted.restore(original).expect("restore");
        assert!(announced.is_none(), "nothing new");
        let (left, _) = restarted.remove_session("s2").expect("remove");
        assert_eq!(left, vec!["c1".to_string()], "sessions are indexed");
    }

    #[tokio::test]
    async fn calls_have_a_size_and_users_a_number_of_calls() {
        let (calls, _events) = registry_with_events().await;
        calls
            .start("c1", participant("a", "A", "s1", "g"), false, vec![])
            .expect("start");
        calls
            .join("c1", participant("b", "B", "s2", "g"))
            .expect("join");
        calls
            .join("c1", participant("c", "C", "s3", "g"))
            .expect("join");
        assert!(matches!(
            calls.join("c1", participant("d", "D", "s4", "g")),
            Err(CallError::CallFull { max: 3, .. })
        ));
        calls
            .start("c2", participant("a", "A", "s1", "g"), false, vec![])
            .expect("start");
        assert!(matches!(
            calls.start("c3", participant("a", "A", "s1", "g"), false, vec![]),
            Err(CallError::TooManyCalls { max: 2, .. })
        ));
        calls.end("c2").expect("end");
        assert!(
            calls
                .start("c3", participant("a", "A", "s1", "g"), false, vec![])
                .is_ok()
        );
    }

    #[tokio::test]
    async fn bad_fields_are_invalid_arguments() {
        let (calls, _events) = registry_with_events().await;
        assert!(matches!(
            calls.start("", participant("a", "A", "s", "g"), false, vec![]),
            Err(CallError::InvalidArgument(_))
        ));
        assert!(matches!(
            calls.start("c", participant("", "A", "s", "g"), false, vec![]),
            Err(CallError::InvalidArgument(_))
        ));
        let too_many: Vec<String> = (0..=MAX_INVITED).map(|i| i.to_string()).collect();
        assert!(matches!(
            calls.start("c", participant("a", "A", "s", "g"), false, too_many),
            Err(CallError::InvalidArgument(_))
        ));
        let mut no_user = participant("a", "A", "s", "g");
        no_user.user = None;
        assert!(matches!(
            calls.join("c", no_user),
            Err(CallError::InvalidArgument(_))
        ));
        assert_eq!(calls.counts().active_calls, 0);
    }
}
