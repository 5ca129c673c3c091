//! The presence service's errors and their one mapping to gRPC status codes.

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("user {0:?} is not online")]
    UserNotFound(String),
    #[error("session {0:?} is not registered")]
    SessionNotFound(String),
    #[error("session {session_id:?} is registered to another user")]
    SessionTaken { session_id: String },
    #[error("user {user_id:?} already has {max} sessions")]
    TooManySessions { user_id: String, max: usize },
}

impl From<PresenceError> for tonic::Status {
    fn from(error: PresenceError) -> Self {
        let message = error.to_string();
        match error {
            PresenceError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            PresenceError::UserNotFound(_) | PresenceError::SessionNotFound(_) => {
                tonic::Status::not_found(message)
            }
            PresenceError::SessionTaken { .. } => tonic::Status::already_exists(message),
            PresenceError::TooManySessions { .. } => tonic::Status::resource_exhausted(message),
        }
    }
}

/// Longest id or username accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;

/// Checks a required string field: present and at most [`MAX_FIELD_BYTES`].
pub fn require(field: &str, value: &str) -> Result<(), PresenceError> {
    if value.is_empty() {
        return Err(PresenceError::InvalidArgument(format!(
            "{field} must not be empty"
        )));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(PresenceError::InvalidArgument(format!(
            "{field} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}
