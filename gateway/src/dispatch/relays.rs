//! Relays that another gateway routed to one of this gateway's sockets.

use meetup_platform::BusMessage;
use meetup_proto::bus::v1::{Push, Relay};
use prost::Message;

use crate::protocol::ServerEvent;
use crate::protocol::inbound::RelayKind;
use crate::protocol::outbound::AppEvent;
use crate::state::Gateway;

/// Gives an application event (`SendToUser`) to the sockets it names that
/// asked for the calling extension's events.
pub(super) fn deliver_push(gw: &Gateway, message: BusMessage) {
    let push = match Push::decode(message.payload) {
        Ok(push) => push,
        Err(error) => {
            tracing::warn!(%error, "undecodable push");
            return;
        }
    };
    let json = match serde_json::value::RawValue::from_string(push.payload_json) {
        Ok(json) => json,
        Err(error) => {
            tracing::warn!(%error, "push with a payload that is not JSON dropped");
            return;
        }
    };
    // The presence service checked it; a forged protocol event stops here too.
    let Some(app) = AppEvent::new(push.event, json) else {
        tracing::warn!("push of a non-application event dropped");
        return;
    };
    gw.send_many(
        push.session_ids.iter().map(String::as_str),
        &ServerEvent::App(app),
    );
}

/// Delivers a relay that another gateway routed to one of this gateway's sockets.
pub(super) fn deliver_relay(gw: &Gateway, message: BusMessage) {
    let relay = match Relay::decode(message.payload) {
        Ok(relay) => relay,
        Err(error) => {
            tracing::warn!(%error, "undecodable relay");
            return;
        }
    };
    let Some(kind) = RelayKind::from_proto(relay.kind) else {
        tracing::warn!(kind = relay.kind, "relay of unknown kind");
        return;
    };
    if gw.emit_relay(&relay.target_session_id, kind, &relay.payload_json) {
        return;
    }
    // The socket went without saying goodbye and its session is not away
    // yet: the relay waits for it in the log, as if it had been sent later.
    if gw.mirror().holds_session(&relay.target_session_id) {
        gw.keeper().keep_later(relay);
    }
}
