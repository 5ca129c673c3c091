//! ICE servers for browsers: the configured STUN URLs, and TURN URLs with
//! time-limited credentials in the TURN REST API form that coturn's
//! `use-auth-secret` checks: username `expiry:userId`, password the base64
//! HMAC-SHA1 of that username keyed with the shared secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<String>,
    pub turn_ttl: Duration,
}

/// The TURN REST API credential for `user_id`, valid until `expiry` (unix seconds).
pub fn turn_credential(secret: &str, user_id: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{user_id}");
    // HMAC accepts keys of any length; the error case cannot happen.
    let password = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (username, password)
}

impl IceConfig {
    /// `{ iceServers: [...], ttl }` for `user_id`, in `RTCConfiguration` form.
    pub fn for_user(&self, user_id: &str) -> Value {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(json!({ "urls": self.stun_urls }));
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.turn_secret) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let expiry = (now + self.turn_ttl).as_secs();
            let (username, credential) = turn_credential(secret, user_id, expiry);
            servers.push(
                json!({ "urls": self.turn_urls, "username": username, "credential": credential }),
            );
        }
        json!({ "iceServers": servers, "ttl": self.turn_ttl.as_secs() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_independently_computed_vectors() {
        // Computed with Python's hmac module:
        // base64(hmac.new(secret, username, sha1).digest())
        assert_eq!(
            turn_credential("coturn-secret", "alice", 1_700_000_000),
            (
                "1700000000:alice".to_string(),
                "xDhekumuF8MOMl2uq3DuHW5R3Es=".to_string()
            )
        );
        assert_eq!(
            turn_credential("s3cr3t", "user-42", 1_893_456_000),
            (
                "1893456000:user-42".to_string(),
                "tfb0kNBTQkHwYsUUnnBO8mcxgRM=".to_string()
            )
        );
    }

    #[test]
    fn ice_servers_carry_stun_and_expiring_turn_entries() {
        let config = IceConfig {
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_urls: vec!["turn:turn.example:3478?transport=udp".into()],
            turn_secret: Some("s3cr3t".into()),
            turn_ttl: Duration::from_secs(600),
        };
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let servers = config.for_user("bob");
        assert_eq!(
            servers["iceServers"][0],
            json!({ "urls": ["stun:stun.example:3478"] })
        );
        let turn = &servers["iceServers"][1];
        let username = turn["username"].as_str().expect("username");
        let (expiry, user) = username.split_once(':').expect("expiry:user");
        let expiry: u64 = expiry.parse().expect("number");
        assert_eq!(user, "bob");
        assert!((before + 600..=before + 601).contains(&expiry));
        assert_eq!(
            turn["credential"],
            turn_credential("s3cr3t", "bob", expiry).1
        );
        assert_eq!(servers["ttl"], 600);

        let stun_only = IceConfig::default().for_user("bob");
        assert_eq!(stun_only["iceServers"], json!([]));
    }
}
