//! Relays that another gateway routed to one of this gateway's sockets.

use meetup_proto::bus::v1::{Relay, RelayKind};
use meetup_runtime::BusMessage;
use prost::Message;
use serde_json::value::RawValue;

use crate::state::Gateway;

/// Delivers a relay that another gateway routed to one of this gateway's sockets.
pub(super) fn deliver_relay(gw: &Gateway, message: BusMessage) {
    let relay = match Relay::decode(message.payload) {
        Ok(relay) => relay,
        Err(error) => {
            tracing::warn!(%error, "undecodable relay");
            return;
        }
    };
    let event = match RelayKind::try_from(relay.kind) {
        Ok(RelayKind::Offer) => "webrtc-offer",
        Ok(RelayKind::Answer) => "webrtc-answer",
        Ok(RelayKind::IceCandidate) => "webrtc-ice-candidate",
        _ => {
            tracing::warn!(kind = relay.kind, "relay of unknown kind");
            return;
        }
    };
    match RawValue::from_string(relay.payload_json) {
        Ok(raw) => gw.emit_to_session(&relay.target_session_id, event, &*raw),
        Err(error) => tracing::warn!(%error, "relay payload is not JSON"),
    }
}
