//! The relay log: where the relays addressed to an away session wait until a
//! gateway resumes it (or their age runs out). A backend role beside the bus and
//! the state store, with the same two backends: in this process (one gateway,
//! the embedded mode) or a JetStream stream on the NATS server (a cluster: the
//! gateway that resumes the session is often not the one that kept its relays).
//! The log is read once and purged by the gateway that resumes the session.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use meetup_proto::bus::v1::Relay;
use prost::Message;
use tokio::sync::mpsc;

use crate::bus::Bus;

/// The stream that keeps the relays of away sessions.
pub const MISSED_STREAM: &str = "meetup_missed_relays";
/// Bound on reading or writing the log.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

fn subject(session_id: &str) -> String {
    format!("meetup.missed.{session_id}")
}

/// The relays kept for one away session, in the order they were sent.
#[derive(Debug, Default, PartialEq)]
pub struct Kept {
    pub relays: Vec<Relay>,
    /// More came than the log keeps: the oldest are gone.
    pub overflowed: bool,
}

/// The relays kept in this process, per session, each dropped `max_age`
/// after it was kept as the stream drops its messages: a session that
/// never comes back costs nothing once that time has passed.
#[derive(Debug)]
pub struct LocalLog {
    max_age: Duration,
    queues: HashMap<String, VecDeque<(tokio::time::Instant, Relay)>>,
    swept: tokio::time::Instant,
}

impl LocalLog {
    fn new(max_age: Duration) -> Self {
        LocalLog {
            max_age,
            queues: HashMap::new(),
            swept: tokio::time::Instant::now(),
        }
    }

    /// Keeps `relay`, at most `most` for its session (the oldest go first).
    fn push(&mut self, relay: Relay, most: usize) {
        let now = tokio::time::Instant::now();
        // Each sweep visits every session: at most one a second.
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.swept = now;
            let max_age = self.max_age;
            self.queues.retain(|_, queue| {
                while queue
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > max_age)
                {
                    queue.pop_front();
                }
                !queue.is_empty()
            });
        }
        let queue = self
            .queues
            .entry(relay.target_session_id.clone())
            .or_default();
        queue.push_back((now, relay));
        while queue.len() > most {
            queue.pop_front();
        }
    }

    /// The session's relays still young enough, in order; forgotten here.
    fn take(&mut self, session_id: &str) -> Vec<Relay> {
        let now = tokio::time::Instant::now();
        self.queues
            .remove(session_id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(at, _)| now.duration_since(*at) <= self.max_age)
            .map(|(_, relay)| relay)
            .collect()
    }
}

/// How often the local log looks for relays past their age.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Who is told of every relay kept for a session from now on (local log).
type Followers = Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Relay>>>>;

/// Where the relays of away sessions wait.
pub enum RelayLog {
    /// In this process: the only gateway keeps them itself.
    Local {
        limit: usize,
        kept: Mutex<LocalLog>,
        followers: Followers,
    },
    /// The JetStream stream [`MISSED_STREAM`], one subject per session.
    Remote {
        limit: usize,
        client: async_nats::Client,
        js: Box<jetstream::Context>,
        stream: Box<jetstream::stream::Stream>,
    },
}

impl std::fmt::Debug for RelayLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayLog::Local { limit, .. } => write!(f, "RelayLog::Local(limit {limit})"),
            RelayLog::Remote { limit, .. } => {
                write!(f, "RelayLog::Remote({MISSED_STREAM}, limit {limit})")
            }
        }
    }
}

