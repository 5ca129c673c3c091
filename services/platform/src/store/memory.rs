//! The in-memory bucket: JetStream KV semantics (bucket-wide revisions,
//! compare-and-set, ordered watch, entries that expire) inside one process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::{Entry, StoreError, WatchStream, Watched, keys};

/// Deleted keys remembered for watches that start from a position (as JetStream
/// keeps a delete marker per key); the oldest half goes when there are more.
const MAX_TOMBSTONES: usize = 65_536;

/// Changes a watcher may fall behind by before its watch ends (it then starts
/// again from a fresh snapshot, like a JetStream watcher that lost its consumer).
const WATCH_BUFFER: usize = 65_536;

/// Cheap-to-clone handle; clones share the bucket.
#[derive(Debug, Clone)]
pub struct MemoryBucket {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ttl: Option<Duration>,
    // A std Mutex is fine: it is never held across an `.await`, and each critical
    // section is one map operation.
    state: Mutex<State>,
    changes: broadcast::Sender<Entry>,
    /// Entries handed out by scans, ever: what a whole-bucket pass costs,
    /// for tests that check a periodic job reads only what is due.
    scanned: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    /// key -> (value, revision, written at)
    entries: BTreeMap<String, (Bytes, u64, Instant)>,
    /// Deleted key -> revision of the delete.
    tombstones: BTreeMap<String, u64>,
}

impl State {
    fn bury(&mut self, key: &str, revision: u64) {
        self.tombstones.insert(key.to_owned(), revision);
        if self.tombstones.len() > MAX_TOMBSTONES {
            let mut revisions: Vec<u64> = self.tombstones.values().copied().collect();
            revisions.sort_unstable();
            let cut = revisions[revisions.len() / 2];
            self.tombstones.retain(|_, r| *r > cut);
        }
    }
}

impl MemoryBucket {
    /// A bucket whose entries live `ttl` after their last write, or for ever.
    pub fn new(ttl: Option<Duration>) -> Self {
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        MemoryBucket {
            shared: Arc::new(Shared {
                ttl,
                state: Mutex::new(State::default()),
                changes,
                scanned: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics with the lock held; recover the state if one ever did.
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ttl) = self.shared.ttl {
            state.entries.retain(|_, (_, _, at)| at.elapsed() < ttl);
        }
        state
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        let state = self.lock();
        state.entries.get(key).map(|(value, revision, _)| Entry {
            key: key.to_owned(),
            value: Some(value.clone()),
            revision: *revision,
        })
    }

    /// Writes when the key's latest revision is `expected` (`None`: any; `Some(0)`:
    /// the key must not exist).
    fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        if !keys::is_valid(key) {
            return Err(StoreError::InvalidKey(key.to_owned()));
        }
        let mut state = self.lock();
        let current = state
            .entries
            .get(key)
            .map_or(0, |(_, revision, _)| *revision);
        if expected.is_some_and(|expected| expected != current) {
            return Err(StoreError::Conflict);
        }
        state.revision += 1;
        let revision = state.revision;
        match &value {
            Some(value) => {
                state.tombstones.remove(key);
                state
                    .entries
                    .insert(key.to_owned(), (value.clone(), revision, Instant::now()));
            }
            None => {
                state.entries.remove(key);
                state.bury(key, revision);
            }
        }
        // Sent under the lock, so watchers get changes in revision order. No
        // receiver is fine: nobody watches.
        let _ = self.shared.changes.send(Entry {
            key: key.to_owned(),
            value,
            revision,
        });
        Ok(revision)
    }

    pub fn create(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.write(key, Some(value), Some(0))
    }

    pub fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, StoreError> {
        if revision == 0 {
            return Err(StoreError::Conflict);
        }
        self.write(key, Some(value), Some(revision))
    }

    pub fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.write(key, Some(value), None)
    }

    pub fn delete(&self, key: &str, revision: Option<u64>) -> Result<(), StoreError> {
        if revision == Some(0) {
            return Err(StoreError::Conflict);
        }
        self.write(key, None, revision).map(|_| ())
    }

