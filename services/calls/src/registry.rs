//! Every call: one key per call in the calls bucket of the shared store, and one
//! index key per user listing the live calls they started. Every change is a
//! compare-and-set on the call's key (retried when another replica won the race),
//! so any number of replicas serve the same calls and the limits hold.
//!
//! A call's record is the whole call after the change, with the change itself;
//! an ended call keeps its record (`ended_at` set) for [`ENDED_RETENTION`] so
//! that the history service can read it, then any replica deletes it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meetup_platform::store::leases::LeaseView;
use meetup_platform::store::{self, Bucket, Change, StateStore, Versioned, keys};
use meetup_proto::bus::v1::{
    CallChange, CallEnded, CallRecord, CallStarted, EndReason, LeaveReason, ParticipantAway,
    ParticipantJoined, ParticipantLeft, ParticipantResumed, StartedCall, StartedCalls, call_change,
};
use meetup_proto::calls::v1::{Attendee, Call, CallUser, Outcome, Participant};
use prost::Message;

use crate::error::{CallError, MAX_INVITED, require};

mod chat;
mod invites;

pub use chat::{MAX_TEXT_CHARS, Sender, check_text};
pub use invites::{Invited, invites_of, unavailable_at_start};

/// How long a reservation in a user's started calls waits for its call to be
/// written before it counts as abandoned.
const RESERVATION_TTL: Duration = Duration::from_secs(10);

/// How long an ended call's record stays in the bucket.
pub const ENDED_RETENTION: Duration = Duration::from_secs(600);

/// Cheap-to-clone handle on the calls bucket.
#[derive(Clone, Debug)]
pub struct CallRegistry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    calls: Bucket,
    index: Bucket,
    leases: Bucket,
    /// Read (never written) to tell which invitees are online.
    presence: Bucket,
    limits: CallLimits,
}

/// Limits that hold across the cluster.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Most sessions in one call.
    pub max_participants: usize,
    /// Most live calls one user may have started.
    pub max_calls_per_user: usize,
    /// How long the sessions of a dead gateway stay away before they leave.
    pub resume_grace: Duration,
    /// How long an invitation rings before it is missed.
    pub ring_timeout: Duration,
    /// How many chat messages a call keeps.
    pub chat_history: usize,
}

/// The default of `RING_TIMEOUT_MS`.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(45);
/// The default of `CALL_CHAT_HISTORY`.
pub const DEFAULT_CHAT_HISTORY: usize = 50;

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_participants: 16,
            max_calls_per_user: 5,
            resume_grace: Duration::ZERO,
            ring_timeout: DEFAULT_RING_TIMEOUT,
            chat_history: DEFAULT_CHAT_HISTORY,
        }
    }
}

/// What a leave did.
#[derive(Debug)]
pub struct Left {
    pub left: bool,
    pub ended: bool,
    pub call: Option<Call>,
    /// Store revision of the change; 0 when nothing changed.
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub active_calls: u32,
    pub participants: u32,
}

/// A call's record and the revision it was read at.
#[derive(Debug, Clone)]
struct Current {
    record: CallRecord,
    revision: u64,
}

impl Current {
    fn live(&self) -> Option<&Call> {
        self.record.call.as_ref().filter(|c| c.ended_at.is_none())
    }
}

/// What a change decided: write this record, or leave the call as it is.
enum Decision<T> {
    Write(Box<CallRecord>, T),
    Keep(T),
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

fn decode_call(entry: &store::Entry) -> Option<CallRecord> {
    let value = entry.value.as_ref()?;
    match CallRecord::decode(value.clone()) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::error!(key = %entry.key, %error, "undecodable call record; treated as absent");
            None
        }
    }
}

fn now() -> prost_types::Timestamp {
    SystemTime::now().into()
}