impl RelayLog {
    /// The log beside `bus` (in this process for the in-process bus, a stream
    /// over NATS): keeps at most `limit` relays per session (one more is kept
    /// to tell an overflow), each for `max_age`.
    pub async fn for_bus(
        bus: &Bus,
        limit: usize,
        max_age: Duration,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let client = match bus {
            Bus::Local(_) => {
                return Ok(RelayLog::Local {
                    limit,
                    kept: Mutex::new(LocalLog::new(max_age)),
                    followers: Mutex::new(HashMap::new()),
                });
            }
            Bus::Remote(client) => client.clone(),
        };
        let js = jetstream::new(client.clone());
        let config = jetstream::stream::Config {
            name: MISSED_STREAM.to_owned(),
            subjects: vec![subject("*")],
            max_age,
            max_messages_per_subject: i64::try_from(limit + 1).unwrap_or(i64::MAX),
            discard: jetstream::stream::DiscardPolicy::Old,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            allow_direct: true,
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("missed-relays stream: {e}"))?;
        Ok(RelayLog::Remote {
            limit,
            client,
            js: Box::new(js),
            stream: Box::new(stream),
        })
    }

    /// Keeps `relay` for its away target; an error when the log could not take
    /// it (the sender is told, so it can try again).
    pub async fn keep(&self, relay: &Relay) -> Result<(), String> {
        let relay = Relay {
            nonce: rand::random(),
            ..relay.clone()
        };
        match self {
            RelayLog::Local {
                limit,
                kept,
                followers,
            } => {
                kept.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(relay.clone(), limit + 1);
                if let Some(following) = followers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&relay.target_session_id)
                {
                    following.retain(|tx| tx.send(relay.clone()).is_ok());
                }
                Ok(())
            }
            RelayLog::Remote { js, .. } => {
                let payload = Bytes::from(relay.encode_to_vec());
                let published = async {
                    js.publish(subject(&relay.target_session_id), payload)
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                };
                match tokio::time::timeout(LOG_TIMEOUT, published).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err("timed out".to_owned()),
                }
            }
        }
    }

    /// Takes the relays kept for `session_id` (the log forgets them).
    pub async fn take(&self, session_id: &str) -> Result<Kept, String> {
        let (limit, mut relays) = match self {
            RelayLog::Local { limit, kept, .. } => {
                let relays = kept
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(session_id);
                (*limit, relays)
            }
            RelayLog::Remote { limit, stream, .. } => {
                let read = tokio::time::timeout(LOG_TIMEOUT, read_all(stream, session_id))
                    .await
                    .map_err(|_| "timed out".to_owned())??;
                (*limit, read)
            }
        };
        let overflowed = relays.len() > limit;
        if overflowed {
            relays.drain(..relays.len() - limit);
        }
        Ok(Kept { relays, overflowed })
    }
}

