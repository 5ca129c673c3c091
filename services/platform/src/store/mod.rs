//! The shared state of the system: Key-Value buckets with compare-and-set on each
//! key's revision and an ordered watch of every change. NATS JetStream KV in a
//! cluster; an in-memory store with the same semantics in the embedded mode and
//! for a service started alone.
//!
//! Every write names the revision it expects, so two replicas racing on one key
//! never lose an update: the loser gets [`StoreError::Conflict`], reads again and
//! retries ([`Bucket::modify`]). Revisions grow across the whole bucket (they
//! are stream sequences in JetStream), so a reader that has seen revision `r` has
//! seen every change up to `r`.

pub mod due;
mod jetstream;
pub mod keys;
pub mod leases;
mod memory;
mod modify;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::bus::Bus;
pub use memory::MemoryBucket;
pub use modify::{Change, Versioned};

/// One key's value at one revision; `value` is `None` for a deleted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

/// What a watch yields: every key's latest entry first, then [`Watched::Current`]
/// once those are all delivered, then each change as it happens, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    Entry(Entry),
    Current,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Watched, StoreError>> + Send>>;

/// What [`Bucket::follow_after`] yields, for followers outside the system (the
/// services' watch APIs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// A live key as it was when the follow began (only when following from 0).
    Snapshot(Entry),
    /// Everything before this point has been delivered.
    Current,
    /// A key changed (or was deleted: `value` is `None`) after the position.
    Changed(Entry),
}

pub type TrackedStream = Pin<Box<dyn Stream<Item = Result<Tracked, StoreError>> + Send>>;

/// What a follower knows is there, so that a thing's end is told once: a
/// record that ends (an ended call, a user without sessions) and its later
/// deletion are one end to a follower.
#[derive(Debug, Default)]
pub struct Present {
    keys: std::collections::HashSet<String>,
    current: bool,
}

impl Present {
    /// Notes one followed item; for a change, `alive` says whether its key
    /// now holds something live. Returns false for an end already told (or of
    /// something the follower never saw, once it is current).
    pub fn admit(&mut self, tracked: &Tracked, alive: bool) -> bool {
        match tracked {
            Tracked::Current => {
                self.current = true;
                true
            }
            Tracked::Snapshot(entry) => {
                self.keys.insert(entry.key.clone());
                true
            }
            Tracked::Changed(entry) if alive => {
                self.keys.insert(entry.key.clone());
                true
            }
            // While catching up from a position, each key comes once: its
            // end is news to a follower that may have known it.
            Tracked::Changed(entry) => self.keys.remove(&entry.key) || !self.current,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The key is not at the revision the write expected (or already exists, for
    /// a create): somebody else changed it first.
    #[error("the key changed meanwhile")]
    Conflict,
    #[error("invalid store key {0:?}")]
    InvalidKey(String),
    /// The store cannot be reached or did not answer in time.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store watch ended: {0}")]
    WatchEnded(String),
}

/// Settings of the buckets a cluster creates.
#[derive(Debug, Clone, Copy)]
pub struct BucketSettings {
    /// Copies of each bucket in a NATS cluster (1 on one node, 3 on three).
    pub replicas: usize,
    /// Time-to-live of every entry of the gateways bucket: a lease not renewed
    /// within it is gone.
    pub lease_ttl: Duration,
}

impl Default for BucketSettings {
    fn default() -> Self {
        BucketSettings {
            replicas: 1,
            lease_ttl: Duration::from_secs(3),
        }
    }
}

/// One bucket, cheap to clone: in this process, or a JetStream KV bucket on
/// the NATS server.
#[derive(Debug, Clone)]
pub enum Bucket {
    Local(MemoryBucket),
    Remote(Box<async_nats::jetstream::kv::Store>),
}

impl Bucket {
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        match self {
            Bucket::Local(b) => Ok(b.get(key)),
            Bucket::Remote(kv) => jetstream::get(kv, key).await,
        }
    }

    /// Whether `key` holds a live value, asked of the one copy that cannot lag:
    /// the stream leader. For decisions that destroy state on an absence (a
    /// gateway's lease gone): any replica of a bucket may answer a plain read or
    /// a scan, and one that restarted and is catching up has let old entries
    /// expire without holding the new ones yet.
    pub async fn exists_on_leader(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Bucket::Local(b) => Ok(b.get(key).is_some()),
            Bucket::Remote(kv) => jetstream::exists_on_leader(kv, key).await,
        }
    }

    /// Writes `key` only when it has no live value; returns the new revision.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        match self {
            Bucket::Local(b) => b.create(key, value),
            Bucket::Remote(kv) => jetstream::create(kv, key, value).await,
        }
    }

    /// Writes `key` only when its latest revision is `revision`.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, StoreError> {
        match self {
            Bucket::Local(b) => b.update(key, value, revision),
            Bucket::Remote(kv) => jetstream::update(kv, key, value, revision).await,
        }
    }

    /// Writes `key` whatever it holds (leases, which only their owner writes).
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        match self {
            Bucket::Local(b) => b.put(key, value),
            Bucket::Remote(kv) => jetstream::put(kv, key, value).await,
        }
    }

    /// Deletes `key` only when its latest revision is `revision`.
    pub async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        match self {
            Bucket::Local(b) => b.delete(key, Some(revision)),
            Bucket::Remote(kv) => jetstream::delete(kv, key, Some(revision)).await,
        }
    }

    /// Deletes `key` whatever it holds.
    pub async fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Bucket::Local(b) => b.delete(key, None),
            Bucket::Remote(kv) => jetstream::delete(kv, key, None).await,
        }
    }

    /// The live entries whose key starts with `prefix`, read in one pass.
    pub async fn scan(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        match self {
            Bucket::Local(b) => Ok(b.scan(prefix)),
            Bucket::Remote(kv) => jetstream::scan(kv, prefix).await,
        }
    }

    /// The live keys starting with `prefix` (no values).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Bucket::Local(b) => Ok(b.scan(prefix).into_iter().map(|e| e.key).collect()),
            Bucket::Remote(kv) => jetstream::keys(kv, prefix).await,
        }
    }

    /// Every key's latest entry, then [`Watched::Current`], then every change.
    pub async fn watch(&self) -> Result<WatchStream, StoreError> {
        match self {
            Bucket::Local(b) => Ok(b.watch()),
            Bucket::Remote(kv) => jetstream::watch(kv).await,
        }
    }

    /// From position 0: every live key ([`Tracked::Snapshot`]), then
    /// [`Tracked::Current`], then every change. From a later position (a
    /// revision seen before): each key changed after it at its latest state,
    /// deletes included, then `Current`, then every change. Keys are filtered
    /// by `prefix`.
    pub async fn follow_after(
        &self,
        after: u64,
        prefix: &'static str,
    ) -> Result<TrackedStream, StoreError> {
        use futures::StreamExt;
        let mut current = false;
        let watch = self.watch().await?;
        Ok(Box::pin(watch.filter_map(move |item| {
            let tracked = match item {
                Err(error) => Some(Err(error)),
                Ok(Watched::Current) => {
                    current = true;
                    Some(Ok(Tracked::Current))
                }
                Ok(Watched::Entry(entry)) if !entry.key.starts_with(prefix) => None,
                Ok(Watched::Entry(entry)) if current => Some(Ok(Tracked::Changed(entry))),
                Ok(Watched::Entry(entry)) if after == 0 => {
                    entry.value.is_some().then(|| Ok(Tracked::Snapshot(entry)))
                }
                Ok(Watched::Entry(entry)) => {
                    (entry.revision > after).then(|| Ok(Tracked::Changed(entry)))
                }
            };
            futures::future::ready(tracked)
        })))
    }

    /// How many entries scans ([`Bucket::scan`], [`Bucket::keys`]) have read
    /// from an in-memory bucket; `None` for JetStream, which does not count.
    pub fn scanned(&self) -> Option<u64> {
        match self {
            Bucket::Local(b) => Some(b.scanned()),
            Bucket::Remote(_) => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bucket::Local(_) => "in-memory",
            Bucket::Remote(_) => "jetstream",
        }
    }
}

