//! The history's domain and the wire, converted in one place: a record of the
//! gRPC API (`meetup.history.v1.CallRecord`) both ways, and the protobuf
//! timestamps every wire of ours uses. No database here: the service writes
//! records with it and the gateway reads them with it.

use meetup_proto::history::v1 as pb;

use crate::error::HistoryError;
use crate::record::{AttendeeSnapshot, CallSnapshot, Millis, Outcome, UserRef};

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

/// A record read back from the API (by the gateway). An outcome that is not
/// one of ours is [`HistoryError::Corrupt`]: the record cannot be shown.
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
                    .ok_or_else(|| {
                        HistoryError::Corrupt(format!(
                            "call {:?} has an unknown outcome {}",
                            call.call_id, a.outcome
                        ))
                    })?;
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

    /// What the gateway shows for each wire outcome, and that a record with
    /// an outcome we do not know is refused rather than shown wrong.
    #[test]
    fn every_outcome_on_the_wire_is_read_and_an_unknown_one_refused() {
        let attendee = |outcome: i32| pb::Attendee {
            user: Some(pb::User {
                id: "b".into(),
                username: "Bob".into(),
            }),
            outcome,
            ..Default::default()
        };
        let record = |attendees| pb::CallRecord {
            call_id: "c1".into(),
            created_at: Some(timestamp_from_ms(1_000)),
            attendees,
            ..Default::default()
        };
        let known = [
            (pb::Outcome::Ringing, "ringing"),
            (pb::Outcome::Answered, "answered"),
            (pb::Outcome::Declined, "declined"),
            (pb::Outcome::Missed, "missed"),
            (pb::Outcome::Cancelled, "cancelled"),
            (pb::Outcome::Busy, "busy"),
        ];
        let read = CallSnapshot::try_from(record(
            known
                .iter()
                .map(|(wire, _)| attendee(*wire as i32))
                .collect(),
        ))
        .expect("known outcomes");
        let names: Vec<&str> = read.attendees.iter().map(|a| a.outcome.as_str()).collect();
        let expected: Vec<&str> = known.iter().map(|(_, name)| *name).collect();
        assert_eq!(names, expected);
        assert_eq!(read.created_at, 1_000);
        for unknown in [pb::Outcome::Unspecified as i32, 99] {
            let refused = CallSnapshot::try_from(record(vec![attendee(unknown)]));
            assert!(
                matches!(&refused, Err(HistoryError::Corrupt(why)) if why.contains("\"c1\"")),
                "{refused:?}"
            );
        }
    }
}
