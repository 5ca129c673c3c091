//! Every bucket name and key of the state store, built here and nowhere else.
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `meetup_presence` | `u.<user id>` | `meetup.bus.v1.UserRecord` |
//! | `meetup_calls` | `c.<call id>` | `meetup.bus.v1.CallRecord` |
//! | `meetup_calls` | `m.<call id>` | `meetup.bus.v1.CallChat` (a live call's chat) |
//! | `meetup_call_index` | `i.<user id>` | `meetup.bus.v1.StartedCalls` |
//! | `meetup_gateways` | `g.<gateway id>` | `meetup.bus.v1.GatewayLease` (expires) |
//!
//! Ids may hold any character, and keys only `[-_=.a-zA-Z0-9/]`: ids are written
//! in unpadded base64url, which is reversible and stays inside that set.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const PRESENCE_BUCKET: &str = "meetup_presence";
pub const CALLS_BUCKET: &str = "meetup_calls";
pub const CALL_INDEX_BUCKET: &str = "meetup_call_index";
pub const GATEWAYS_BUCKET: &str = "meetup_gateways";

pub const USER_PREFIX: &str = "u.";
pub const CALL_PREFIX: &str = "c.";
/// A live call's chat, in the calls bucket beside the call.
pub const CHAT_PREFIX: &str = "m.";
pub const INDEX_PREFIX: &str = "i.";
pub const LEASE_PREFIX: &str = "g.";

fn encode(prefix: &str, id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + id.len() * 4 / 3 + 2);
    key.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(id.as_bytes(), &mut key);
    key
}

fn decode(prefix: &str, key: &str) -> Option<String> {
    let encoded = key.strip_prefix(prefix)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

pub fn user(user_id: &str) -> String {
    encode(USER_PREFIX, user_id)
}

pub fn user_id_of(key: &str) -> Option<String> {
    decode(USER_PREFIX, key)
}

pub fn call(call_id: &str) -> String {
    encode(CALL_PREFIX, call_id)
}

pub fn call_id_of(key: &str) -> Option<String> {
    decode(CALL_PREFIX, key)
}

pub fn chat(call_id: &str) -> String {
    encode(CHAT_PREFIX, call_id)
}

pub fn chat_call_id_of(key: &str) -> Option<String> {
    decode(CHAT_PREFIX, key)
}

pub fn started_calls(user_id: &str) -> String {
    encode(INDEX_PREFIX, user_id)
}

/// Gateway ids are single subject tokens already (see `subjects::is_valid_token`).
pub fn lease(gateway_id: &str) -> String {
    format!("{LEASE_PREFIX}{gateway_id}")
}

pub fn gateway_id_of(key: &str) -> Option<&str> {
    key.strip_prefix(LEASE_PREFIX)
}

/// True for a key the store accepts (the JetStream rules, applied to both stores).
pub fn is_valid(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_id_makes_a_valid_key_and_comes_back() {
        for id in [
            "u1",
            "a.b",
            "ünï cødé ✓",
            "*>",
            " ",
            "x/y=z",
            &"w".repeat(128),
        ] {
            for (key, back) in [
                (user(id), user_id_of(&user(id))),
                (call(id), call_id_of(&call(id))),
            ] {
                assert!(is_valid(&key), "{key:?}");
                assert_eq!(back.as_deref(), Some(id));
            }
        }
        assert_eq!(user_id_of("c.dTE"), None, "another prefix");
        assert_eq!(gateway_id_of(&lease("gw-1")), Some("gw-1"));
    }

    #[test]
    fn keys_of_different_ids_differ() {
        assert_ne!(user("a"), user("b"));
        assert_ne!(user("a"), call("a"));
        assert_ne!(call("ab"), call("a"));
    }
}