/// The buckets of the system.
#[derive(Debug, Clone)]
pub struct StateStore {
    /// One key per online user: `UserRecord`.
    pub presence: Bucket,
    /// One key per call: `CallRecord`.
    pub calls: Bucket,
    /// One key per user with live calls they started: `StartedCalls`.
    pub call_index: Bucket,
    /// One key per live gateway: `GatewayLease`, expiring after the lease TTL.
    pub gateways: Bucket,
}

impl StateStore {
    /// Fresh in-memory buckets (embedded mode, or a service alone).
    pub fn memory(settings: BucketSettings) -> Self {
        StateStore {
            presence: Bucket::Local(MemoryBucket::new(None)),
            calls: Bucket::Local(MemoryBucket::new(None)),
            call_index: Bucket::Local(MemoryBucket::new(None)),
            gateways: Bucket::Local(MemoryBucket::new(Some(settings.lease_ttl))),
        }
    }

    /// The JetStream buckets, created when missing. An existing bucket is used
    /// as it is, so every process of a cluster shares one configuration.
    pub async fn jetstream(
        client: async_nats::Client,
        settings: BucketSettings,
    ) -> Result<Self, StoreError> {
        let js = async_nats::jetstream::new(client);
        Ok(StateStore {
            presence: jetstream::open(&js, keys::PRESENCE_BUCKET, settings.replicas, None).await?,
            calls: jetstream::open(&js, keys::CALLS_BUCKET, settings.replicas, None).await?,
            call_index: jetstream::open(&js, keys::CALL_INDEX_BUCKET, settings.replicas, None)
                .await?,
            gateways: jetstream::open(
                &js,
                keys::GATEWAYS_BUCKET,
                settings.replicas,
                Some(settings.lease_ttl),
            )
            .await?,
        })
    }

    /// In-memory buckets for the in-process bus, JetStream ones over NATS.
    pub async fn for_bus(bus: &Bus, settings: BucketSettings) -> Result<Self, StoreError> {
        match bus {
            Bus::Local(_) => Ok(StateStore::memory(settings)),
            Bus::Remote(client) => StateStore::jetstream(client.clone(), settings).await,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.presence.kind()
    }
}

/// How often a read-modify-write is retried after losing a race.
pub const MAX_ATTEMPTS: usize = 64;

/// The pause before attempt `round + 1` of a read-modify-write that lost a race:
/// none at first, then a short random one that grows, so racing writers spread out.
pub async fn pause_after_conflict(round: usize) {
    if round > 2 {
        let jitter = rand::random::<u64>() % (200 * round as u64);
        tokio::time::sleep(Duration::from_micros(jitter)).await;
    }
}

/// The error of a read-modify-write that lost [`MAX_ATTEMPTS`] races in a row.
pub fn contention() -> StoreError {
    StoreError::Unavailable("too much contention on one key".into())
}

/// Lets [`Bucket::modify`] recognise a lost race inside a caller's error type.
pub trait IsConflict {
    fn is_conflict(&self) -> bool;
}

impl IsConflict for StoreError {
    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict)
    }
}
