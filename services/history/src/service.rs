//! The `meetup.history.v1.HistoryService` gRPC API over the [`HistoryStore`]:
//! checks requests, converts wire types to and from the domain in one place.

use meetup_proto::history::v1 as pb;
use meetup_proto::history::v1::history_service_server::HistoryService;
use tonic::{Request, Response, Status};

use crate::error::{HistoryError, require};
use crate::record::{AttendeeSnapshot, CallSnapshot, Millis, Outcome, UserRef};
use crate::store::HistoryStore;

#[derive(Clone, Debug)]
pub struct HistoryGrpc {
    store: HistoryStore,
}

impl HistoryGrpc {
    pub fn new(store: HistoryStore) -> Self {
        HistoryGrpc { store }
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryGrpc {
    async fn list_user_calls(
        &self,
        request: Request<pb::ListUserCallsRequest>,
    ) -> Result<Response<pb::ListUserCallsResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let token = Some(request.page_token.as_str()).filter(|t| !t.is_empty());
        let page = self
            .store
            .list_user_calls(&request.user_id, request.page_size, token)
            .await?;
        Ok(Response::new(pb::ListUserCallsResponse {
            calls: page.calls.iter().map(call_to_wire).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_call_record(
        &self,
        request: Request<pb::GetCallRecordRequest>,
    ) -> Result<Response<pb::GetCallRecordResponse>, Status> {
        let request = request.into_inner();
        require("call_id", &request.call_id)?;
        let call = self.store.get_call(&request.call_id).await?;
        Ok(Response::new(pb::GetCallRecordResponse {
            call: Some(call_to_wire(&call)),
        }))
    }

    async fn delete_user_history(
        &self,
        request: Request<pb::DeleteUserHistoryRequest>,
    ) -> Result<Response<pb::DeleteUserHistoryResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let forgotten = self.store.delete_user(&request.user_id, now_ms()).await?;
        tracing::info!(
            user_id = %request.user_id,
            attendee_rows = forgotten.attendee_rows,
            calls_anonymised = forgotten.calls_anonymised,
            calls_removed = forgotten.calls_removed,
            "user history deleted"
        );
        Ok(Response::new(pb::DeleteUserHistoryResponse {
            attendee_rows: forgotten.attendee_rows,
            calls_anonymised: forgotten.calls_anonymised,
            calls_removed: forgotten.calls_removed,
        }))
    }

    async fn list_missed_calls(
        &self,
        request: Request<pb::ListMissedCallsRequest>,
    ) -> Result<Response<pb::ListMissedCallsResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let since = match &request.since {
            Some(since) => ms_from_timestamp(since),
            None => self.store.seen_until(&request.user_id).await?.unwrap_or(0),
        };
        let missed = self
            .store
            .missed_calls(&request.user_id, since, request.limit)
            .await?;
        Ok(Response::new(pb::ListMissedCallsResponse {
            count: missed.count,
            calls: missed.calls.iter().map(call_to_wire).collect(),
            newest: missed.newest.map(timestamp_from_ms),
        }))
    }

    async fn mark_missed_calls_seen(
        &self,
        request: Request<pb::MarkMissedCallsSeenRequest>,
    ) -> Result<Response<pb::MarkMissedCallsSeenResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let until = request
            .seen_until
            .as_ref()
            .map(ms_from_timestamp)
            .ok_or_else(|| HistoryError::InvalidArgument("seen_until is required".into()))?;
        self.store.mark_seen(&request.user_id, until).await?;
        Ok(Response::new(pb::MarkMissedCallsSeenResponse {}))
    }
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn timestamp_from_ms(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms_from_timestamp(ts: &prost_types::Timestamp) -> Millis {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

pub fn outcome_to_wire(outcome: Outcome) -> pb::Outcome {
    match outcome {
        Outcome::Ringing => pb::Outcome::Ringing,
        Outcome::Answered => pb::Outcome::Answered,
        Outcome::Declined => pb::Outcome::Declined,
        Outcome::Missed => pb::Outcome::Missed,
        Outcome::Cancelled => pb::Outcome::Cancelled,
        Outcome::Busy => pb::Outcome::Busy,
    }
}

pub fn outcome_from_wire(outcome: pb::Outcome) -> Option<Outcome> {
    match outcome {
        pb::Outcome::Unspecified => None,
        pb::Outcome::Ringing => Some(Outcome::Ringing),
        pb::Outcome::Answered => Some(Outcome::Answered),
        pb::Outcome::Declined => Some(Outcome::Declined),
        pb::Outcome::Missed => Some(Outcome::Missed),
        pb::Outcome::Cancelled => Some(Outcome::Cancelled),
        pb::Outcome::Busy => Some(Outcome::Busy),
    }
}

fn user_to_wire(user: &UserRef) -> pb::User {
    pb::User {
        id: user.id.clone(),
        username: user.username.clone(),
    }
}

pub fn call_to_wire(call: &CallSnapshot) -> pb::CallRecord {
    pb::CallRecord {
        call_id: call.call_id.clone(),
        initiator: Some(user_to_wire(&call.initiator)),
        is_video: call.is_video,
        created_at: Some(timestamp_from_ms(call.created_at)),
        ended_at: call.ended_at.map(timestamp_from_ms),
        version: call.version,
        attendees: call
            .attendees
            .iter()
            .map(|a| pb::Attendee {
                user: Some(user_to_wire(&a.user)),
                invited_at: a.invited_at.map(timestamp_from_ms),
                joined_at: a.joined_at.map(timestamp_from_ms),
                left_at: a.left_at.map(timestamp_from_ms),
                outcome: outcome_to_wire(a.outcome) as i32,
            })
            .collect(),
    }
}

/// A record read back from the API (the gateway's remote mode).
impl TryFrom<pb::CallRecord> for CallSnapshot {
    type Error = HistoryError;

    fn try_from(call: pb::CallRecord) -> Result<Self, Self::Error> {
        let user = |u: Option<pb::User>| {
            let u = u.unwrap_or_default();
            UserRef {
                id: u.id,
                username: u.username,
            }
        };
        let attendees = call
            .attendees
            .into_iter()
            .map(|a| {
                let outcome = pb::Outcome::try_from(a.outcome)
                    .ok()
                    .and_then(outcome_from_wire)
                    .ok_or_else(|| HistoryError::Corrupt(format!("outcome {}", a.outcome)))?;
                Ok(AttendeeSnapshot {
                    user: user(a.user),
                    invited_at: a.invited_at.as_ref().map(ms_from_timestamp),
                    joined_at: a.joined_at.as_ref().map(ms_from_timestamp),
                    left_at: a.left_at.as_ref().map(ms_from_timestamp),
                    outcome,
                })
            })
            .collect::<Result<Vec<_>, HistoryError>>()?;
        Ok(CallSnapshot {
            call_id: call.call_id,
            initiator: user(call.initiator),
            is_video: call.is_video,
            created_at: call.created_at.as_ref().map(ms_from_timestamp).unwrap_or(0),
            ended_at: call.ended_at.as_ref().map(ms_from_timestamp),
            version: call.version,
            attendees,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_milliseconds() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(ms_from_timestamp(&timestamp_from_ms(ms)), ms);
        }
    }

    #[test]
    fn records_round_trip_through_the_wire_type() {
        let call = CallSnapshot {
            call_id: "c1".into(),
            initiator: UserRef {
                id: "a".into(),
                username: "Ann".into(),
            },
            is_video: true,
            created_at: 1_000,
            ended_at: Some(9_000),
            version: 7,
            attendees: Outcome::ALL
                .into_iter()
                .enumerate()
                .map(|(n, outcome)| AttendeeSnapshot {
                    user: UserRef {
                        id: format!("u{n}"),
                        username: format!("User {n}"),
                    },
                    invited_at: Some(1_000),
                    joined_at: (outcome == Outcome::Answered).then_some(2_000),
                    left_at: None,
                    outcome,
                })
                .collect(),
        };
        assert_eq!(CallSnapshot::try_from(call_to_wire(&call)).ok(), Some(call));
    }
}
