//! JWT handshakes: the gateway's token verification (header, claims, signature)
//! and the token's extraction from the handshake query, on arbitrary strings.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meetup_gateway::edge::auth::{self, AuthSettings, Authenticator};

static AUTH: LazyLock<Option<Authenticator>> = LazyLock::new(|| {
    Authenticator::from_settings(&AuthSettings {
        secret: Some("fuzz-secret".into()),
        username_claim: "name".into(),
        leeway_secs: 30,
        ..Default::default()
    })
    .ok()
    .flatten()
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(auth) = AUTH.as_ref() {
        let _ = auth.verify(text);
    }
    // As a query string (`?token=` with percent-escapes) and as `auth.token`.
    if let Some(token) = auth::handshake_token(None, Some(text))
        && let Some(auth) = AUTH.as_ref()
    {
        let _ = auth.verify(&token);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = auth::handshake_token(Some(&value), None);
    }
});
