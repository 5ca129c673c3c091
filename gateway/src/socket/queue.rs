//! A socket's queue: every event is checked against the socket's rate limit
//! and queued in the engine's reading order; a full queue refuses the event.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value as PacketValue};
use socketioxide::socket::Socket;
use tokio::sync::mpsc;

use crate::edge::limits::{EventLimiter, Verdict};
use crate::metrics;
use crate::protocol::ack::{AckError, ErrorCode};
use crate::protocol::inbound::ClientEvent;

/// Marker for the handler signatures of this module's handlers.
pub struct Synchronous;

/// What a socket's task is asked to do, in arrival order. Small: the queue's
/// first block of slots is allocated with it, for every connection, idle or not.
pub(crate) enum Queued {
    Event(Box<QueuedEvent>),
    /// The socket is gone; why decides whether its session turns away.
    Disconnect(socketioxide::socket::DisconnectReason),
}

pub(crate) struct QueuedEvent {
    pub(crate) event: ClientEvent,
    pub(crate) packet: PacketValue,
    pub(crate) ack: AckSender,
    pub(crate) received: Instant,
}

/// The socket's one message handler (the fallback, for every event name): a
/// client event is queued, in the engine's reading order, after the socket's
/// rate limit; other names are ignored, as the original server ignores them.
#[derive(Clone)]
pub(crate) struct Enqueue {
    pub(crate) tx: mpsc::Sender<Queued>,
    // A std Mutex is fine: taken for a few arithmetic operations, never across an `.await`.
    pub(crate) limiter: Arc<Mutex<EventLimiter>>,
}

impl MessageHandler<LocalAdapter, Synchronous> for Enqueue {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut packet: PacketValue, ack_id: Option<i64>) {
        let Some(event) = Event::from_message_parts(&s, &mut packet, &ack_id)
            .ok()
            .and_then(|Event(name)| ClientEvent::from_name(&name))
        else {
            return;
        };
        let ack = match AckSender::from_message_parts(&s, &mut packet, &ack_id) {
            Ok(ack) => ack,
            Err(never) => match never {},
        };
        let verdict = self
            .limiter
            .lock()
            .map(|mut l| l.check(Instant::now()))
            .unwrap_or(Verdict::Allow);
        if verdict == Verdict::Drop {
            return;
        }
        if verdict != Verdict::Allow {
            metrics::get().event_in(event.name(), ErrorCode::RateLimited.as_str());
            let error = AckError::new(ErrorCode::RateLimited, "too many events; slow down");
            let _ = ack.send(&error.body());
            if verdict == Verdict::Disconnect {
                tracing::warn!(session_id = %s.id, "sustained event flood; disconnecting");
                // After the acks already queued have gone out (later events are
                // dropped unanswered), so that the client sees a server disconnect
                // rather than a dropped transport.
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let _ = s.disconnect();
                });
            }
            return;
        }
        let queued = Queued::Event(Box::new(QueuedEvent {
            event,
            packet,
            ack,
            received: Instant::now(),
        }));
        if let Err(mpsc::error::TrySendError::Full(Queued::Event(queued))) =
            self.tx.try_send(queued)
        {
            let QueuedEvent { ack, event, .. } = *queued;
            tracing::warn!(session_id = %s.id, event = event.name(), "socket queue full; event refused");
            metrics::get().event_in(event.name(), ErrorCode::Overloaded.as_str());
            let error = AckError::new(
                ErrorCode::Overloaded,
                "too many events waiting on this socket; this one was dropped",
            );
            let _ = ack.send(&error.body());
        }
    }
}
