//! The calls half of the mirror: live calls, and what each change of a call's
//! key means for clients, found by comparing it with the mirrored call.

use std::collections::{HashMap, HashSet};

use meetup_proto::bus::v1::{CallChat, CallRecord, EndReason, LeaveReason, call_change};
use meetup_proto::calls::v1::{Attendee, Call, ChatMessage, Outcome, Participant};
use serde_json::{Value, json};

use super::{CallNotice, Mirror, MirroredChat};

pub(super) fn user_of(p: &Participant) -> &str {
    p.user.as_ref().map(|u| u.id.as_str()).unwrap_or_default()
}

fn public_call_user(p: &Participant) -> Value {
    p.user
        .as_ref()
        .map(|u| json!({ "id": u.id, "username": u.username }))
        .unwrap_or(Value::Null)
}

/// True when `user` has a session in `call` that is not away.
fn present(call: &Call, user: &str) -> bool {
    call.participants
        .iter()
        .any(|p| user_of(p) == user && p.away_until.is_none())
}

/// Who went away from the call and who came back, between two of its states.
fn away_and_back(before: &Call, after: &Call) -> Vec<CallNotice> {
    let mut users: Vec<&str> = after.participants.iter().map(user_of).collect();
    users.dedup();
    let mut notices = Vec::new();
    let mut told = HashSet::new();
    for user in users {
        let was_in = before.participants.iter().any(|p| user_of(p) == user);
        if !was_in || !told.insert(user) {
            continue;
        }
        match (present(before, user), present(after, user)) {
            (true, false) => notices.push(CallNotice::Reconnecting {
                call: after.clone(),
                user_id: user.to_owned(),
            }),
            (false, true) => notices.push(CallNotice::Reconnected {
                call: after.clone(),
                user_id: user.to_owned(),
            }),
            _ => {}
        }
    }
    notices
}

fn attendee_id(a: &Attendee) -> &str {
    a.user.as_ref().map(|u| u.id.as_str()).unwrap_or_default()
}

fn public_by(a: &Attendee) -> Value {
    a.invited_by
        .as_ref()
        .map(|u| json!({ "id": u.id, "username": u.username }))
        .unwrap_or(Value::Null)
}

/// What became of the invitations between two states of a call (`before`
/// absent: the call is new here): invitations that started ringing (new, or
/// rung again) and those that stopped.
fn invitations(before: Option<&Call>, after: &Call) -> Vec<CallNotice> {
    let ringing = Outcome::Ringing as i32;
    let mut notices = Vec::new();
    for a in &after.attendees {
        let user_id = attendee_id(a);
        let was = before.and_then(|b| b.attendees.iter().find(|x| attendee_id(x) == user_id));
        let rang = was.is_some_and(|w| w.outcome == ringing);
        if a.outcome == ringing {
            if !rang || was.is_some_and(|w| w.invited_at != a.invited_at) {
                notices.push(CallNotice::Ringing {
                    call_id: after.id.clone(),
                    is_video: after.is_video,
                    user_id: user_id.to_owned(),
                    by: public_by(a),
                });
            }
        } else if rang {
            notices.push(CallNotice::InviteEnded {
                call: after.clone(),
                user_id: user_id.to_owned(),
                outcome: Outcome::try_from(a.outcome).unwrap_or(Outcome::Unspecified),
            });
        }
    }
    notices
}

/// What the sockets of a gateway are owed for a live call it never saw: the
/// invitees still ringing are rung, and each participant hears of those
/// who joined after it (participants are kept in the order they joined), each
/// `user-joined-call` as it would have been then. The ack of a socket's own
/// `start-call` or `join-call` told it of everyone before it.
fn replayed(call: Call) -> Vec<CallNotice> {
    let mut notices = invitations(None, &call);
    let user_in =
        |participants: &[Participant], user: &str| participants.iter().any(|p| user_of(p) == user);
    for (k, p) in call.participants.iter().enumerate().skip(1) {
        let user = user_of(p);
        if user_in(&call.participants[..k], user) {
            continue;
        }
        notices.push(CallNotice::UserJoined {
            call: Call {
                participants: call.participants[..=k].to_vec(),
                ..call.clone()
            },
            user: public_call_user(p),
            user_id: user.to_owned(),
        });
    }
    notices
}

impl Mirror {
    pub fn calls_watch_started(&self) {
        self.write().calls.resync = Some(HashSet::new());
    }

