//! `webrtc-offer`, `webrtc-answer`, `webrtc-ice-candidate`: routed by the mirror
//! to the target's socket, here or through NATS on the gateway that holds it.

use meetup_platform::subjects;
use meetup_proto::bus::v1 as busv1;
use prost::Message;
use serde_json::value::RawValue;

use crate::metrics;
use crate::protocol::ack::{Ack, AckError, ErrorCode, Handled};
use crate::protocol::inbound::{self, RelayKind};
use crate::socket::SessionWorker;

impl SessionWorker {
    /// Relays never wait on a service: the mirror decides, the bus carries.
    pub(crate) async fn relay(&mut self, kind: RelayKind, payload: &RawValue) -> Handled {
        let me = self.identity()?;
        let relay = inbound::relay(kind, payload)?;
        let route =
            match self
                .gw
                .mirror()
                .route_relay(&relay.call_id, &me.user_id, &relay.target_user_id)
            {
                Ok(route) => route,
                // A mirror re-reading the state (a watch opened again after a NATS
                // node died) may not know yet what the store knows: that is no
                // proof the two share no call, so the client is told to retry.
                Err(_) if !self.gw.mirror().is_synced() => {
                    return Err(AckError::new(
                        ErrorCode::Unavailable,
                        "the call state is being read again; try again",
                    )
                    .into());
                }
                Err(error) => return Err(error.into()),
            };
        let out = inbound::relay_out(&relay, &me.user_id);
        let message = busv1::Relay {
            target_session_id: route.session_id,
            kind: kind.to_proto(),
            call_id: relay.call_id,
            from_user_id: me.user_id.clone(),
            payload_json: out,
            nonce: 0,
        };
        // The target's socket went without saying goodbye: the relay waits
        // for it to come back (or, past the grace, for nobody).
        let delivered = !route.away
            && (route.gateway_id != self.gw.id()
                || self
                    .gw
                    .emit_relay(&message.target_session_id, kind, &message.payload_json));
        if !delivered {
            self.gw.missed().keep(&message).await.map_err(|error| {
                tracing::warn!(%error, "relay for an away session not kept");
                metrics::get().bus_error("keep relay");
                AckError::new(
                    ErrorCode::Unavailable,
                    "the relay could not be kept for its reconnecting target; try again",
                )
            })?;
            metrics::get().relays_kept.inc();
        } else if route.gateway_id != self.gw.id() {
            if !self.gw.bus().is_connected() {
                return Err(AckError::new(
                    ErrorCode::Unavailable,
                    "the message bus is unavailable; try again",
                )
                .into());
            }
            self.gw
                .bus()
                .publish(
                    subjects::gateway_relay(&route.gateway_id),
                    message.encode_to_vec().into(),
                )
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "relay not published");
                    metrics::get().bus_error("publish relay");
                    AckError::new(
                        ErrorCode::Unavailable,
                        "the message bus is unavailable; try again",
                    )
                })?;
        }
        Ok(Ack::Relayed {}.into())
    }
}
