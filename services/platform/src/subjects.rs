//! Every NATS subject of the system, built here and nowhere else.
//!
//! | subject | publisher | subscribers | payload |
//! |---|---|---|---|
//! | `meetup.v1.gateway.<gateway id>.relay` | any gateway | that gateway | `meetup.bus.v1.Relay` |
//! | `meetup.v1.gateway.<gateway id>.push` | presence (`SendToUser`) | that gateway | `meetup.bus.v1.Push` |
//!
//! State changes do not travel as messages of our own: they are the JetStream
//! KV buckets' streams (see `store::keys`), which gateways watch.

/// Where relays for the sessions of one gateway go.
pub fn gateway_relay(gateway_id: &str) -> String {
    format!("meetup.v1.gateway.{gateway_id}.relay")
}

/// Where application events for the sessions of one gateway go.
pub fn gateway_push(gateway_id: &str) -> String {
    format!("meetup.v1.gateway.{gateway_id}.push")
}

/// True when `id` can be used as one subject token (gateway ids must).
pub fn is_valid_token(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(matches("meetup.v1.events.>", "meetup.v1.events.calls"));
        assert!(!matches("meetup.v1.events.>", "meetup.v1.events"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
    }

    #[test]
    fn gateway_ids_must_be_single_tokens() {
        assert!(is_valid_token("gw-1_a"));
        assert!(!is_valid_token("gw.1"));
        assert!(!is_valid_token("gw*"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token(&"x".repeat(65)));
        assert_eq!(gateway_relay("gw-1"), "meetup.v1.gateway.gw-1.relay");
    }
}