    /// The calls watch has delivered every key: calls it did not mention are over.
    pub fn calls_current(&self) -> Vec<CallNotice> {
        let mut state = self.write();
        let seen = state.calls.resync.take().unwrap_or_default();
        state.calls.synced = true;
        let gone: Vec<String> = state
            .calls_by_id
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for call_id in gone {
            state.calls_by_id.remove(&call_id);
        }
        let state = &mut *state;
        let calls = &state.calls_by_id;
        state.chats.retain(|id, _| calls.contains_key(id));
        Vec::new()
    }

    /// Applies a call's key at `revision` (`None`: deleted).
    pub fn apply_call(
        &self,
        call_id: &str,
        record: Option<CallRecord>,
        revision: u64,
    ) -> Vec<CallNotice> {
        let mut state = self.write();
        state.calls.saw(call_id, revision);
        let change = record
            .as_ref()
            .and_then(|r| r.change.as_ref())
            .and_then(|c| c.change.clone());
        let call = record.and_then(|r| r.call);
        let live = call.clone().filter(|c| c.ended_at.is_none());
        let old = match &live {
            Some(live) => state.calls_by_id.insert(call_id.to_owned(), live.clone()),
            None => {
                state.chats.remove(call_id);
                state.calls_by_id.remove(call_id)
            }
        };
        drop(state);
        let mut notices = Vec::new();
        if let (Some(before), Some(after)) = (&old, &call) {
            notices.extend(invitations(Some(before), after));
        }
        if let Some(call_change::Change::Ended(ended)) = &change
            && ended.reason == EndReason::Ended as i32
        {
            notices.push(CallNotice::Ended {
                call_id: call_id.to_owned(),
                sessions: ended.participants.clone(),
            });
            return notices;
        }
        let Some(after) = live.or(call) else {
            return notices;
        };
        let Some(before) = old else {
            if matches!(change, Some(call_change::Change::Started(_))) {
                notices.extend(invitations(None, &after));
            } else if after.ended_at.is_none() {
                // A live call this mirror never saw start: its watch was down
                // (or stuck) and a new one's snapshot brings the call as it is
                // now, several changes folded into one. Nobody here heard of it
                // through this gateway, so its history is told again.
                notices.extend(replayed(after));
            }
            return notices;
        };
        let has =
            |call: &Call, session: &str| call.participants.iter().any(|p| p.session_id == session);
        let user_in =
            |call: &Call, user: &str| call.participants.iter().any(|p| user_of(p) == user);
        let removed = matches!(
            &change,
            Some(call_change::Change::Left(left)) if left.reason == LeaveReason::Removed as i32
        );
        for p in before
            .participants
            .iter()
            .filter(|p| !has(&after, &p.session_id))
        {
            if removed {
                notices.push(CallNotice::Removed {
                    call_id: call_id.to_owned(),
                    session: p.clone(),
                });
            }
            let user = user_of(p);
            if !user_in(&after, user)
                && !notices
                    .iter()
                    .any(|n| matches!(n, CallNotice::UserLeft { user_id, .. } if user_id == user))
            {
                notices.push(CallNotice::UserLeft {
                    call: after.clone(),
                    user_id: user.to_owned(),
                });
            }
        }
        notices.extend(away_and_back(&before, &after));
        // A session taken over while it was still live (its gateway died
        // before anyone noticed, and its client resumed through another): its
        // peers never saw it go, yet its signaling path changed and relays
        // sent to it meanwhile may be gone. Told as a reconnection all the same.
        if let Some(call_change::Change::Resumed(resumed)) = &change
            && let Some(user) = resumed.participant.as_ref().map(user_of)
            && !notices
                .iter()
                .any(|n| matches!(n, CallNotice::Reconnected { user_id, .. } if user_id == user))
        {
            notices.push(CallNotice::Reconnected {
                call: after.clone(),
                user_id: user.to_owned(),
            });
        }
        for p in after
            .participants
            .iter()
            .filter(|p| !has(&before, &p.session_id))
        {
            let user = user_of(p);
            if !user_in(&before, user)
                && !notices
                    .iter()
                    .any(|n| matches!(n, CallNotice::UserJoined { user_id, .. } if user_id == user))
            {
                notices.push(CallNotice::UserJoined {
                    call: after.clone(),
                    user: public_call_user(p),
                    user_id: user.to_owned(),
                });
            }
        }
        notices
    }

