//! Call history for browsers: `get-call-history` (the registered user's own
//! calls, never anybody else's) and the `missed-calls` event after `user-joined`.
//! The records come from the history service, remote (`HISTORY_URL`) or, in the
//! embedded mode, the one in this process: the same gRPC API either way. They
//! are read into the history's own model (`meetup-history` without its
//! database code), so that there is one model of a call record.

use std::time::{Duration, UNIX_EPOCH};

use meetup_history::wire::{ms_from_timestamp, timestamp_from_ms};
use meetup_history::{CallPage, CallSnapshot, Millis, MissedCalls, now_ms};
use meetup_proto::history::v1 as pb;
use serde_json::{Value, json};

use crate::backends::HistoryClient;
use crate::protocol::ServerEvent;
use crate::protocol::ack::{Ack, AckError, ErrorCode};
use crate::protocol::inbound::HistoryQuery;
use crate::state::Gateway;

/// Most missed calls listed in one `missed-calls` event (`count` has them all).
pub const MISSED_CALLS_LISTED: u32 = 20;
/// Longest a registration waits for the missed calls.
pub const MISSED_CALLS_WAIT: Duration = Duration::from_secs(2);

/// The history service: a cheap-to-clone handle.
#[derive(Clone, Debug)]
pub struct History {
    client: HistoryClient,
}

impl History {
    pub fn new(client: HistoryClient) -> Self {
        History { client }
    }

