//! Acknowledgement bodies and the one mapping from failures to client error codes.
//! Internal causes are logged here and never sent to clients.

use serde_json::{Value, json};

/// A client-visible failure: `{ ok: false, error: { code, message } }`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AckError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidPayload,
    PayloadTooLarge,
    NotRegistered,
    AlreadyRegistered,
    Forbidden,
    CallExists,
    CallNotFound,
    NotInCall,
    UserOffline,
    Overloaded,
    RateLimited,
    TooManySockets,
    TooManyCalls,
    CallFull,
    Unavailable,
    Internal,
    ResumeRefused,
    NotInvited,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPayload => "invalid-payload",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::NotRegistered => "not-registered",
            ErrorCode::AlreadyRegistered => "already-registered",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CallExists => "call-exists",
            ErrorCode::CallNotFound => "call-not-found",
            ErrorCode::NotInCall => "not-in-call",
            ErrorCode::UserOffline => "user-offline",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::TooManySockets => "too-many-sockets",
            ErrorCode::TooManyCalls => "too-many-calls",
            ErrorCode::CallFull => "call-full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::ResumeRefused => "resume-refused",
            ErrorCode::NotInvited => "not-invited",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AckError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AckError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        AckError::new(ErrorCode::InvalidPayload, message)
    }

    pub fn not_registered() -> Self {
        AckError::new(
            ErrorCode::NotRegistered,
            "send user-joined before anything else",
        )
    }

    pub fn body(&self) -> Value {
        json!({ "ok": false, "error": { "code": self.code.as_str(), "message": self.message } })
    }

    /// The one mapping from a failed service call to a client ack: by the
    /// machine-readable reason the services attach (`meetup-reason`), else, for
    /// failures that never reached a service, by the status code. `context`
    /// names the action for the log; internal causes are logged, never sent.
    pub fn from_status(status: &tonic::Status, context: &'static str) -> Self {
        use meetup_platform::reason::Reason;
        use tonic::Code;
        crate::metrics::get().grpc_error(context, status.code());
        let refused = |code, message: &str| AckError::new(code, message);
        match meetup_platform::reason::of(status) {
            Some(Reason::InvalidArgument) => return AckError::invalid(status.message().to_owned()),
            Some(Reason::CallExists) => {
                return refused(ErrorCode::CallExists, "a live call already has this id");
            }
            Some(Reason::CallNotFound) => {
                return refused(ErrorCode::CallNotFound, "no live call has this id");
            }
            Some(Reason::CallFull) => return refused(ErrorCode::CallFull, "this call is full"),
            Some(Reason::TooManyCalls) => {
                return refused(
                    ErrorCode::TooManyCalls,
                    "you have started too many live calls",
                );
            }
            Some(Reason::TooManySockets) => {
                return refused(
                    ErrorCode::TooManySockets,
                    "this user id has too many sockets open",
                );
            }
            Some(Reason::NotInCall) => {
                return refused(ErrorCode::NotInCall, "that user is not in this call");
            }
            Some(Reason::NotInvited) => {
                return refused(
                    ErrorCode::NotInvited,
                    "no invitation to this call rings for you",
                );
            }
            _ => {}
        }
        match status.code() {
            Code::InvalidArgument => AckError::invalid(status.message().to_owned()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                tracing::warn!(action = context, code = ?status.code(), error = status.message(), "backing service unavailable");
                AckError::new(
                    ErrorCode::Unavailable,
                    "a backing service is unavailable; nothing changed, try again",
                )
            }
            code => {
                tracing::error!(
                    action = context,
                    ?code,
                    error = status.message(),
                    "backing service failed"
                );
                AckError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// `{ ok: true, ...fields }`.
pub fn ok(fields: Value) -> Value {
    let mut body = json!({ "ok": true });
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_documented_shape() {
        let e = AckError::new(ErrorCode::CallExists, "taken");
        assert_eq!(
            e.body(),
            json!({"ok": false, "error": {"code": "call-exists", "message": "taken"}})
        );
        assert_eq!(
            ok(json!({"callId": "c"})),
            json!({"ok": true, "callId": "c"})
        );
        assert_eq!(ok(json!({})), json!({"ok": true}));
    }

    #[test]
    fn unreachable_services_are_unavailable_and_the_rest_internal() {
        let e = AckError::from_status(&tonic::Status::unavailable("conn refused"), "test");
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(!e.message.contains("refused"), "no internals leak");
        let e = AckError::from_status(&tonic::Status::internal("db on fire"), "test");
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("fire"));
    }

    #[test]
    fn service_reasons_pick_the_ack_code() {
        use meetup_platform::reason::{self, Reason};
        use tonic::Code;
        for (code, why, expected) in [
            (
                Code::AlreadyExists,
                Reason::CallExists,
                ErrorCode::CallExists,
            ),
            (
                Code::NotFound,
                Reason::CallNotFound,
                ErrorCode::CallNotFound,
            ),
            (
                Code::ResourceExhausted,
                Reason::CallFull,
                ErrorCode::CallFull,
            ),
            (
                Code::ResourceExhausted,
                Reason::TooManyCalls,
                ErrorCode::TooManyCalls,
            ),
            (
                Code::ResourceExhausted,
                Reason::TooManySockets,
                ErrorCode::TooManySockets,
            ),
            (
                Code::InvalidArgument,
                Reason::InvalidArgument,
                ErrorCode::InvalidPayload,
            ),
            (
                Code::Unavailable,
                Reason::Unavailable,
                ErrorCode::Unavailable,
            ),
            (Code::NotFound, Reason::NotInCall, ErrorCode::NotInCall),
            (
                Code::FailedPrecondition,
                Reason::NotInvited,
                ErrorCode::NotInvited,
            ),
        ] {
            let e = AckError::from_status(&reason::status(code, "m", why), "test");
            assert_eq!(e.code, expected, "{why}");
        }
    }
}