impl RelayLog {
    /// Every relay kept for `session_id` from now on, as it is kept: a sender
    /// whose mirror has not yet seen the session resumed still keeps its relays
    /// for the old session, after the log was read. The stream ends when the
    /// receiver is dropped.
    pub async fn follow(&self, session_id: &str) -> Result<mpsc::UnboundedReceiver<Relay>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        match self {
            RelayLog::Local { followers, .. } => {
                followers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(session_id.to_owned())
                    .or_default()
                    .push(tx);
            }
            RelayLog::Remote { client, .. } => {
                let mut subscription = client
                    .subscribe(subject(session_id))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    use futures::StreamExt;
                    while let Some(message) = subscription.next().await {
                        let Ok(relay) = Relay::decode(message.payload) else {
                            continue;
                        };
                        if tx.send(relay).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Ok(rx)
    }

    /// Stops telling of `session_id`'s relays (local log; a subscription ends
    /// with its receiver).
    pub fn unfollow(&self, session_id: &str) {
        if let RelayLog::Local { followers, .. } = self {
            followers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(session_id);
        }
    }
}

/// Every relay kept under `session_id`'s subject, in order, then purged.
async fn read_all(
    stream: &jetstream::stream::Stream,
    session_id: &str,
) -> Result<Vec<Relay>, String> {
    use jetstream::stream::DirectGetErrorKind;
    let subject = subject(session_id);
    let mut relays = Vec::new();
    let mut from = None;
    loop {
        match stream
            .direct_get_next_for_subject(subject.clone(), from)
            .await
        {
            Ok(message) => {
                from = Some(message.sequence + 1);
                match Relay::decode(message.payload) {
                    Ok(relay) => relays.push(relay),
                    Err(error) => tracing::warn!(%error, "undecodable kept relay"),
                }
            }
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
            Err(error) => return Err(error.to_string()),
        }
    }
    if from.is_some()
        && let Err(error) = stream.purge().filter(subject).await
    {
        tracing::warn!(%error, "kept relays not purged");
    }
    Ok(relays)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long the gateway keeps relays past the grace period, in these tests.
    const KEEP_PAST_GRACE: Duration = Duration::from_secs(30);

    fn relay(session: &str, n: u32) -> Relay {
        Relay {
            target_session_id: session.into(),
            payload_json: format!("{{\"n\":{n}}}"),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_local_log_keeps_in_order_tells_overflow_and_forgets_what_it_gave() {
        let log = RelayLog::for_bus(&Bus::local(), 3, Duration::from_secs(1), 1)
            .await
            .expect("local log");
        for n in 0..3 {
            log.keep(&relay("s1", n)).await.expect("kept");
        }
        log.keep(&relay("s2", 9)).await.expect("kept");
        let kept = log.take("s1").await.expect("taken");
        assert!(!kept.overflowed);
        let order: Vec<&str> = kept
            .relays
            .iter()
            .map(|r| r.payload_json.as_str())
            .collect();
        assert_eq!(order, ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
        assert_eq!(log.take("s1").await.expect("taken"), Kept::default());
        for n in 0..5 {
            log.keep(&relay("s1", n)).await.expect("kept");
        }
        let kept = log.take("s1").await.expect("taken");
        assert!(kept.overflowed);
        let order: Vec<&str> = kept
            .relays
            .iter()
            .map(|r| r.payload_json.as_str())
            .collect();
        assert_eq!(order, ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]);
        assert_eq!(log.take("s2").await.expect("taken").relays.len(), 1);
        // Followed: what is kept from now on is told as well.
        let mut follower = log.follow("s3").await.expect("follow");
        log.keep(&relay("s3", 7)).await.expect("kept");
        let told = follower.recv().await.expect("told");
        assert_eq!(told.payload_json, "{\"n\":7}");
        assert_ne!(told.nonce, 0);
        assert_eq!(
            log.take("s3").await.expect("taken").relays[0].nonce,
            told.nonce
        );
        log.unfollow("s3");
    }

    /// Sessions the local log holds relays for.
    fn sessions_held(log: &RelayLog) -> usize {
        match log {
            RelayLog::Local { kept, .. } => kept.lock().expect("not poisoned").queues.len(),
            RelayLog::Remote { .. } => unreachable!("a local log"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_log_forgets_sessions_that_never_come_back() {
        let grace = Duration::from_secs(10);
        let log = RelayLog::for_bus(&Bus::local(), 8, grace + KEEP_PAST_GRACE, 1)
            .await
            .expect("local log");
        for n in 0..3 {
            log.keep(&relay("gone-1", n)).await.expect("kept");
        }
        log.keep(&relay("gone-2", 0)).await.expect("kept");
        tokio::time::advance(grace / 2).await;
        log.keep(&relay("gone-2", 1)).await.expect("kept");
        // Past the grace and its margin for the first session only.
        tokio::time::advance(grace / 2 + KEEP_PAST_GRACE + Duration::from_secs(1)).await;
        log.keep(&relay("new", 0)).await.expect("kept");
        assert_eq!(sessions_held(&log), 2, "gone-1's relays are dropped");
        let left = log.take("gone-2").await.expect("taken");
        let order: Vec<&str> = left
            .relays
            .iter()
            .map(|r| r.payload_json.as_str())
            .collect();
        assert_eq!(order, ["{\"n\":1}"], "only gone-2's fresh relay is left");
        tokio::time::advance(grace + KEEP_PAST_GRACE + Duration::from_secs(1)).await;
        assert_eq!(log.take("new").await.expect("taken"), Kept::default());
        log.keep(&relay("newer", 0)).await.expect("kept");
        assert_eq!(sessions_held(&log), 1, "nothing but the newest is held");
    }
}
