//! What is due when, kept by each replica from a bucket's ordered watch, so a
//! periodic job asks "what is due now" of memory instead of scanning the
//! bucket, and its cost grows with the changes, not with the keys.
//!
//! Two pieces:
//! - [`Deadlines`]: keys by deadline, mini-redis style (a `BTreeSet` of
//!   `(deadline, key)` beside a key -> deadline map): set, remove, and the keys
//!   due at a time, none of it ever walking the whole index.
//! - [`Followed`]: a view of one bucket (any [`View`]: deadlines, reverse
//!   indexes, counts) fed by a task that follows the bucket's watch: every
//!   key's latest entry first (one full read, on start and again whenever the
//!   watch restarts), then every change in revision order. The writer's own
//!   changes can be fed at once too ([`Followed::observe`]), so a replica reads
//!   what it wrote before its watch brings it back.
//!
//! The view is a hint, never the truth: several replicas write the bucket and
//! the watch lags behind them. So a job re-reads a record before it acts on it
//! (and decides by compare-and-set on the record, as every write does), and
//! while the view is not current (starting, or resyncing after the watch
//! ended) [`Followed::read`] answers `None`: the caller then reads the bucket
//! itself, so nothing due is ever skipped because the view missed it. A key
//! the watch has not brought yet is late by the watch's lag, not lost.
//!
//! For presence's away expiry, say: a `View` that decodes each `u.<user>`
//! record into `Deadlines<String>` of its earliest `away_until`; the expiry
//! pass asks `due(now)` of it and re-reads each user it names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::watch;

use super::{Bucket, Change, Entry, IsConflict, StoreError, Versioned, Watched};

/// Keys by deadline.
#[derive(Debug, Clone)]
pub struct Deadlines<K> {
    by_time: BTreeSet<(SystemTime, K)>,
    by_key: HashMap<K, SystemTime>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            by_time: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Gives `key` its deadline; `None` takes it out.
    pub fn set(&mut self, key: K, deadline: Option<SystemTime>) {
        let old = match deadline {
            Some(at) => self.by_key.insert(key.clone(), at),
            None => self.by_key.remove(&key),
        };
        if let Some(old) = old {
            self.by_time.remove(&(old, key.clone()));
        }
        if let Some(at) = deadline {
            self.by_time.insert((at, key));
        }
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    pub fn deadline(&self, key: &K) -> Option<SystemTime> {
        self.by_key.get(key).copied()
    }

    /// The keys whose deadline is `at` or earlier, earliest first. They stay
    /// until set again or removed: what is due is done by re-reading the
    /// record, and the record's next change moves its deadline.
    pub fn due(&self, at: SystemTime) -> Vec<K> {
        self.by_time
            .iter()
            .take_while(|(deadline, _)| *deadline <= at)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<SystemTime> {
        self.by_time.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// What a [`Followed`] keeps of its bucket. `Default` is the view of an empty
/// bucket: a resync builds a fresh one.
pub trait View: Default + Send + 'static {
    /// The latest state of one key (`value: None`: deleted, maybe a key the
    /// view never had). Entries of one key come in revision order.
    fn apply(&mut self, entry: &Entry);
}

/// A view of one bucket, kept current by its watch; cheap to clone. The
/// follow stops when the last clone goes.
pub struct Followed<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Clone for Followed<V> {
    fn clone(&self) -> Self {
        Followed {
            shared: self.shared.clone(),
        }
    }
}

impl<V> std::fmt::Debug for Followed<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed")
            .field("progress", &*self.shared.inner.progress.borrow())
            .finish_non_exhaustive()
    }
}

struct Shared<V> {
    inner: Arc<Inner<V>>,
    follow: Option<tokio::task::AbortHandle>,
}

impl<V> Drop for Shared<V> {
    fn drop(&mut self) {
        if let Some(follow) = &self.follow {
            follow.abort();
        }
    }
}

struct Inner<V> {
    bucket: Bucket,
    // A std Mutex is fine: never held across an `.await`, and each critical
    // section is one entry applied or one read of the view.
    state: Mutex<State<V>>,
    progress: watch::Sender<Progress>,
}

/// How far the view has followed its bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Every key's latest entry has been applied since the watch (re)started.
    current: bool,
    /// The revision of the last entry the watch brought.
    position: u64,
}

