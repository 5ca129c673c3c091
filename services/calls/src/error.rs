//! The call service's errors and their one mapping to gRPC status codes.

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
    #[error("call {call_id:?} is full ({max} participants)")]
    CallFull { call_id: String, max: usize },
    #[error("user {user_id:?} already has {max} live calls")]
    TooManyCalls { user_id: String, max: usize },
}

impl From<CallError> for tonic::Status {
    fn from(error: CallError) -> Self {
        let message = error.to_string();
        match error {
            CallError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            CallError::CallNotFound(_) | CallError::NotParticipant { .. } => {
                tonic::Status::not_found(message)
            }
            CallError::CallExists(_) => tonic::Status::already_exists(message),
            CallError::CallFull { .. } | CallError::TooManyCalls { .. } => {
                tonic::Status::resource_exhausted(message)
            }
        }
    }
}

/// Longest id or username accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;
/// Most users one `StartCall` may invite.
pub const MAX_INVITED: usize = 64;

/// Checks a required string field: present and at most [`MAX_FIELD_BYTES`].
pub fn require(field: &str, value: &str) -> Result<(), CallError> {
    if value.is_empty() {
        return Err(CallError::InvalidArgument(format!(
            "{field} must not be empty"
        )));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(CallError::InvalidArgument(format!(
            "{field} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}