    pub fn scan(&self, prefix: &str) -> Vec<Entry> {
        let state = self.lock();
        let entries: Vec<Entry> = state
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (value, revision, _))| Entry {
                key: key.clone(),
                value: Some(value.clone()),
                revision: *revision,
            })
            .collect();
        self.shared
            .scanned
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        entries
    }

    /// How many entries scans have read from this bucket since it was made.
    pub fn scanned(&self) -> u64 {
        self.shared.scanned.load(Ordering::Relaxed)
    }

    pub fn watch(&self) -> WatchStream {
        // The snapshot and the subscription are taken under one lock: no change
        // falls between them, and none is delivered twice.
        let (snapshot, changes) = {
            let state = self.lock();
            let mut snapshot: Vec<Entry> = state
                .entries
                .iter()
                .map(|(key, (value, revision, _))| Entry {
                    key: key.clone(),
                    value: Some(value.clone()),
                    revision: *revision,
                })
                .chain(state.tombstones.iter().map(|(key, revision)| Entry {
                    key: key.clone(),
                    value: None,
                    revision: *revision,
                }))
                .collect();
            snapshot.sort_by_key(|e| e.revision);
            (snapshot, self.shared.changes.subscribe())
        };
        let head = futures::stream::iter(
            snapshot
                .into_iter()
                .map(|e| Ok(Watched::Entry(e)))
                .chain(std::iter::once(Ok(Watched::Current))),
        );
        let live = BroadcastStream::new(changes).map(|change| match change {
            Ok(entry) => Ok(Watched::Entry(entry)),
            Err(lagged) => Err(StoreError::WatchEnded(lagged.to_string())),
        });
        Box::pin(head.chain(live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn writes_compare_and_set_on_the_revision() {
        let b = MemoryBucket::new(None);
        let r1 = b.create("k", v("1")).expect("create");
        assert_eq!(b.create("k", v("x")), Err(StoreError::Conflict));
        let r2 = b.update("k", v("2"), r1).expect("update");
        assert!(r2 > r1);
        assert_eq!(b.update("k", v("3"), r1), Err(StoreError::Conflict));
        assert_eq!(b.delete("k", Some(r1)), Err(StoreError::Conflict));
        b.delete("k", Some(r2)).expect("delete");
        assert_eq!(b.get("k"), None);
        assert!(
            b.create("k", v("again")).is_ok(),
            "a deleted key can be created"
        );
        assert!(matches!(
            b.create("bad key", v("1")),
            Err(StoreError::InvalidKey(_))
        ));
    }

    #[test]
    fn scan_takes_one_prefix() {
        let b = MemoryBucket::new(None);
        for key in ["a.1", "a.2", "b.1", "a"] {
            b.put(key, v("x")).expect("put");
        }
        let keys: Vec<_> = b.scan("a.").into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["a.1", "a.2"]);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let b = MemoryBucket::new(Some(Duration::from_millis(30)));
        b.put("g", v("x")).expect("put");
        assert!(b.get("g").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.get("g").is_none());
        assert!(b.scan("").is_empty());
    }

    #[tokio::test]
    async fn a_watch_gives_the_snapshot_then_every_change_in_order() {
        let b = MemoryBucket::new(None);
        b.put("x", v("1")).expect("put");
        b.put("y", v("1")).expect("put");
        let mut watch = b.watch();
        let r = b.put("x", v("2")).expect("put");
        b.delete("y", None).expect("delete");
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(watch.next().await.expect("item").expect("ok"));
        }
        assert!(matches!(&seen[0], Watched::Entry(e) if e.key == "x" && e.revision == 1));
        assert!(matches!(&seen[1], Watched::Entry(e) if e.key == "y"));
        assert_eq!(seen[2], Watched::Current);
        assert!(matches!(&seen[3], Watched::Entry(e) if e.key == "x" && e.revision == r));
        assert!(matches!(&seen[4], Watched::Entry(e) if e.key == "y" && e.value.is_none()));
    }
}
