//! Acknowledgement bodies, each shape written once ([`Ack`], [`AckError`]),
//! and the one mapping from failures to client error codes. Internal causes
//! are logged here and never sent to clients.

use serde::Serialize;
use serde_json::{Value, json};

use super::ServerEvent;

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

/// A successful acknowledgement, `{ ok: true, ...fields }`: one variant per
/// shape, the fields of each in the wire's camelCase.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum Ack {
    /// `user-joined`: the user's record, and (when sessions can be resumed)
    /// what the client needs to resume this one.
    Registered {
        user: Value,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        resume: Option<Resumable>,
    },
    /// `start-call` and `decline-call`: the call.
    Call { call_id: String },
    /// `join-call`: the call's participants now ([`super::outbound::public_participants`]).
    Joined {
        call_id: String,
        participants: Value,
    },
    /// `leave-call`: whether this socket was in the call.
    Left { call_id: String, left: bool },
    /// `cancel-call`: the users whose invitations stopped ringing.
    Cancelled {
        call_id: String,
        cancelled: Vec<String>,
    },
    /// `invite-to-call`: who rings now, and who could not be rung and why.
    Invited {
        call_id: String,
        invited: Vec<String>,
        busy: Vec<String>,
        unavailable: Vec<String>,
    },
    /// `call-message`: the message's id and time.
    MessageSent {
        call_id: String,
        id: String,
        sent_at: String,
    },
    /// `get-call-history`: a page of calls ([`crate::history::call_json`]),
    /// and the token of the next one (null on the last page).
    History {
        calls: Vec<Value>,
        next: Option<String>,
    },
    /// A relay went out, or was kept for its reconnecting target.
    Relayed {},
}

/// What a handler answers to one client event: the events this socket is
/// sent first, in order, then the ack. The socket's worker sends both, so
/// that order is decided in one place.
#[derive(Debug, Clone)]
pub struct Answer {
    pub events: Vec<ServerEvent>,
    pub ack: Ack,
}

impl Answer {
    /// `ack` after `events`.
    pub fn after(events: Vec<ServerEvent>, ack: Ack) -> Self {
        Answer { events, ack }
    }
}

impl From<Ack> for Answer {
    fn from(ack: Ack) -> Self {
        Answer::after(Vec::new(), ack)
    }
}

/// A refused client event: the events this socket is sent first (a
/// `join-call` of an unknown call is told `call-not-found`), then the error.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub events: Vec<ServerEvent>,
    pub error: AckError,
}

impl From<AckError> for Refusal {
    fn from(error: AckError) -> Self {
        Refusal {
            events: Vec::new(),
            error,
        }
    }
}

/// What a handler of a client event returns.
pub type Handled = Result<Answer, Refusal>;

/// What a registered socket needs to resume its session later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resumable {
    pub resume_token: String,
    /// Whether this socket took an away session over.
    pub resumed: bool,
    /// Whether nothing addressed to that session was lost meanwhile.
    pub recovered: bool,
}

impl Ack {
    /// The JSON the client receives. Built as a `Value` (whose keys serialize
    /// in order), so the wire text does not depend on the order fields are
    /// declared in here.
    pub fn body(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut fields)) => {
                fields.insert("ok".to_owned(), Value::Bool(true));
                Value::Object(fields)
            }
            // Strings, booleans and JSON values only: never reached.
            Ok(_) | Err(_) => {
                tracing::error!(?self, "ack not serializable");
                AckError::new(ErrorCode::Internal, "internal error").body()
            }
        }
    }
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
    }

    /// The wire text of an ack, as the socket sends it.
    fn wire(ack: Ack) -> String {
        serde_json::to_string(&ack.body()).expect("serializable")
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn each_ack_has_its_documented_shape_byte_for_byte() {
        let user = json!({"id": "u1", "username": "Ann", "joinedAt": "2026-01-01T00:00:00.000Z"});
        assert_eq!(
            wire(Ack::Registered {
                user: user.clone(),
                resume: None
            }),
            r#"{"ok":true,"user":{"id":"u1","joinedAt":"2026-01-01T00:00:00.000Z","username":"Ann"}}"#
        );
        assert_eq!(
            wire(Ack::Registered {
                user,
                resume: Some(Resumable {
                    resume_token: "t0k".into(),
                    resumed: true,
                    recovered: false,
                }),
            }),
            r#"{"ok":true,"recovered":false,"resumeToken":"t0k","resumed":true,"user":{"id":"u1","joinedAt":"2026-01-01T00:00:00.000Z","username":"Ann"}}"#
        );
        assert_eq!(
            wire(Ack::Call {
                call_id: "c1".into()
            }),
            r#"{"callId":"c1","ok":true}"#
        );
        assert_eq!(
            wire(Ack::Joined {
                call_id: "c1".into(),
                participants: json!([{"id": "u1", "username": "Ann"}]),
            }),
            r#"{"callId":"c1","ok":true,"participants":[{"id":"u1","username":"Ann"}]}"#
        );
        assert_eq!(
            wire(Ack::Left {
                call_id: "c1".into(),
                left: false
            }),
            r#"{"callId":"c1","left":false,"ok":true}"#
        );
        assert_eq!(
            wire(Ack::Cancelled {
                call_id: "c1".into(),
                cancelled: ids(&["u2", "u3"]),
            }),
            r#"{"callId":"c1","cancelled":["u2","u3"],"ok":true}"#
        );
        assert_eq!(
            wire(Ack::Invited {
                call_id: "c1".into(),
                invited: ids(&["u2"]),
                busy: ids(&["u3"]),
                unavailable: Vec::new(),
            }),
            r#"{"busy":["u3"],"callId":"c1","invited":["u2"],"ok":true,"unavailable":[]}"#
        );
        assert_eq!(
            wire(Ack::MessageSent {
                call_id: "c1".into(),
                id: "m1".into(),
                sent_at: "2026-01-01T00:00:00.000Z".into(),
            }),
            r#"{"callId":"c1","id":"m1","ok":true,"sentAt":"2026-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(
            wire(Ack::History {
                calls: vec![json!({"callId": "c1"})],
                next: Some("p2".into()),
            }),
            r#"{"calls":[{"callId":"c1"}],"next":"p2","ok":true}"#
        );
        // The last page says so with a null, not by leaving `next` out.
        assert_eq!(
            wire(Ack::History {
                calls: Vec::new(),
                next: None
            }),
            r#"{"calls":[],"next":null,"ok":true}"#
        );
        assert_eq!(wire(Ack::Relayed {}), r#"{"ok":true}"#);
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
