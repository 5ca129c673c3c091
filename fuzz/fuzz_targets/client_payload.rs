//! Client payloads: every event's parser in `gateway/src/payload.rs` on arbitrary
//! Socket.IO event packets. They must answer with an ack error, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meetup_gateway::protocol::inbound::{self, RelayKind};
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = std::str::from_utf8(data) else {
        return;
    };
    // The whole packet `["event", payload, ack?]`, as the socket layer hands it over.
    let Ok(raw) = inbound::event_payload(packet, 65_536) else {
        return;
    };
    let _ = inbound::user_joined(&raw);
    let _ = inbound::start_call(&raw);
    let _ = inbound::join_call(&raw);
    let _ = inbound::leave_call(&raw);
    let _ = inbound::call_ref(&raw);
    let _ = inbound::invite_to_call(&raw);
    if let Ok(message) = inbound::call_message(&raw) {
        let chars = message.text.chars().count();
        assert!((1..=inbound::MAX_TEXT_CHARS).contains(&chars), "{chars}");
    }
    for kind in [RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate] {
        if let Ok(relay) = inbound::relay(kind, &raw) {
            let out = inbound::relay_out(&relay, "fuzz-user");
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
