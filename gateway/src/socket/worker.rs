//! One socket's task: its queued events handled strictly in order, each answered
//! with exactly one acknowledgement; the disconnect cleanup runs last, after
//! every queued event. The handlers themselves live in `crate::handlers`.

use meetup_proto::calls::v1::{CallUser, Participant};
use socketioxide::handler::Value as PacketValue;
use socketioxide::socket::DisconnectReason;
use tokio::sync::mpsc;

use super::queue::Queued;
use crate::edge::auth::Claims;
use crate::metrics;
use crate::protocol::ServerEvent;
use crate::protocol::ack::{AckError, Answer, Handled, Refusal};
use crate::protocol::inbound::{self, ClientEvent, RelayKind};
use crate::state::Gateway;

/// The registered user behind a socket.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) user_id: String,
    pub(crate) username: String,
}

pub(crate) struct SessionWorker {
    pub(crate) gw: Gateway,
    pub(crate) session_id: String,
    pub(crate) identity: Option<Identity>,
    /// The verified token of the handshake, when authentication is on.
    pub(crate) claims: Option<Claims>,
}

impl SessionWorker {
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        metrics::get().connections.inc();
        // A queue closed without a reason (the socket dropped) counts as a
        // transport failure.
        let mut reason = DisconnectReason::TransportError;
        while let Some(queued) = rx.recv().await {
            match queued {
                Queued::Event(queued) => {
                    let super::queue::QueuedEvent {
                        event,
                        packet,
                        ack,
                        received,
                    } = *queued;
                    // Boxed: the handlers' futures (gRPC calls inside) are large, and
                    // an idle socket's task should not carry their size around.
                    let span = crate::traces::socket_event(event.name(), &self.session_id);
                    let (events, body) = match Box::pin(tracing::Instrument::instrument(
                        self.handle(event, &packet),
                        span,
                    ))
                    .await
                    {
                        Ok(Answer { events, ack }) => {
                            metrics::get().event_in(event.name(), "ok");
                            if matches!(
                                event,
                                ClientEvent::Offer
                                    | ClientEvent::Answer
                                    | ClientEvent::IceCandidate
                            ) {
                                metrics::get().relay_handled(received.elapsed());
                            }
                            (events, ack.body())
                        }
                        Err(Refusal { events, error }) => {
                            tracing::debug!(session_id = %self.session_id, event = event.name(), code = %error.code, "event refused");
                            metrics::get().event_in(event.name(), error.code.as_str());
                            (events, error.body())
                        }
                    };
                    // The one place an event's answer goes out: the events
                    // the handler returned, in order, then the ack.
                    for out in &events {
                        self.send(out);
                    }
                    if let Err(error) = ack.send(&body) {
                        tracing::debug!(session_id = %self.session_id, %error, "ack not sent");
                    }
                }
                Queued::Disconnect(why) => {
                    reason = why;
                    break;
                }
            }
        }
        Box::pin(self.cleanup(reason)).await;
        metrics::get().connections.dec();
    }

    async fn handle(&mut self, event: ClientEvent, packet: &PacketValue) -> Handled {
        let text = match packet {
            PacketValue::Str(text, None) => text.as_str(),
            _ => return Err(AckError::invalid("binary payloads are not accepted").into()),
        };
        let payload = inbound::event_payload(text, self.gw.limits().max_payload_bytes)?;
        match event {
            ClientEvent::UserJoined => self.user_joined(&payload).await,
            ClientEvent::StartCall => self.start_call(&payload).await,
            ClientEvent::JoinCall => self.join_call(&payload).await,
            ClientEvent::LeaveCall => self.leave_call(&payload).await,
            ClientEvent::Offer => self.relay(RelayKind::Offer, &payload).await,
            ClientEvent::Answer => self.relay(RelayKind::Answer, &payload).await,
            ClientEvent::IceCandidate => self.relay(RelayKind::IceCandidate, &payload).await,
            ClientEvent::DeclineCall => self.decline_call(&payload).await,
            ClientEvent::CancelCall => self.cancel_call(&payload).await,
            ClientEvent::InviteToCall => self.invite_to_call(&payload).await,
            ClientEvent::CallMessage => self.call_message(&payload).await,
            ClientEvent::GetCallHistory => {
                let me = self.identity()?;
                let query = inbound::get_call_history(&payload)?;
                Ok(
                    crate::history::get_call_history(self.gw.history(), &me.user_id, query)
                        .await?
                        .into(),
                )
            }
        }
    }

    pub(crate) fn identity(&self) -> Result<&Identity, AckError> {
        self.identity.as_ref().ok_or_else(AckError::not_registered)
    }

    pub(crate) fn participant(&self, me: &Identity) -> Participant {
        Participant {
            user: Some(CallUser {
                id: me.user_id.clone(),
                username: me.username.clone(),
            }),
            session_id: self.session_id.clone(),
            gateway_id: self.gw.id().to_owned(),
            joined_at: None,
            away_until: None,
        }
    }

    /// Sends `event` to this socket (see [`Gateway::send`]).
    pub(crate) fn send(&self, event: &ServerEvent) {
        self.gw.send(&self.session_id, event);
    }
}
