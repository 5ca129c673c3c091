//! Client payloads: every event's parser in `gateway/src/payload.rs` on arbitrary
//! Socket.IO event packets. They must answer with an ack error, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meetup_gateway::payload::{self, RelayKind};
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = std::str::from_utf8(data) else {
        return;
    };
    // The whole packet `["event", payload, ack?]`, as the socket layer hands it over.
    let Ok(raw) = payload::event_payload(packet, 65_536) else {
        return;
    };
    let _ = payload::user_joined(&raw);
    let _ = payload::start_call(&raw);
    let _ = payload::join_call(&raw);
    let _ = payload::leave_call(&raw);
    let _ = payload::call_ref(&raw);
    let _ = payload::invite_to_call(&raw);
    if let Ok(message) = payload::call_message(&raw) {
        let chars = message.text.chars().count();
        assert!((1..=payload::MAX_TEXT_CHARS).contains(&chars), "{chars}");
    }
    for kind in [RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate] {
        if let Ok(relay) = payload::relay(kind, &raw) {
            let out = payload::relay_out(&relay, "fuzz-user");
            // What goes out passes the check the receiving gateway makes
            // (`RawValue`, which, like browsers, lets lone surrogate escapes
            // through: the data is forwarded as written) ...
            assert!(RawValue::from_string(out.clone()).is_ok(), "{out}");
            // ... and strict JSON in gives strict JSON out.
            if serde_json::from_str::<Value>(relay.data.get()).is_ok() {
                assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
            }
        }
    }
});
