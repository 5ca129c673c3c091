//! The presence service's errors and their one mapping to gRPC status codes and
//! machine-readable reasons (`meetup-reason`).

use meetup_platform::BusError;
use meetup_platform::reason::{self, Reason};
use meetup_platform::store::{IsConflict, StoreError};
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("user {0:?} is not online")]
    UserNotFound(String),
    #[error("session {0:?} is not registered")]
    SessionNotFound(String),
    #[error("user {user_id:?} already has {max} sessions")]
    TooManySessions { user_id: String, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An application event could not be handed to the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl IsConflict for PresenceError {
    fn is_conflict(&self) -> bool {
        matches!(self, PresenceError::Store(StoreError::Conflict))
    }
}

impl From<PresenceError> for tonic::Status {
    fn from(error: PresenceError) -> Self {
        let message = error.to_string();
        let (code, why) = match &error {
            PresenceError::InvalidArgument(_) => (Code::InvalidArgument, Reason::InvalidArgument),
            PresenceError::UserNotFound(_) => (Code::NotFound, Reason::UserNotFound),
            PresenceError::SessionNotFound(_) => (Code::NotFound, Reason::SessionNotFound),
            PresenceError::TooManySessions { .. } => {
                (Code::ResourceExhausted, Reason::TooManySockets)
            }
            PresenceError::Store(StoreError::InvalidKey(_)) => {
                (Code::InvalidArgument, Reason::InvalidArgument)
            }
            PresenceError::Store(_) => {
                tracing::warn!(%error, "state store failed");
                (Code::Unavailable, Reason::Unavailable)
            }
            PresenceError::Bus(_) => {
                tracing::warn!(%error, "bus failed");
                (Code::Unavailable, Reason::Unavailable)
            }
        };
        reason::status(code, message, why)
    }
}

pub use meetup_platform::fields::MAX_FIELD_BYTES;

/// Checks a required string field: present and at most [`MAX_FIELD_BYTES`].
pub fn require(field: &str, value: &str) -> Result<(), PresenceError> {
    meetup_platform::fields::require(field, value).map_err(PresenceError::InvalidArgument)
}
