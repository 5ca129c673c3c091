//! The history service's errors and their one mapping to gRPC statuses, each with
//! a machine-readable reason in the `meetup-reason` metadata key. Database causes
//! are logged here and never sent to callers. The database variants exist with
//! the `store` feature only: without it the crate has no database code.

use meetup_platform::reason::{self, Reason};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the page token is not one this service issued")]
    InvalidPageToken,
    #[error("no call record has id {0:?}")]
    CallNotFound(String),
    #[cfg(feature = "store")]
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[cfg(feature = "store")]
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

impl HistoryError {
    /// The reason sent in `meetup-reason`.
    pub fn reason(&self) -> Reason {
        match self {
            HistoryError::InvalidArgument(_) => Reason::InvalidArgument,
            HistoryError::InvalidPageToken => Reason::InvalidPageToken,
            HistoryError::CallNotFound(_) => Reason::CallNotFound,
            #[cfg(feature = "store")]
            HistoryError::Database(_) | HistoryError::Migration(_) => Reason::DatabaseUnavailable,
            HistoryError::Corrupt(_) => Reason::Internal,
        }
    }
}

impl From<HistoryError> for tonic::Status {
    fn from(error: HistoryError) -> Self {
        let mut status = match &error {
            HistoryError::InvalidArgument(_) | HistoryError::InvalidPageToken => {
                tonic::Status::invalid_argument(error.to_string())
            }
            HistoryError::CallNotFound(_) => tonic::Status::not_found(error.to_string()),
            #[cfg(feature = "store")]
            HistoryError::Database(_) | HistoryError::Migration(_) => {
                tracing::warn!(%error, "history database failed");
                tonic::Status::unavailable("the history database is unavailable; try again")
            }
            HistoryError::Corrupt(_) => {
                tracing::error!(%error, "history record unreadable");
                tonic::Status::internal("internal error")
            }
        };
        reason::attach(&mut status, error.reason());
        status
    }
}

pub use meetup_platform::fields::MAX_FIELD_BYTES;

/// Checks a required string field: present and at most [`MAX_FIELD_BYTES`].
pub fn require(field: &str, value: &str) -> Result<(), HistoryError> {
    meetup_platform::fields::require(field, value).map_err(HistoryError::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "store")]
    #[test]
    fn statuses_carry_a_reason_and_no_database_detail() {
        let status = tonic::Status::from(HistoryError::CallNotFound("c1".into()));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(
            status
                .metadata()
                .get(reason::KEY)
                .and_then(|v| v.to_str().ok()),
            Some("call-not-found")
        );
        let status = tonic::Status::from(HistoryError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("pool"));
        assert_eq!(
            status
                .metadata()
                .get(reason::KEY)
                .and_then(|v| v.to_str().ok()),
            Some("database-unavailable")
        );
    }

    /// What a record the wire conversion refuses becomes: the cause is logged,
    /// never sent.
    #[test]
    fn a_corrupt_record_is_internal_without_its_detail() {
        let status = tonic::Status::from(HistoryError::Corrupt("outcome 99".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(
            status
                .metadata()
                .get(reason::KEY)
                .and_then(|v| v.to_str().ok()),
            Some("internal")
        );
    }
}
