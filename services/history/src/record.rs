//! The domain types of the history: a call as one complete snapshot, and what
//! became of each invitee and participant. Wire types (gRPC, bus) are converted
//! to and from these in one place each (`wire`, `source`). No database here:
//! the gateway reads records into these types too.

/// Unix time in milliseconds.
pub type Millis = i64;

/// The current Unix time in milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What became of one invitee or participant of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    pub const ALL: [Outcome; 6] = [
        Outcome::Ringing,
        Outcome::Answered,
        Outcome::Declined,
        Outcome::Missed,
        Outcome::Cancelled,
        Outcome::Busy,
    ];

    /// The name stored in the database and shown to browsers.
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

    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
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

/// A complete picture of one call at one version: every revision carries all the
/// attendees so far, so the newest revision alone is the record. Also what the
/// reads return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    pub call_id: String,
    pub initiator: UserRef,
    pub is_video: bool,
    pub created_at: Millis,
    /// `None` while the call is live.
    pub ended_at: Option<Millis>,
    /// Bumped on every change of the call; a lower or equal version is old news.
    pub version: u64,
    pub attendees: Vec<AttendeeSnapshot>,
}

impl CallSnapshot {
    /// Every user the record belongs to (the initiator first), each once.
    pub fn user_ids(&self) -> Vec<&str> {
        let mut ids = vec![self.initiator.id.as_str()];
        for a in &self.attendees {
            if !ids.contains(&a.user.id.as_str()) {
                ids.push(a.user.id.as_str());
            }
        }
        ids
    }

    /// The attendee row of `user_id`, if they were invited or took part.
    pub fn attendee(&self, user_id: &str) -> Option<&AttendeeSnapshot> {
        self.attendees.iter().find(|a| a.user.id == user_id)
    }
}

/// What [`crate::HistoryStore::apply`] did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Written: it was newer than the stored record (or the first).
    Yes,
    /// Ignored: the stored record has this version or a newer one.
    Stale,
}

/// One page of a user's calls, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPage {
    pub calls: Vec<CallSnapshot>,
    /// Opaque token of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A user's missed calls since a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedCalls {
    /// All missed calls since then, not only those listed.
    pub count: u64,
    /// The newest ones, newest first.
    pub calls: Vec<CallSnapshot>,
    /// Start of the newest missed call counted.
    pub newest: Option<Millis>,
}

/// What [`crate::HistoryStore::delete_user`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub attendee_rows: u64,
    pub calls_anonymised: u64,
    pub calls_removed: u64,
}