    /// Live (not away) sessions of `gateway_id` taking part in a call, with their calls.
    pub fn call_sessions_on(&self, gateway_id: &str) -> HashMap<String, Vec<String>> {
        let mut sessions: HashMap<String, Vec<String>> = HashMap::new();
        for call in self.read().calls_by_id.values() {
            for p in call
                .participants
                .iter()
                .filter(|p| p.gateway_id == gateway_id && p.away_until.is_none())
            {
                sessions
                    .entry(p.session_id.clone())
                    .or_default()
                    .push(call.id.clone());
            }
        }
        sessions
    }

    /// What rings for `user_id` now: a notice per invitation still ringing.
    pub fn ringing_for(&self, user_id: &str) -> Vec<CallNotice> {
        let ringing = Outcome::Ringing as i32;
        self.read()
            .calls_by_id
            .values()
            .flat_map(|call| {
                call.attendees
                    .iter()
                    .filter(|a| attendee_id(a) == user_id && a.outcome == ringing)
                    .map(|a| CallNotice::Ringing {
                        call_id: call.id.clone(),
                        is_video: call.is_video,
                        user_id: user_id.to_owned(),
                        by: public_by(a),
                    })
            })
            .collect()
    }

    /// The users among `user_ids` taking part in a live call other than `call_id`.
    pub fn in_other_calls(&self, user_ids: &[String], call_id: &str) -> Vec<String> {
        let state = self.read();
        user_ids
            .iter()
            .filter(|user| {
                state
                    .calls_by_id
                    .values()
                    .any(|c| c.id != call_id && c.participants.iter().any(|p| user_of(p) == *user))
            })
            .cloned()
            .collect()
    }

    /// Whether `user_id` takes part in a live call (through any session).
    pub fn in_a_call(&self, user_id: &str) -> bool {
        self.read()
            .calls_by_id
            .values()
            .any(|c| c.participants.iter().any(|p| user_of(p) == user_id))
    }

    /// The calls `session_id` takes part in.
    pub fn calls_of_session(&self, session_id: &str) -> Vec<String> {
        self.read()
            .calls_by_id
            .values()
            .filter(|c| c.participants.iter().any(|p| p.session_id == session_id))
            .map(|c| c.id.clone())
            .collect()
    }

    pub fn call(&self, call_id: &str) -> Option<Call> {
        self.read().calls_by_id.get(call_id).cloned()
    }

    /// Applies a call's chat key at `revision` (`None`: deleted): the messages
    /// the mirror had not seen become notices, in order.
    pub fn apply_chat(
        &self,
        call_id: &str,
        chat: Option<CallChat>,
        revision: u64,
    ) -> Vec<CallNotice> {
        let mut state = self.write();
        state.calls.saw(&format!("chat:{call_id}"), revision);
        let Some(chat) = chat else {
            state.chats.remove(call_id);
            return Vec::new();
        };
        let state = &mut *state;
        let mirrored = state.chats.entry(call_id.to_owned()).or_default();
        if mirrored.call_created_at != chat.call_created_at {
            // Another call of that id (or the first sight of this chat).
            *mirrored = MirroredChat {
                call_created_at: chat.call_created_at,
                messages: Vec::new(),
            };
        }
        let last = mirrored.messages.last().map_or(0, |(_, m)| m.seq);
        let fresh: Vec<ChatMessage> = chat
            .messages
            .iter()
            .filter(|m| m.seq > last)
            .cloned()
            .collect();
        let kept: HashMap<u64, u64> = mirrored
            .messages
            .iter()
            .map(|(seen, m)| (m.seq, *seen))
            .collect();
        mirrored.messages = chat
            .messages
            .into_iter()
            .map(|m| (kept.get(&m.seq).copied().unwrap_or(revision), m))
            .collect();
        let Some(call) = state
            .calls_by_id
            .get(call_id)
            .filter(|c| c.created_at == chat.call_created_at)
        else {
            return Vec::new();
        };
        fresh
            .into_iter()
            .map(|message| CallNotice::Message {
                call: call.clone(),
                message,
            })
            .collect()
    }

    /// The chat of a live call a socket joined at `revision` (0: any time):
    /// the messages posted before (those after reach it as they come).
    pub fn chat_before(&self, call_id: &str, revision: u64) -> Vec<ChatMessage> {
        let state = self.read();
        let (Some(call), Some(chat)) = (state.calls_by_id.get(call_id), state.chats.get(call_id))
        else {
            return Vec::new();
        };
        if chat.call_created_at != call.created_at {
            return Vec::new();
        }
        chat.messages
            .iter()
            .filter(|(seen, _)| revision == 0 || *seen < revision)
            .map(|(_, m)| m.clone())
            .collect()
    }
}