fn change(change: call_change::Change) -> Option<CallChange> {
    Some(CallChange {
        change: Some(change),
    })
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
    pub fn new(state: &StateStore, limits: CallLimits) -> Self {
        CallRegistry {
            shared: Arc::new(Shared {
                calls: state.calls.clone(),
                index: state.call_index.clone(),
                leases: state.gateways.clone(),
                presence: state.presence.clone(),
                limits,
            }),
        }
    }

    async fn read(&self, call_id: &str) -> Result<Option<Current>, CallError> {
        let entry = self.shared.calls.get(&keys::call(call_id)).await?;
        Ok(entry.and_then(|e| {
            decode_call(&e).map(|record| Current {
                record,
                revision: e.revision,
            })
        }))
    }

    /// Reads the call, lets `decide` change it, and writes the result with the
    /// revision it read; again from the start when another writer came first.
    /// Returns `decide`'s value and the revision written (0 when nothing was).
    async fn modify<T>(
        &self,
        call_id: &str,
        mut decide: impl FnMut(Option<&Current>) -> Result<Decision<T>, CallError>,
    ) -> Result<(T, u64), CallError> {
        self.shared
            .calls
            .modify(
                &keys::call(call_id),
                |read: Option<Versioned<CallRecord>>| {
                    let current = read.map(|r| Current {
                        record: r.value,
                        revision: r.revision,
                    });
                    let decided = decide(current.as_ref());
                    async move {
                        Ok(match decided? {
                            Decision::Keep(value) => Change::Keep(value),
                            Decision::Write(record, value) => Change::Put(*record, value),
                        })
                    }
                },
            )
            .await
    }

    /// Adds `call_id` to the live calls `user` started, unless they already have
    /// the most allowed. Ids whose call is over are dropped; so are reservations
    /// whose call never came (its writer died in between) after [`RESERVATION_TTL`].
    async fn reserve(&self, user: &str, call_id: &str) -> Result<bool, CallError> {
        let key = keys::started_calls(user);
        let max = self.shared.limits.max_calls_per_user;
        let (reserved, _) = self
            .shared
            .index
            .modify(&key, |read: Option<Versioned<StartedCalls>>| async move {
                let mut started = read.map(|r| r.value).unwrap_or_default();
                if started.calls.iter().any(|c| c.call_id == call_id) {
                    return Ok(Change::Keep(false));
                }
                if started.calls.len() >= max {
                    let mut kept = Vec::new();
                    for reserved in std::mem::take(&mut started.calls) {
                        let keep = match self.read(&reserved.call_id).await? {
                            Some(current) => current.live().is_some(),
                            None => reserved
                                .reserved_at
                                .and_then(|t| SystemTime::try_from(t).ok())
                                .and_then(|t| t.elapsed().ok())
                                .is_none_or(|age| age < RESERVATION_TTL),
                        };
                        if keep {
                            kept.push(reserved);
                        }
                    }
                    started.calls = kept;
                }
                if started.calls.len() >= max {
                    return Err(CallError::TooManyCalls {
                        user_id: user.to_owned(),
                        max,
                    });
                }
                started.calls.push(StartedCall {
                    call_id: call_id.to_owned(),
                    reserved_at: Some(now()),
                });
                Ok(Change::Put(started, true))
            })
            .await?;
        Ok(reserved)
    }

    /// Takes `call_id` out of the live calls `user` started (best effort: a
    /// leftover id is dropped by the next [`CallRegistry::reserve`] that needs room).
    async fn release(&self, user: &str, call_id: &str) {
        let key = keys::started_calls(user);
        let released = self
            .shared
            .index
            .modify(&key, |read: Option<Versioned<StartedCalls>>| async move {
                let Some(mut started) = read.map(|r| r.value) else {
                    return Ok::<_, store::StoreError>(Change::Keep(()));
                };
                let before = started.calls.len();
                started.calls.retain(|c| c.call_id != call_id);
                Ok(if started.calls.len() == before {
                    Change::Keep(())
                } else if started.calls.is_empty() {
                    Change::Delete(())
                } else {
                    Change::Put(started, ())
                })
            })
            .await;
        if let Err(error) = released {
            tracing::warn!(user_id = user, call_id, %error, "call not released from the index");
        }
    }

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
        let max = self.shared.limits.max_participants;
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

    /// Removes the sessions `leaving` picks from one call; the call ends when
    /// left empty. Returns what happened; nothing when none of them was in it.
    async fn remove_sessions(
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
    async fn update_participants(
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
        Ok(self
            .live_calls()
            .await?
            .into_iter()
            .filter(|c| c.participants.iter().any(|p| p.session_id == session_id))
            .map(|c| c.id)
            .collect())
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
        for call in self.live_calls().await? {
            if invites::rings_out(&call, now) {
                self.expire_rings(&call.id, now).await?;
            }
            let count = call.participants.iter().filter(|p| expired(p)).count() as u32;
            if count == 0 {
                continue;
            }
            let left = self
                .remove_sessions(&call.id, expired, LeaveReason::Disconnected, "")
                .await?;
            if left.left {
                removed += count;
            }
        }
        if removed > 0 {
            tracing::info!(sessions = removed, "away participants expired");
        }
        Ok(removed)
    }

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
        for call in self.live_calls().await? {
            let count = call.participants.iter().filter(|p| doomed(p)).count() as u32;
            if count == 0 {
                continue;
            }
            let left = self
                .remove_sessions(&call.id, doomed, LeaveReason::Disconnected, "")
                .await?;
            if left.left {
                removed += count;
                last = last.max(left.revision);
            }
        }
        Ok((removed, last))
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

    pub async fn get(&self, call_id: &str) -> Result<Call, CallError> {
        require("call_id", call_id)?;
        self.read(call_id)
            .await?
            .and_then(|c| c.live().cloned())
            .ok_or_else(|| CallError::CallNotFound(call_id.to_owned()))
    }

    async fn records(&self) -> Result<Vec<Current>, CallError> {
        let entries = self.shared.calls.scan(keys::CALL_PREFIX).await?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                decode_call(e).map(|record| Current {
                    record,
                    revision: e.revision,
                })
            })
            .collect())
    }

    async fn live_calls(&self) -> Result<Vec<Call>, CallError> {
        Ok(self
            .records()
            .await?
            .iter()
            .filter_map(|c| c.live().cloned())
            .collect())
    }

    /// Follows the calls bucket's call keys from `after` (see
    /// [`meetup_platform::store::Bucket::follow_after`]).
    pub async fn follow_after(
        &self,
        after: u64,
    ) -> Result<meetup_platform::store::TrackedStream, CallError> {
        Ok(self
            .shared
            .calls
            .follow_after(after, keys::CALL_PREFIX)
            .await?)
    }

    /// Every live call, oldest first.
    pub async fn list(&self) -> Result<Vec<Call>, CallError> {
        let mut calls = self.live_calls().await?;
        calls.sort_by(|a, b| {
            let key = |c: &Call| c.created_at.map(|t| (t.seconds, t.nanos));
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(calls)
    }

    pub async fn counts(&self) -> Result<Counts, CallError> {
        let calls = self.live_calls().await?;
        Ok(Counts {
            active_calls: calls.len() as u32,
            participants: calls.iter().map(|c| c.participants.len() as u32).sum(),
        })
    }

    /// One sweep: takes the sessions of gateways whose lease is gone out of their
    /// calls, and deletes the records of calls ended longer than `retention` ago.
    pub async fn sweep(&self, view: &mut LeaseView, retention: Duration) -> Result<u32, CallError> {
        let records = self.records().await?;
        let mentioned: std::collections::BTreeSet<&str> = records
            .iter()
            .filter_map(Current::live)
            .flat_map(|c| c.participants.iter().map(|p| p.gateway_id.as_str()))
            .collect();
        let dead = view
            .dead_gateways(&self.shared.leases, mentioned, Duration::ZERO)
            .await?;
        let mut removed = 0;
        let grace = self.shared.limits.resume_grace;
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
            for call in records.iter().filter_map(Current::live) {
                if !call.participants.iter().any(doomed) {
                    continue;
                }
                count += self
                    .update_participants(
                        &call.id,
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
        self.sweep_chats().await?;
        let expired = SystemTime::now() - retention;
        for current in &records {
            let ended = current
                .record
                .call
                .as_ref()
                .and_then(|c| c.ended_at)
                .and_then(|t| SystemTime::try_from(t).ok());
            if let (Some(ended), Some(call)) = (ended, &current.record.call)
                && ended < expired
            {
                // A conflict means the id was reused meanwhile: keep it.
                let _ = self
                    .shared
                    .calls
                    .delete(&keys::call(&call.id), current.revision)
                    .await;
            }
        }
        Ok(removed)
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
    use bytes::Bytes;
    use meetup_platform::store::BucketSettings;

    use super::*;

    fn registry(limits: CallLimits) -> (CallRegistry, StateStore) {
        let state = StateStore::memory(BucketSettings::default());
        (CallRegistry::new(&state, limits), state)
    }

    fn p(user: &str, session: &str) -> Participant {
        participant(user, &user.to_uppercase(), session, "gw")
    }

    /// Puts `users` online in the presence bucket (one session each).
    async fn online(state: &StateStore, users: &[&str]) {
        use meetup_proto::bus::v1::UserRecord;
        use meetup_proto::presence::v1::{OnlineUser, Session, User};
        for user in users {
            let record = UserRecord {
                user: Some(OnlineUser {
                    user: Some(User {
                        id: (*user).into(),
                        ..User::default()
                    }),
                    sessions: vec![Session {
                        session_id: format!("s{user}"),
                        gateway_id: "gw".into(),
                        ..Session::default()
                    }],
                }),
                ..UserRecord::default()
            };
            state
                .presence
                .put(&keys::user(user), Bytes::from(record.encode_to_vec()))
                .await
                .expect("online");
        }
    }

    fn outcome_of(call: &Call, user: &str) -> Outcome {
        call.attendees
            .iter()
            .find(|a| a.user.as_ref().is_some_and(|u| u.id == user))
            .and_then(|a| Outcome::try_from(a.outcome).ok())
            .unwrap_or(Outcome::Unspecified)
    }

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
        assert_eq!(invites::unavailable_at_start(&call), ["z"]);
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

    #[tokio::test]
    async fn chat_messages_are_ordered_bounded_and_go_with_the_call() {
        use meetup_proto::bus::v1::CallChat;
        let limits = CallLimits {
            chat_history: 3,
            ..CallLimits::default()
        };
        let (r, state) = registry(limits);
        r.start("c1", p("a", "sa"), false, vec![], "")
            .await
            .expect("start");
        assert!(matches!(
            r.send_message("c1", Sender::Session("sx".into()), "hi".into())
                .await,
            Err(CallError::NotParticipant { .. })
        ));
        assert!(matches!(
            r.send_message("nope", Sender::System, "hi".into()).await,
            Err(CallError::CallNotFound(_))
        ));
        let mut last = 0;
        for n in 1..=5 {
            let (message, revision) = r
                .send_message("c1", Sender::Session("sa".into()), format!("m{n}"))
                .await
                .expect("send");
            assert_eq!(message.seq, n);
            assert!(revision > last);
            last = revision;
        }
        let (bot, _) = r
            .send_message("c1", Sender::Bot("notes".into()), "summary".into())
            .await
            .expect("bot");
        assert_eq!(bot.from.expect("from").id, "bot:notes");
        let chat = state
            .calls
            .get(&keys::chat("c1"))
            .await
            .expect("get")
            .and_then(|e| e.value)
            .map(|v| CallChat::decode(v).expect("chat"))
            .expect("a chat");
        let texts: Vec<&str> = chat.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["m4", "m5", "summary"], "the newest three");
        r.leave("c1", "sa", "").await.expect("leave");
        assert!(
            state
                .calls
                .get(&keys::chat("c1"))
                .await
                .expect("get")
                .is_none(),
            "the chat went with the call"
        );
    }
}
