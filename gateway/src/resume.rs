//! What lets a client come back: resume tokens, and the relays kept for a
//! session while it is away.
//!
//! A resume token is 128 random bits given to the client in the ack of its
//! `user-joined`; the state keeps only its SHA-256, so a token read from the
//! presence API is of no use. Relays addressed to an away session go to the
//! relay log (`meetup_platform::relay_log`: a JetStream stream with a short max
//! age in a cluster, in this process in the embedded mode), which the gateway
//! that resumes the session reads once and purges.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use meetup_platform::relay_log::RelayLog;
use meetup_proto::bus::v1::Relay;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// How long a kept relay outlives the grace period.
const KEEP_PAST_GRACE: Duration = Duration::from_secs(30);

/// How long the relay log keeps a relay, for sessions that may resume within
/// `grace`: the grace and a margin.
pub fn kept_for(grace: Duration) -> Duration {
    grace + KEEP_PAST_GRACE
}

/// A new resume token and its hash.
pub fn new_token() -> (String, String) {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    let hash = token_hash(&token);
    (token, hash)
}

/// The hash the state keeps of `token`.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the relays that reached a gone socket (its session not yet away) to
/// the log, in the order they came, on a task of its own: the dispatcher hands
/// them over and goes on, so a slow write (up to its 5 s timeout) holds up no
/// other relay of the gateway.
#[derive(Debug, Clone)]
pub struct Keeper {
    tx: mpsc::Sender<Relay>,
}

/// Relays waiting to be written before more are refused (a log that far
/// behind is failing: they would outlive the grace anyway).
const KEEPER_QUEUE: usize = 4096;

impl Keeper {
    pub fn spawn(log: Arc<RelayLog>) -> Keeper {
        let (tx, mut rx) = mpsc::channel::<Relay>(KEEPER_QUEUE);
        tokio::spawn(async move {
            while let Some(relay) = rx.recv().await {
                match log.keep(&relay).await {
                    Ok(()) => {
                        crate::metrics::get().relays_kept.inc();
                    }
                    Err(error) => tracing::warn!(%error, "relay for a gone socket not kept"),
                }
            }
        });
        Keeper { tx }
    }

    /// Queues `relay` for the log.
    pub fn keep_later(&self, relay: Relay) {
        if self.tx.try_send(relay).is_err() {
            crate::metrics::get().bus_error("keep relay");
            tracing::warn!("relay for a gone socket not kept: the relay log is far behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert_eq!(hash_a, token_hash(&a));
        assert_eq!(hash_a.len(), 64);
        // SHA-256 of "abc", as every implementation has it.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
