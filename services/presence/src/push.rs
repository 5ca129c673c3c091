//! Application events for a user's sockets (`SendToUser`): one bus message
//! per gateway holding a live session of the user, on that gateway's push
//! subject. Only `app:` events pass, so no caller can forge a protocol event.

use std::collections::BTreeMap;

use bytes::Bytes;
use meetup_platform::{Bus, subjects};
use meetup_proto::bus::v1::Push;
use meetup_proto::presence::v1::OnlineUser;
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
    let pushes = pushes_by_gateway(&user, event, json);
    if pushes.is_empty() {
        return Err(PresenceError::UserNotFound(user_id.to_owned()));
    }
    let mut sent = 0;
    for (gateway_id, push) in pushes {
        let count = push.session_ids.len() as u32;
        bus.publish(
            subjects::gateway_push(gateway_id),
            Bytes::from(push.encode_to_vec()),
        )
        .await?;
        sent += count;
    }
    tracing::info!(user_id, event, sessions = sent, "application event pushed");
    Ok(sent)
}

/// The bus messages that carry `event` to the live sessions of `user`, by
/// the gateway that holds them (an away session has no socket to reach).
fn pushes_by_gateway<'a>(user: &'a OnlineUser, event: &str, json: &str) -> BTreeMap<&'a str, Push> {
    let mut pushes: BTreeMap<&str, Push> = BTreeMap::new();
    for session in user.sessions.iter().filter(|s| s.away_until.is_none()) {
        pushes
            .entry(session.gateway_id.as_str())
            .or_insert_with(|| Push {
                session_ids: Vec::new(),
                event: event.to_owned(),
                payload_json: json.to_owned(),
            })
            .session_ids
            .push(session.session_id.clone());
    }
    pushes
}

#[cfg(test)]
mod tests {
    use meetup_proto::presence::v1::Session;

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

    #[test]
    fn an_event_goes_once_to_each_gateway_with_live_sessions() {
        let session = |id: &str, gateway: &str, away: bool| Session {
            session_id: id.to_owned(),
            gateway_id: gateway.to_owned(),
            away_until: away.then(|| std::time::SystemTime::now().into()),
            ..Session::default()
        };
        let user = OnlineUser {
            user: None,
            sessions: vec![
                session("s1", "gw1", false),
                session("s2", "gw2", false),
                session("s3", "gw1", false),
                session("s4", "gw3", true),
            ],
        };
        let pushes = pushes_by_gateway(&user, "app:x", "{}");
        let to: Vec<(&str, Vec<&str>)> = pushes
            .iter()
            .map(|(gw, p)| (*gw, p.session_ids.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(to, [("gw1", vec!["s1", "s3"]), ("gw2", vec!["s2"])]);
        assert!(
            pushes
                .values()
                .all(|p| p.event == "app:x" && p.payload_json == "{}")
        );
    }
}