    /// One page of `user_id`'s calls, newest first.
    pub async fn page(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<CallPage, AckError> {
        let response = self
            .client
            .clone()
            .list_user_calls(pb::ListUserCallsRequest {
                user_id: user_id.to_owned(),
                page_size: limit,
                page_token: before.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|status| AckError::from_status(&status, "list user calls"))?
            .into_inner();
        Ok(CallPage {
            calls: from_wire(response.calls)?,
            next: Some(response.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    /// `user_id`'s missed calls not seen yet (since their mark).
    pub async fn unseen_missed(&self, user_id: &str) -> Result<MissedCalls, AckError> {
        let response = self
            .client
            .clone()
            .list_missed_calls(pb::ListMissedCallsRequest {
                user_id: user_id.to_owned(),
                since: None,
                limit: MISSED_CALLS_LISTED,
            })
            .await
            .map_err(|status| AckError::from_status(&status, "list missed calls"))?
            .into_inner();
        Ok(MissedCalls {
            count: response.count,
            calls: from_wire(response.calls)?,
            newest: response.newest.as_ref().map(ms_from_timestamp),
        })
    }

    /// Missed calls of `user_id` that started up to `until` are not reported again.
    pub async fn mark_seen(&self, user_id: &str, until: Millis) -> Result<(), AckError> {
        self.client
            .clone()
            .mark_missed_calls_seen(pb::MarkMissedCallsSeenRequest {
                user_id: user_id.to_owned(),
                seen_until: Some(timestamp_from_ms(until)),
            })
            .await
            .map(|_| ())
            .map_err(|status| AckError::from_status(&status, "mark missed calls seen"))
    }
}

/// `get-call-history`: a page of the registered user's own calls. The user is
/// the socket's identity, whatever the payload says.
pub async fn get_call_history(
    history: &History,
    user_id: &str,
    query: HistoryQuery,
) -> Result<Ack, AckError> {
    let page = history
        .page(user_id, query.limit, query.before.as_deref())
        .await?;
    let calls: Vec<Value> = page.calls.iter().map(|c| call_json(c, user_id)).collect();
    Ok(Ack::History {
        calls,
        next: page.next,
    })
}

/// After a successful `user-joined`: sends `missed-calls` when the user missed
/// calls since they last saw them, then moves their mark so that the same calls
/// are not reported again. Sent before the `user-joined` acknowledgement (as
/// `ice-servers` is), so a client that waits for the ack has it already. Bounded
/// by [`MISSED_CALLS_WAIT`]: registration never waits long on the history, and
/// when the history is unavailable the calls come at the next registration.
pub async fn send_missed_calls(gw: &Gateway, session_id: &str, user_id: &str) {
    let history = gw.history();
    let missed = match tokio::time::timeout(MISSED_CALLS_WAIT, history.unseen_missed(user_id)).await
    {
        Ok(Ok(missed)) => missed,
        Ok(Err(error)) => {
            tracing::debug!(%user_id, code = %error.code, "missed calls not checked");
            return;
        }
        Err(_) => {
            tracing::warn!(%user_id, "missed calls not checked in time");
            return;
        }
    };
    let Some(newest) = missed.newest.filter(|_| missed.count > 0) else {
        return;
    };
    let calls: Vec<Value> = missed.calls.iter().map(|c| call_json(c, user_id)).collect();
    let event = ServerEvent::MissedCalls {
        count: missed.count,
        calls,
    };
    if !gw.send(session_id, &event) {
        tracing::debug!(%user_id, "missed-calls not sent");
        return;
    }
    if let Err(error) = history.mark_seen(user_id, newest).await {
        tracing::warn!(%user_id, code = %error.code, "missed calls not marked as seen");
    }
}

/// The user's last session ended: the missed calls up to now count as seen.
pub async fn session_ended(history: &History, user_id: &str) {
    if let Err(error) = history.mark_seen(user_id, now_ms()).await {
        tracing::debug!(%user_id, code = %error.code, "history mark not moved");
    }
}

/// A call as browsers see it, from `me`'s side.
pub fn call_json(call: &CallSnapshot, me: &str) -> Value {
    let attendees: Vec<Value> = call
        .attendees
        .iter()
        .map(|a| {
            json!({
                "id": a.user.id,
                "username": a.user.username,
                "invitedAt": a.invited_at.map(iso),
                "joinedAt": a.joined_at.map(iso),
                "leftAt": a.left_at.map(iso),
                "outcome": a.outcome.as_str(),
            })
        })
        .collect();
    let outgoing = call.initiator.id == me;
    json!({
        "callId": call.call_id,
        "isVideo": call.is_video,
        "startedAt": iso(call.created_at),
        "endedAt": call.ended_at.map(iso),
        "initiator": { "id": call.initiator.id, "username": call.initiator.username },
        "direction": if outgoing { "outgoing" } else { "incoming" },
        // The user's own outcome; none for the calls they started.
        "outcome": call.attendee(me).filter(|_| !outgoing).map(|a| a.outcome.as_str()),
        "attendees": attendees,
    })
}

fn iso(ms: Millis) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

/// A record the history sends that cannot be read (an outcome this gateway
/// does not know) is logged and answered as `internal`, never shown half-read.
fn from_wire(calls: Vec<pb::CallRecord>) -> Result<Vec<CallSnapshot>, AckError> {
    calls
        .into_iter()
        .map(CallSnapshot::try_from)
        .collect::<Result<_, _>>()
        .map_err(|error| {
            tracing::error!(%error, "call history record unreadable");
            AckError::new(ErrorCode::Internal, "internal error")
        })
}

#[cfg(test)]
mod tests {
    use meetup_history::{AttendeeSnapshot, Outcome, UserRef};

    use super::*;

    #[test]
    fn calls_are_shown_from_the_users_side() {
        let call = CallSnapshot {
            call_id: "c1".into(),
            initiator: UserRef {
                id: "a".into(),
                username: "Ann".into(),
            },
            is_video: false,
            created_at: 1_700_000_000_000,
            ended_at: None,
            version: 2,
            attendees: vec![AttendeeSnapshot {
                user: UserRef {
                    id: "b".into(),
                    username: "Bob".into(),
                },
                invited_at: Some(1_700_000_000_000),
                joined_at: None,
                left_at: None,
                outcome: Outcome::Missed,
            }],
        };
        let mine = call_json(&call, "a");
        assert_eq!(mine["direction"], "outgoing");
        assert_eq!(mine["outcome"], Value::Null);
        assert_eq!(mine["startedAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(mine["endedAt"], Value::Null);
        let theirs = call_json(&call, "b");
        assert_eq!(theirs["direction"], "incoming");
        assert_eq!(theirs["outcome"], "missed");
        assert_eq!(theirs["attendees"][0]["joinedAt"], Value::Null);
    }
}
