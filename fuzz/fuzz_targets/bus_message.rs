//! Bus messages: protobuf decoding of every `meetup.bus.v1` message, and what a
//! gateway does with the decoded events that is pure (its mirror applies them and
//! renders the lists browsers get). A peer on the bus may be buggy or old; a
//! gateway must not panic on what it sends. The services' snapshots (gRPC
//! answers the mirror is reset from) go through the same code, so they are here too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meetup_gateway::replica::{self, Replica};
use meetup_proto::bus::v1::{CallEvent, GatewayHeartbeat, PresenceEvent, Relay};
use meetup_proto::calls::v1::ListCallsResponse;
use meetup_proto::presence::v1::ListUsersResponse;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the message type, the rest holds one or more
    // payloads separated by 0xFF (applied to one mirror in a row).
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mirror = Replica::default();
    for payload in rest.split(|&b| b == 0xff) {
        match kind % 6 {
            0 => {
                if let Ok(event) = PresenceEvent::decode(payload) {
                    // Put the mirror just before the event, so that it applies.
                    mirror.reset_presence(ListUsersResponse {
                        instance_id: event.instance_id.clone(),
                        version: event.version.saturating_sub(1),
                        ..Default::default()
                    });
                    let _ = mirror.apply_presence(&event);
                    let _ = mirror.users_list();
                }
            }
            1 => {
                if let Ok(event) = CallEvent::decode(payload) {
                    mirror.reset_calls(ListCallsResponse {
                        instance_id: event.instance_id.clone(),
                        sequence: event.sequence.saturating_sub(1),
                        ..Default::default()
                    });
                    let _ = mirror.apply_calls(&event);
                    for call in mirror.all_calls() {
                        let _ = replica::public_participants(&call);
                    }
                }
            }
            2 => {
                let _ = GatewayHeartbeat::decode(payload);
            }
            3 => {
                if let Ok(relay) = Relay::decode(payload) {
                    let _ = serde_json::value::RawValue::from_string(relay.payload_json);
                }
            }
            4 => {
                if let Ok(snapshot) = ListUsersResponse::decode(payload) {
                    mirror.reset_presence(snapshot);
                    let _ = mirror.users_list();
                }
            }
            _ => {
                if let Ok(snapshot) = ListCallsResponse::decode(payload) {
                    mirror.reset_calls(snapshot);
                    for call in mirror.all_calls() {
                        let _ = replica::public_participants(&call);
                    }
                }
            }
        }
    }
    let _ = mirror.counts();
});