#[derive(Default)]
struct State<V> {
    view: V,
    progress: Progress,
    /// Keys whose own write was applied ([`Followed::observe`]) before the
    /// watch brought it, with that write's revision: the watch's older entries
    /// of those keys are skipped. An entry goes once the watch passed it.
    ahead: HashMap<String, u64>,
    ahead_by_revision: BTreeMap<u64, String>,
}

impl<V: View> State<V> {
    fn watched(&mut self, entry: &Entry) {
        self.progress.position = self.progress.position.max(entry.revision);
        let ahead = self.ahead.get(&entry.key).copied();
        while let Some(first) = self.ahead_by_revision.first_entry() {
            if *first.key() > self.progress.position {
                break;
            }
            let key = first.remove();
            if self
                .ahead
                .get(&key)
                .is_some_and(|r| *r <= self.progress.position)
            {
                self.ahead.remove(&key);
            }
        }
        if ahead.is_some_and(|r| r >= entry.revision) {
            return;
        }
        self.view.apply(entry);
    }

    fn observed(&mut self, entry: &Entry) {
        // The watch brought it, or a later state of the key, already.
        if entry.revision <= self.progress.position
            || self
                .ahead
                .get(&entry.key)
                .is_some_and(|r| *r >= entry.revision)
        {
            return;
        }
        if let Some(old) = self.ahead.insert(entry.key.clone(), entry.revision) {
            self.ahead_by_revision.remove(&old);
        }
        self.ahead_by_revision
            .insert(entry.revision, entry.key.clone());
        self.view.apply(entry);
    }
}

/// The pause before the watch is opened again after it failed.
const REOPEN_AFTER: Duration = Duration::from_millis(250);

