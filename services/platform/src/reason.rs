//! Machine-readable failure reasons on gRPC errors: every service error carries
//! one in the `meetup-reason` metadata key, so that a caller (the gateway's one
//! mapping to client ack codes) never guesses the cause from the status code or
//! from which call failed. One enum for the services that set reasons and the
//! callers that read them; its strings are the wire form.

use tonic::{Code, Status};

/// The metadata key that carries the reason.
pub const KEY: &str = "meetup-reason";

/// Why a service refused or failed a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidArgument,
    /// Calls: no live call has the id.
    CallNotFound,
    /// Calls: the session or user is not in the call.
    NotInCall,
    /// Calls: no invitation rings for the user.
    NotInvited,
    /// Calls: a live call already has the id.
    CallExists,
    CallFull,
    TooManyCalls,
    /// Presence: the user is not online.
    UserNotFound,
    SessionNotFound,
    /// Presence: the user has too many sessions.
    TooManySockets,
    /// The state store failed; retrying may help.
    Unavailable,
    /// History: the page token is not one the service gave.
    InvalidPageToken,
    DatabaseUnavailable,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::InvalidArgument,
        Reason::CallNotFound,
        Reason::NotInCall,
        Reason::NotInvited,
        Reason::CallExists,
        Reason::CallFull,
        Reason::TooManyCalls,
        Reason::UserNotFound,
        Reason::SessionNotFound,
        Reason::TooManySockets,
        Reason::Unavailable,
        Reason::InvalidPageToken,
        Reason::DatabaseUnavailable,
        Reason::Internal,
    ];

    /// The reason as the metadata carries it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "invalid-argument",
            Reason::CallNotFound => "call-not-found",
            Reason::NotInCall => "not-in-call",
            Reason::NotInvited => "not-invited",
            Reason::CallExists => "call-exists",
            Reason::CallFull => "call-full",
            Reason::TooManyCalls => "too-many-calls",
            Reason::UserNotFound => "user-not-found",
            Reason::SessionNotFound => "session-not-found",
            Reason::TooManySockets => "too-many-sockets",
            Reason::Unavailable => "unavailable",
            Reason::InvalidPageToken => "invalid-page-token",
            Reason::DatabaseUnavailable => "database-unavailable",
            Reason::Internal => "internal",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status with `message` for humans and `reason` for programs.
pub fn status(code: Code, message: impl Into<String>, reason: Reason) -> Status {
    let mut status = Status::new(code, message);
    attach(&mut status, reason);
    status
}

/// Puts `reason` on `status`.
pub fn attach(status: &mut Status, reason: Reason) {
    status.metadata_mut().insert(
        KEY,
        tonic::metadata::MetadataValue::from_static(reason.as_str()),
    );
}

/// The reason a status carries, if it carries one this build knows.
pub fn of(status: &Status) -> Option<Reason> {
    status
        .metadata()
        .get(KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(Reason::parse)
}

/// Whether a service answered with a reason at all (known to this build or
/// not): the call reached a service, it was not the transport that failed.
pub fn carries_one(status: &Status) -> bool {
    status.metadata().get(KEY).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_travels_with_the_status() {
        let s = status(Code::AlreadyExists, "call c1 exists", Reason::CallExists);
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(of(&s), Some(Reason::CallExists));
        assert_eq!(
            s.metadata().get(KEY).and_then(|v| v.to_str().ok()),
            Some("call-exists")
        );
        assert_eq!(of(&Status::internal("x")), None);
        assert!(!carries_one(&Status::internal("x")));
    }

    #[test]
    fn every_reason_reads_back_and_an_unknown_one_still_counts_as_answered() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        let mut s = Status::unavailable("newer service");
        s.metadata_mut()
            .insert(KEY, "some-future-reason".parse().expect("ascii"));
        assert_eq!(of(&s), None);
        assert!(carries_one(&s));
    }
}
