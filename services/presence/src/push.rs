//! Application events for a user's sockets (`SendToUser`): one bus message
//! per gateway holding a live session of the user, on that gateway's push
//! subject. Only `app:` events pass, so no caller can forge a protocol event.

use std::collections::BTreeMap;

use bytes::Bytes;
use meetup_platform::{Bus, subjects};
use meetup_proto::bus::v1::Push;
use prost::Message;

use crate::error::{PresenceError, require};
use crate::store::PresenceStore;

/// What every application event's name starts with.
pub const APP_EVENT_PREFIX: &str = "app:";
/// Longest application event name, in characters (the prefix included).
pub const MAX_APP_EVENT_CHARS: usize = 64;
/// Largest payload of an application event, as JSON text.
pub const MAX_APP_PAYLOAD_BYTES: usize = 65_536;

/// Checks an application event: its name and its JSON payload.
pub fn check_app_event(event: &str, json: &str) -> Result<(), PresenceError> {
    let invalid = |why: String| Err(PresenceError::InvalidArgument(why));
    let chars = event.chars().count();
    if !event.starts_with(APP_EVENT_PREFIX)
        || chars <= APP_EVENT_PREFIX.len()
        || chars > MAX_APP_EVENT_CHARS
        || event.chars().any(char::is_control)
    {
        return invalid(format!(
            "event must be {APP_EVENT_PREFIX:?} and 1 to {} more characters",
            MAX_APP_EVENT_CHARS - APP_EVENT_PREFIX.len()
        ));
    }
    if json.len() > MAX_APP_PAYLOAD_BYTES {
        return invalid(format!("json is larger than {MAX_APP_PAYLOAD_BYTES} bytes"));
    }
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(json) {
        return invalid(format!("json is not JSON: {error}"));
    }
    Ok(())
}

/// Pushes `event` with `json` to every live session of `user_id`. Returns how
/// many sessions it went to; `UserNotFound` when the user is offline.
pub async fn send_to_user(
    store: &PresenceStore,
    bus: &Bus,
    user_id: &str,
    event: &str,
    json: &str,
) -> Result<u32, PresenceError> {
    require("user_id", user_id)?;
    check_app_event(event, json)?;
    let user = store.get(user_id).await?;
    let mut by_gateway: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for session in user.sessions.iter().filter(|s| s.away_until.is_none()) {
        by_gateway
            .entry(session.gateway_id.as_str())
            .or_default()
            .push(session.session_id.clone());
    }
    if by_gateway.is_empty() {
        return Err(PresenceError::UserNotFound(user_id.to_owned()));
    }
    let mut sent = 0;
    for (gateway_id, session_ids) in by_gateway {
        let count = session_ids.len() as u32;
        let push = Push {
            session_ids,
            event: event.to_owned(),
            payload_json: json.to_owned(),
        };
        bus.publish(
            subjects::gateway_push(gateway_id),
            Bytes::from(push.encode_to_vec()),
        )
        .await
        .map_err(|error| {
            PresenceError::Store(meetup_platform::store::StoreError::Unavailable(
                error.to_string(),
            ))
        })?;
        sent += count;
    }
    tracing::info!(user_id, event, sessions = sent, "application event pushed");
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_app_events_with_json_pass() {
        assert!(check_app_event("app:reminder", r#"{"at":1}"#).is_ok());
        assert!(check_app_event("app:x", "null").is_ok());
        for bad in ["incoming-call", "app:", "APP:x", "call-message", "app:\n"] {
            assert!(check_app_event(bad, "{}").is_err(), "{bad:?}");
        }
        let long = format!("app:{}", "x".repeat(MAX_APP_EVENT_CHARS));
        assert!(check_app_event(&long, "{}").is_err());
        assert!(check_app_event("app:x", "{not json").is_err());
        assert!(check_app_event("app:x", "").is_err());
    }
}
