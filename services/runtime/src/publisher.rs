//! Publishes service events on the bus in exactly the order they were queued.
//!
//! Services mutate their state under a lock and queue the resulting event before
//! releasing it, so queue order is state order. A single task publishes the queue,
//! flushing once per batch, and tells each caller when its event has reached the bus.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::bus::Bus;

struct Outgoing {
    subject: &'static str,
    payload: Bytes,
    /// The trace context of the change, taken where it was queued (the
    /// publishing task runs outside the request's span).
    traceparent: Option<String>,
    done: oneshot::Sender<()>,
}

/// Cheap-to-clone handle on the publishing task.
#[derive(Clone, Debug)]
pub struct OrderedPublisher {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Resolves once the event has been handed to the bus (and flushed to NATS).
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<()>);

impl Receipt {
    /// Waits for the event to be published, at most `limit`; returns false when the
    /// bus did not take it in time (it is still published later, in order).
    pub async fn published_within(self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.0).await, Ok(Ok(())))
    }
}

impl OrderedPublisher {
    /// Starts the publishing task on the current runtime.
    pub fn start(bus: Bus) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_in_order(bus, rx));
        OrderedPublisher { tx }
    }

    /// Queues an event. Never blocks, so it can be called with a lock held.
    pub fn enqueue(&self, subject: &'static str, payload: Bytes) -> Receipt {
        let (done, receipt) = oneshot::channel();
        if self
            .tx
            .send(Outgoing {
                subject,
                payload,
                traceparent: crate::tracing_context::current_traceparent(),
                done,
            })
            .is_err()
        {
            tracing::error!(subject, "event publisher is gone; event dropped");
        }
        Receipt(receipt)
    }
}

async fn publish_in_order(bus: Bus, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 512).await > 0 {
        for outgoing in &batch {
            // The NATS client buffers while disconnected and resends on reconnect;
            // an error here means the client is closed for good.
            if let Err(error) = bus
                .publish_traced(
                    outgoing.subject.to_owned(),
                    outgoing.payload.clone(),
                    outgoing.traceparent.clone(),
                )
                .await
            {
                tracing::error!(%error, subject = outgoing.subject, "event not published");
            }
        }
        if let Err(error) = bus.flush().await {
            tracing::warn!(%error, "bus flush failed");
        }
        for outgoing in batch.drain(..) {
            let _ = outgoing.done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn events_arrive_in_queue_order_and_receipts_resolve() {
        let bus = Bus::local();
        let mut sub = bus.subscribe("t.>".into()).await.expect("local subscribe");
        let publisher = OrderedPublisher::start(bus);
        let receipts: Vec<_> = (0..1000u32)
            .map(|i| publisher.enqueue("t.x", Bytes::from(i.to_be_bytes().to_vec())))
            .collect();
        for receipt in receipts {
            assert!(receipt.published_within(Duration::from_secs(5)).await);
        }
        for i in 0..1000u32 {
            let message = sub.next().await.expect("message");
            assert_eq!(message.payload.as_ref(), i.to_be_bytes());
        }
    }
}
