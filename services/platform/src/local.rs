//! The in-process bus of the embedded mode: NATS subject semantics without a server.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::BusMessage;
use crate::subjects::matches;

/// Cheap-to-clone handle; all clones share one set of subscriptions.
#[derive(Clone, Debug, Default)]
pub struct LocalBus {
    shared: Arc<Mutex<Vec<LocalSubscriber>>>,
}

#[derive(Debug)]
struct LocalSubscriber {
    pattern: String,
    tx: mpsc::UnboundedSender<BusMessage>,
}

impl LocalBus {
    /// Delivers to every matching subscriber, in publish order. The channels are
    /// unbounded so that a publisher never waits and nothing is dropped; the
    /// gateway bounds what clients can make it publish.
    pub fn publish(&self, subject: String, payload: Bytes, traceparent: Option<String>) {
        // A std Mutex is fine: it is never held across an `.await`.
        let mut subscribers = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.retain(|s| {
            if !matches(&s.pattern, &subject) {
                return !s.tx.is_closed();
            }
            s.tx.send(BusMessage {
                subject: subject.clone(),
                payload: payload.clone(),
                traceparent: traceparent.clone(),
            })
            .is_ok()
        });
    }

    pub fn subscribe(&self, pattern: String) -> mpsc::UnboundedReceiver<BusMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(LocalSubscriber { pattern, tx });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_to_matching_subscribers_only() {
        let bus = LocalBus::default();
        let mut all = bus.subscribe("a.>".into());
        let mut one = bus.subscribe("a.b".into());
        let mut other = bus.subscribe("c.*".into());
        for i in 0..100u8 {
            bus.publish("a.b".into(), Bytes::from(vec![i]), None);
        }
        bus.publish("a.x.y".into(), Bytes::from_static(b"deep"), None);
        for i in 0..100u8 {
            assert_eq!(all.recv().await.map(|m| m.payload[0]), Some(i));
            assert_eq!(one.recv().await.map(|m| m.payload[0]), Some(i));
        }
        assert_eq!(
            all.recv().await.map(|m| m.subject),
            Some("a.x.y".to_string())
        );
        assert!(one.try_recv().is_err());
        assert!(other.try_recv().is_err());
    }

    #[tokio::test]
    async fn dropped_subscribers_are_forgotten() {
        let bus = LocalBus::default();
        let rx = bus.subscribe("a".into());
        drop(rx);
        bus.publish("a".into(), Bytes::new(), None);
        assert!(bus.shared.lock().map(|s| s.is_empty()).unwrap_or(false));
    }
}
