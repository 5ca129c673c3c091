//! State records and bus messages: protobuf decoding of every `meetup.bus.v1`
//! message, and what a gateway does with the decoded records that is pure (its
//! mirror applies them, says what they mean for clients, renders the lists
//! browsers get and routes relays). A peer writing to the store or the bus may be
//! buggy or old; a gateway must not panic on what it wrote.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meetup_gateway::mirror::Mirror;
use meetup_proto::bus::v1::{
    CallChat, CallRecord, GatewayLease, Push, Relay, StartedCalls, UserRecord,
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the message type, the rest holds one or more
    // payloads separated by 0xFF, applied to one mirror in a row (alternately
    // under two keys, so that changes of one key meet what came before).
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mirror = Mirror::default();
    mirror.presence_watch_started();
    mirror.calls_watch_started();
    for (n, payload) in rest.split(|&b| b == 0xff).enumerate() {
        let key = if n % 2 == 0 { "k1" } else { "k2" };
        let revision = n as u64 + 1;
        match kind % 5 {
            0 => {
                let record = UserRecord::decode(payload).ok();
                let _ = mirror.apply_user(key, record, revision);
                let _ = mirror.users_list();
            }
            1 => {
                let record = CallRecord::decode(payload).ok();
                let _ = mirror.apply_call(key, record, revision);
                if let Some(call) = mirror.call(key) {
                    let _ = meetup_gateway::protocol::outbound::public_participants(&call);
                }
                let _ = mirror.route_relay(key, "k1", "k2");
            }
            2 => {
                let _ = GatewayLease::decode(payload);
                let _ = StartedCalls::decode(payload);
            }
            3 => {
                let chat = CallChat::decode(payload).ok();
                let _ = mirror.apply_chat(key, chat, revision);
                let _ = mirror.chat_before(key, revision);
                if let Ok(push) = Push::decode(payload) {
                    let _ = serde_json::value::RawValue::from_string(push.payload_json);
                }
            }
            _ => {
                if let Ok(relay) = Relay::decode(payload) {
                    let _ = serde_json::value::RawValue::from_string(relay.payload_json);
                }
            }
        }
    }
    let _ = mirror.presence_current();
    let _ = mirror.calls_current();
    let _ = mirror.counts();
});
