//! The call service's errors and their one mapping to gRPC status codes and
//! machine-readable reasons (`meetup-reason`).

use meetup_platform::reason::{self, Reason};
use meetup_platform::store::{IsConflict, StoreError};
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("call {0:?} not found")]
    CallNotFound(String),
    #[error("call {0:?} already exists")]
    CallExists(String),
    #[error("user {user_id:?} is not in call {call_id:?}")]
    NotParticipant { call_id: String, user_id: String },
    #[error("user {user_id:?} has no ringing invitation to call {call_id:?}")]
    NotInvited { call_id: String, user_id: String },
    #[error("call {call_id:?} is full ({max} participants)")]
    CallFull { call_id: String, max: usize },
    #[error("user {user_id:?} already has {max} live calls")]
    TooManyCalls { user_id: String, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IsConflict for CallError {
    fn is_conflict(&self) -> bool {
        matches!(self, CallError::Store(StoreError::Conflict))
    }
}

impl From<CallError> for tonic::Status {
    fn from(error: CallError) -> Self {
        let message = error.to_string();
        let (code, why) = match &error {
            CallError::InvalidArgument(_) | CallError::Store(StoreError::InvalidKey(_)) => {
                (Code::InvalidArgument, Reason::InvalidArgument)
            }
            CallError::CallNotFound(_) => (Code::NotFound, Reason::CallNotFound),
            CallError::NotParticipant { .. } => (Code::NotFound, Reason::NotInCall),
            CallError::NotInvited { .. } => (Code::FailedPrecondition, Reason::NotInvited),
            CallError::CallExists(_) => (Code::AlreadyExists, Reason::CallExists),
            CallError::CallFull { .. } => (Code::ResourceExhausted, Reason::CallFull),
            CallError::TooManyCalls { .. } => (Code::ResourceExhausted, Reason::TooManyCalls),
            CallError::Store(_) => {
                tracing::warn!(%error, "state store failed");
                (Code::Unavailable, Reason::Unavailable)
            }
        };
        reason::status(code, message, why)
    }
}

pub use meetup_platform::fields::MAX_FIELD_BYTES;
/// Most users one `StartCall` may invite.
pub const MAX_INVITED: usize = 64;

/// Checks a required string field: present and at most [`MAX_FIELD_BYTES`].
pub fn require(field: &str, value: &str) -> Result<(), CallError> {
    meetup_platform::fields::require(field, value).map_err(CallError::InvalidArgument)
}
