//! Machine-readable failure reasons on gRPC errors: every service error carries
//! one in the `meetup-reason` metadata key, so that a caller (the gateway's one
//! mapping to client ack codes) never guesses the cause from the status code or
//! from which call failed.

use tonic::{Code, Status};

/// The metadata key that carries the reason.
pub const KEY: &str = "meetup-reason";

/// A status with `message` for humans and `reason` for programs.
pub fn status(code: Code, message: impl Into<String>, reason: &'static str) -> Status {
    let mut status = Status::new(code, message);
    if let Ok(value) = reason.parse() {
        status.metadata_mut().insert(KEY, value);
    }
    status
}

/// The reason a status carries, if any.
pub fn of(status: &Status) -> Option<&str> {
    status.metadata().get(KEY).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_travels_with_the_status() {
        let s = status(Code::AlreadyExists, "call c1 exists", "call-exists");
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(of(&s), Some("call-exists"));
        assert_eq!(of(&Status::internal("x")), None);
    }
}