impl<V: View> Followed<V> {
    /// Starts following `bucket` (in a task of the current Tokio runtime).
    /// Outside a runtime nothing follows, and the view is never current.
    pub fn start(bucket: Bucket) -> Self {
        let inner = Arc::new(Inner {
            bucket,
            state: Mutex::new(State::default()),
            progress: watch::channel(Progress::default()).0,
        });
        let follow = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(follow(inner.clone())).abort_handle());
        Followed {
            shared: Arc::new(Shared { inner, follow }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<V>> {
        lock(&self.shared.inner)
    }

    /// Asks `query` of the view; `None` while it is not current (the caller
    /// reads the bucket instead).
    pub fn read<R>(&self, query: impl FnOnce(&V) -> R) -> Option<R> {
        let state = self.lock();
        state.progress.current.then(|| query(&state.view))
    }

    /// Applies this replica's own write (the entry it wrote, with the
    /// revision the store gave it) before the watch brings it back. Entries
    /// the view has seen already, or older than what it has, change nothing.
    pub fn observe(&self, entry: &Entry) {
        self.lock().observed(entry);
    }

    /// Changes `key` of the followed bucket by compare-and-set
    /// ([`Bucket::modify`]), then applies what it put to the view at once
    /// ([`Followed::observe`]): a lookup right after the write finds it,
    /// before the watch brings it back. A keep or a delete is left to the
    /// watch.
    pub async fn modify<M, T, E, F, Fut>(&self, key: &str, decide: F) -> Result<(T, u64), E>
    where
        M: prost::Message + Default,
        E: From<StoreError> + IsConflict,
        F: FnMut(Option<Versioned<M>>) -> Fut,
        Fut: std::future::Future<Output = Result<Change<M, T>, E>>,
    {
        let (answer, revision, written) =
            self.shared.inner.bucket.modify_written(key, decide).await?;
        if let Some(value) = written.filter(|_| revision > 0) {
            self.observe(&Entry {
                key: key.to_owned(),
                value: Some(value),
                revision,
            });
        }
        Ok((answer, revision))
    }

    pub fn is_current(&self) -> bool {
        self.shared.inner.progress.borrow().current
    }

    /// Waits, at most `within`, until the view is current and has followed
    /// every write the bucket had when asked (JetStream: its stream's last
    /// sequence, asked of the stream leader). An in-memory bucket has only
    /// this process's writers, who [`Followed::observe`] their writes: being
    /// current is enough. False when the view did not get there in time.
    pub async fn caught_up(&self, within: Duration) -> bool {
        if self.shared.follow.is_none() {
            return false;
        }
        let inner = &self.shared.inner;
        let waited = tokio::time::timeout(within, async {
            let head = match head(&inner.bucket).await {
                Ok(head) => head,
                Err(error) => {
                    tracing::debug!(%error, "bucket head unknown");
                    return false;
                }
            };
            let mut progress = inner.progress.subscribe();
            progress
                .wait_for(|p| p.current && p.position >= head)
                .await
                .is_ok()
        })
        .await;
        waited.unwrap_or(false)
    }
    /// Asks `query` of the view once it has caught up (waiting at most
    /// `within`, see [`Followed::caught_up`]); when it has not, of a view
    /// built from one full read of the keys starting with `prefix`, so that
    /// nothing the watch has yet to bring is missed. Either way the answer is
    /// a hint: whoever acts on it reads the record again.
    pub async fn ask<R>(
        &self,
        within: Duration,
        prefix: &str,
        query: impl Fn(&V) -> R,
    ) -> Result<R, StoreError> {
        if self.caught_up(within).await
            && let Some(answer) = self.read(&query)
        {
            return Ok(answer);
        }
        tracing::debug!("view not caught up; reading the bucket");
        let mut view = V::default();
        for entry in self.shared.inner.bucket.scan(prefix).await? {
            view.apply(&entry);
        }
        Ok(query(&view))
    }
}

fn lock<V>(inner: &Inner<V>) -> std::sync::MutexGuard<'_, State<V>> {
    // No code path panics with the lock held; recover the state if one ever did.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The revision of the bucket's last write (0 for an in-memory bucket: see
/// [`Followed::caught_up`]).
async fn head(bucket: &Bucket) -> Result<u64, StoreError> {
    match bucket {
        Bucket::Local(_) => Ok(0),
        // Asked of the stream leader each time: the KV store's own `status()`
        // answers the stream info cached when the bucket was opened, which
        // made a view "caught up" that had not seen another replica's write.
        Bucket::Remote(kv) => {
            let info = kv
                .stream
                .get_info()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(info.state.last_sequence)
        }
    }
}

/// Follows the bucket for ever: each time the watch opens, a fresh view is
/// built from its first full read, and it is current once that read is in.
async fn follow<V: View>(inner: Arc<Inner<V>>) {
    loop {
        match inner.bucket.watch().await {
            Ok(mut watch) => {
                *lock(&inner) = State::default();
                inner.progress.send_replace(Progress::default());
                while let Some(item) = watch.next().await {
                    let progress = {
                        let mut state = lock(&inner);
                        match item {
                            Ok(Watched::Entry(entry)) => state.watched(&entry),
                            Ok(Watched::Current) => state.progress.current = true,
                            Err(error) => {
                                tracing::warn!(%error, "index watch ended; reading again");
                                break;
                            }
                        }
                        state.progress
                    };
                    inner
                        .progress
                        .send_if_modified(|p| std::mem::replace(p, progress) != progress);
                }
            }
            Err(error) => tracing::warn!(%error, "index watch not opened"),
        }
        lock(&inner).progress.current = false;
        inner.progress.send_modify(|p| p.current = false);
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::MemoryBucket;

    #[test]
    fn deadlines_answer_what_is_due_earliest_first() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut due = Deadlines::default();
        due.set("b", Some(t(20)));
        due.set("a", Some(t(10)));
        due.set("c", Some(t(30)));
        assert_eq!(due.due(t(20)), ["a", "b"]);
        due.set("a", Some(t(40)));
        assert_eq!(due.due(t(20)), ["b"], "a moved");
        due.set("b", None);
        due.remove(&"c");
        assert_eq!(due.due(t(100)), ["a"]);
        assert_eq!(
            (due.len(), due.next(), due.deadline(&"a")),
            (1, Some(t(40)), Some(t(40)))
        );
    }

    /// The keys the view holds, with their revision.
    #[derive(Default)]
    struct Keys(HashMap<String, u64>);

    impl View for Keys {
        fn apply(&mut self, entry: &Entry) {
            match entry.value {
                Some(_) => self.0.insert(entry.key.clone(), entry.revision),
                None => self.0.remove(&entry.key),
            };
        }
    }

    fn v() -> Bytes {
        Bytes::from_static(b"x")
    }

    async fn current<V: View>(view: &Followed<V>) {
        assert!(view.caught_up(Duration::from_secs(5)).await, "caught up");
    }

    #[tokio::test]
    async fn the_view_follows_every_writer_and_its_own_writes_at_once() {
        let memory = MemoryBucket::new(None);
        memory.put("old", v()).expect("put");
        let bucket = Bucket::Local(memory.clone());
        let view: Followed<Keys> = Followed::start(bucket.clone());
        current(&view).await;
        assert_eq!(view.read(|k| k.0.len()), Some(1), "the first full read");
        // Another writer: seen once the watch brings it.
        let r = memory.put("other", v()).expect("put");
        tokio::time::timeout(Duration::from_secs(5), async {
            while view.read(|k| k.0.get("other").copied()).flatten() != Some(r) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the watch brought it");
        // Our own write: seen at once, and not undone by older entries.
        let r1 = memory.put("mine", v()).expect("put");
        let r2 = memory.put("mine", v()).expect("put");
        view.observe(&Entry {
            key: "mine".into(),
            value: Some(v()),
            revision: r2,
        });
        assert_eq!(view.read(|k| k.0.get("mine").copied()).flatten(), Some(r2));
        view.observe(&Entry {
            key: "mine".into(),
            value: Some(v()),
            revision: r1,
        });
        memory.delete("old", None).expect("delete");
        tokio::time::timeout(Duration::from_secs(5), async {
            while view.read(|k| k.0.contains_key("old")) != Some(false) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the delete came");
        assert_eq!(
            view.read(|k| k.0.get("mine").copied()).flatten(),
            Some(r2),
            "the watch's older entry of mine was skipped"
        );
    }

    #[tokio::test]
    async fn a_write_through_the_view_is_in_it_before_the_watch_brings_it() {
        use meetup_proto::bus::v1::StartedCalls;
        let memory = MemoryBucket::new(None);
        let view: Followed<Keys> = Followed::start(Bucket::Local(memory.clone()));
        current(&view).await;
        // No await between the write and the read lets the watch's task run
        // (one thread, and every in-memory write is ready at once).
        let ((), revision) = view
            .modify("k", |_: Option<Versioned<StartedCalls>>| async {
                Ok::<_, StoreError>(Change::Put(StartedCalls::default(), ()))
            })
            .await
            .expect("written");
        assert!(revision > 0);
        assert_eq!(
            view.read(|k| k.0.get("k").copied()).flatten(),
            Some(revision)
        );
        // A keep writes nothing and tells the view nothing.
        let (kept, none) = view
            .modify("other", |_: Option<Versioned<StartedCalls>>| async {
                Ok::<_, StoreError>(Change::Keep("kept"))
            })
            .await
            .expect("kept");
        assert_eq!((kept, none), ("kept", 0));
        assert_eq!(view.read(|k| k.0.contains_key("other")), Some(false));
    }

    #[test]
    fn asking_a_view_that_does_not_follow_reads_the_bucket() {
        let memory = MemoryBucket::new(None);
        memory.put("a", v()).expect("put");
        memory.put("b", v()).expect("put");
        // Started outside a runtime: nothing follows, the view is never current.
        let view: Followed<Keys> = Followed::start(Bucket::Local(memory.clone()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let keys = runtime
            .block_on(view.ask(Duration::from_secs(5), "", |k| k.0.len()))
            .expect("read");
        assert_eq!((keys, memory.scanned()), (2, 2), "from one full read");
    }

    #[tokio::test]
    async fn asking_a_view_that_caught_up_reads_nothing() {
        let memory = MemoryBucket::new(None);
        memory.put("a", v()).expect("put");
        let view: Followed<Keys> = Followed::start(Bucket::Local(memory.clone()));
        let keys = view
            .ask(Duration::from_secs(5), "", |k| k.0.len())
            .await
            .expect("read");
        assert_eq!((keys, memory.scanned()), (1, 0), "from the view");
    }

    #[tokio::test]
    async fn a_watch_that_fell_behind_is_read_again_from_the_start() {
        let memory = MemoryBucket::new(None);
        let view: Followed<Keys> = Followed::start(Bucket::Local(memory.clone()));
        current(&view).await;
        // More changes than the watch buffers, with the follower unable to run
        // (this test's runtime has one thread): the watch ends, lagging.
        for n in 0..70_000 {
            memory.put(&format!("k{}", n % 100), v()).expect("put");
        }
        memory.delete("k0", None).expect("delete");
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let seen = view.read(|k| (k.0.len(), k.0.contains_key("k0")));
                if seen == Some((99, false)) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("read again from the start");
        current(&view).await;
    }
}
