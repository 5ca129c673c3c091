//! What a user's record in the presence bucket says: decoding it, whether the
//! user is online, and the times on its sessions. Pure functions, shared by
//! every concern of the store and by the follow of the bucket.

use std::time::SystemTime;

use meetup_platform::store;
use meetup_proto::bus::v1::{PresenceChange, UserRecord, presence_change};
use meetup_proto::presence::v1::{OnlineUser, Session};
use prost::Message;

/// A user's record and the revision it was read at.
pub(super) struct Current {
    pub(super) record: UserRecord,
    pub(super) revision: u64,
}

impl Current {
    /// The user's sessions, away ones included.
    pub(super) fn sessions(&self) -> &[Session] {
        self.record
            .user
            .as_ref()
            .map(|u| u.sessions.as_slice())
            .unwrap_or_default()
    }
}

/// The record in `entry`; `None` for a deleted key or one that does not decode
/// (logged: a record no replica can read is a defect, not an offline user).
pub(super) fn decode(entry: &store::Entry) -> Option<UserRecord> {
    let value = entry.value.as_ref()?;
    match UserRecord::decode(value.clone()) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::error!(key = %entry.key, %error, "undecodable user record; treated as absent");
            None
        }
    }
}

/// The user of `record` when it holds a session: a record without sessions
/// says "offline" until its key is deleted.
pub(super) fn online(record: &UserRecord) -> Option<&OnlineUser> {
    record.user.as_ref().filter(|u| !u.sessions.is_empty())
}

/// The name of the change that wrote `record` ("" when it says none).
pub(super) fn change_name(record: &UserRecord) -> &'static str {
    record
        .change
        .as_ref()
        .and_then(|c| c.change.as_ref())
        .map(|c| match c {
            presence_change::Change::Registered(_) => "registered",
            presence_change::Change::Unregistered(_) => "unregistered",
            presence_change::Change::Away(_) => "away",
            presence_change::Change::Resumed(_) => "resumed",
        })
        .unwrap_or_default()
}

/// Notes on `record` the change that writes it and the trace of the request
/// behind it: what the followers of the bucket are told of the write.
pub(super) fn note_change(
    record: &mut UserRecord,
    change: presence_change::Change,
    traceparent: &str,
) {
    record.change = Some(PresenceChange {
        change: Some(change),
    });
    record.traceparent = traceparent.to_owned();
}

/// When an away session's time runs out (`None`: it is not away).
pub(super) fn away_until(session: &Session) -> Option<SystemTime> {
    session
        .away_until
        .and_then(|t| SystemTime::try_from(t).ok())
}

/// True when `session` was registered before `cutoff` (always without one; a
/// session without a time counts as old).
pub(super) fn registered_before(session: &Session, cutoff: Option<SystemTime>) -> bool {
    let Some(cutoff) = cutoff else { return true };
    session
        .registered_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .is_none_or(|t| t < cutoff)
}

/// `(user id, session id)` of every session of `users` that `pick` selects.
pub(super) fn sessions_where(
    users: &[OnlineUser],
    pick: impl Fn(&Session) -> bool,
) -> Vec<(String, String)> {
    users
        .iter()
        .flat_map(|u| {
            let user_id = u.user.as_ref().map(|u| u.id.clone()).unwrap_or_default();
            u.sessions
                .iter()
                .filter(|s| pick(s))
                .map(move |s| (user_id.clone(), s.session_id.clone()))
        })
        .collect()
}
