//! A call of the history as the gateway reads it from the history service and
//! shows it to browsers: the wire type (`meetup.history.v1.CallRecord`) is read
//! into these once, here. The history service keeps its own domain types; the
//! gateway needs only what browsers are shown, and no database code.

use meetup_proto::history::v1 as pb;

/// Unix time in milliseconds.
pub type Millis = i64;

/// What became of one invitee or participant of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Invited, the call is still live, and they have not answered yet.
    Ringing,
    Answered,
    Declined,
    Missed,
    /// The initiator gave up before they answered.
    Cancelled,
    Busy,
}

impl Outcome {
    /// The name shown to browsers.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ringing => "ringing",
            Outcome::Answered => "answered",
            Outcome::Declined => "declined",
            Outcome::Missed => "missed",
            Outcome::Cancelled => "cancelled",
            Outcome::Busy => "busy",
        }
    }

    fn from_wire(outcome: i32) -> Option<Outcome> {
        match pb::Outcome::try_from(outcome).ok()? {
            pb::Outcome::Unspecified => None,
            pb::Outcome::Ringing => Some(Outcome::Ringing),
            pb::Outcome::Answered => Some(Outcome::Answered),
            pb::Outcome::Declined => Some(Outcome::Declined),
            pb::Outcome::Missed => Some(Outcome::Missed),
            pb::Outcome::Cancelled => Some(Outcome::Cancelled),
            pb::Outcome::Busy => Some(Outcome::Busy),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: String,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttendeeSnapshot {
    pub user: UserRef,
    pub invited_at: Option<Millis>,
    pub joined_at: Option<Millis>,
    pub left_at: Option<Millis>,
    pub outcome: Outcome,
}

/// One call as the history has it: every invitee and participant so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    pub call_id: String,
    pub initiator: UserRef,
    pub is_video: bool,
    pub created_at: Millis,
    /// `None` while the call is live.
    pub ended_at: Option<Millis>,
    pub version: u64,
    pub attendees: Vec<AttendeeSnapshot>,
}

impl CallSnapshot {
    /// The attendee row of `user_id`, if they were invited or took part.
    pub fn attendee(&self, user_id: &str) -> Option<&AttendeeSnapshot> {
        self.attendees.iter().find(|a| a.user.id == user_id)
    }
}

/// One page of a user's calls, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPage {
    pub calls: Vec<CallSnapshot>,
    /// Opaque token of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A user's missed calls since their mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedCalls {
    /// All missed calls since then, not only those listed.
    pub count: u64,
    /// The newest ones, newest first.
    pub calls: Vec<CallSnapshot>,
    /// Start of the newest missed call counted.
    pub newest: Option<Millis>,
}

/// A record with an outcome this gateway does not know.
#[derive(Debug, thiserror::Error)]
#[error("call record {call_id:?} has an unknown outcome {outcome}")]
pub struct UnknownOutcome {
    pub call_id: String,
    pub outcome: i32,
}

impl TryFrom<pb::CallRecord> for CallSnapshot {
    type Error = UnknownOutcome;

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
                let outcome = Outcome::from_wire(a.outcome).ok_or_else(|| UnknownOutcome {
                    call_id: call.call_id.clone(),
                    outcome: a.outcome,
                })?;
                Ok(AttendeeSnapshot {
                    user: user(a.user),
                    invited_at: a.invited_at.as_ref().map(ms_from_timestamp),
                    joined_at: a.joined_at.as_ref().map(ms_from_timestamp),
                    left_at: a.left_at.as_ref().map(ms_from_timestamp),
                    outcome,
                })
            })
            .collect::<Result<Vec<_>, UnknownOutcome>>()?;
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
    fn every_outcome_on_the_wire_is_read_and_an_unknown_one_refused() {
        let attendee = |outcome: pb::Outcome| pb::Attendee {
            user: Some(pb::User {
                id: "b".into(),
                username: "Bob".into(),
            }),
            outcome: outcome as i32,
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
            known.iter().map(|(wire, _)| attendee(*wire)).collect(),
        ))
        .expect("known outcomes");
        let names: Vec<&str> = read.attendees.iter().map(|a| a.outcome.as_str()).collect();
        let expected: Vec<&str> = known.iter().map(|(_, name)| *name).collect();
        assert_eq!(names, expected);
        assert_eq!(read.created_at, 1_000);
        assert!(CallSnapshot::try_from(record(vec![attendee(pb::Outcome::Unspecified)])).is_err());
    }
}
