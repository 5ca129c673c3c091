//! The JetStream KV side of [`super::Bucket`]: the library's compare-and-set
//! writes, and reads through ordered consumers of the bucket's stream so that a
//! scan or a watch knows when it has seen every key (also in an empty bucket).

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use futures::StreamExt;

use super::{Bucket, Entry, StoreError, WatchStream, Watched, keys};

/// The header JetStream KV marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";
/// Marker reasons of the server's own deletes (max age, purge).
const MARKER_REASON: &str = "Nats-Marker-Reason";
/// Longest wait for one store operation; past it the store counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write that reached no stream leader is sent again (see [`write`]).
const UNROUTED_RETRY: Duration = Duration::from_secs(4);

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn timed<T>(
    what: &'static str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OP_TIMEOUT, op)
        .await
        .map_err(|_| StoreError::Unavailable(format!("{what} timed out")))?
}

/// Opens the bucket, creating it when missing.
pub async fn open(
    js: &async_nats::jetstream::Context,
    name: &str,
    replicas: usize,
    ttl: Option<Duration>,
) -> Result<Bucket, StoreError> {
    let store = match js.get_key_value(name).await {
        Ok(store) => store,
        Err(_) => {
            let config = kv::Config {
                bucket: name.to_owned(),
                history: 1,
                max_age: ttl.unwrap_or_default(),
                storage: StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            };
            match js.create_key_value(config).await {
                Ok(store) => store,
                // Another process created it meanwhile.
                Err(create_error) => js.get_key_value(name).await.map_err(|_| {
                    StoreError::Unavailable(format!("cannot create bucket {name}: {create_error}"))
                })?,
            }
        }
    };
    Ok(Bucket::Remote(Box::new(store)))
}

/// The key's latest entry. A direct get, answered by any replica of the
/// bucket; an absence (or a delete) is asked again of the stream leader: a replica that
/// restarted and is catching up misses keys written while it was down, and
/// "not found" must never be decided on a lagging copy (a call just started
/// would be refused to its joiner). A present value may be a little old: every
/// write that follows a read names the revision it read, so an old one loses
/// the compare-and-set and is read again.
pub async fn get(kv: &kv::Store, key: &str) -> Result<Option<Entry>, StoreError> {
    if !keys::is_valid(key) {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    let entry = timed("get", async { kv.entry(key).await.map_err(unavailable) }).await?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => Ok(Some(Entry {
            key: e.key,
            value: Some(e.value),
            revision: e.revision,
        })),
        // Absent or deleted here: maybe only on this copy.
        _ => get_on_leader(kv, key).await,
    }
}

/// The key's latest entry as the stream leader holds it (the stream message
/// API, not the direct get, is answered by the leader).
async fn get_on_leader(kv: &kv::Store, key: &str) -> Result<Option<Entry>, StoreError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", kv.prefix);
    timed("get on leader", async {
        match kv.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let deleted = message.headers.get(KV_OPERATION).is_some()
                    || message.headers.get(MARKER_REASON).is_some();
                Ok((!deleted).then(|| Entry {
                    key: key.to_owned(),
                    value: Some(message.payload),
                    revision: message.sequence,
                }))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    })
    .await
}

pub async fn exists_on_leader(kv: &kv::Store, key: &str) -> Result<bool, StoreError> {
    if !keys::is_valid(key) {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    Ok(get_on_leader(kv, key).await?.is_some())
}

/// What a failed write says beneath the library's wrapping.
#[derive(Debug, PartialEq, Eq)]
enum WriteFailure {
    /// The expected revision was not the key's: another writer came first.
    Conflict,
    /// Nobody took the message: the stream has no leader at the moment (its
    /// leader's node died and the replicas are electing another).
    Unrouted,
    Other,
}

/// Looks through the error's causes. The library recognises a wrong revision
/// only by the server's error code 10071, but clustered nats-server 2.11 and
/// newer answer a failed compare-and-set with 10164 (`wrong last sequence`,
/// without the number): without this, a lost race on a replicated bucket read
/// as "store unavailable" and was never retried.
fn write_failure(error: &(dyn std::error::Error + 'static)) -> WriteFailure {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(publish) = error.downcast_ref::<PublishError>() {
            match publish.kind() {
                PublishErrorKind::WrongLastSequence => return WriteFailure::Conflict,
                PublishErrorKind::StreamNotFound => return WriteFailure::Unrouted,
                _ => {}
            }
        }
        if let Some(server) = error.downcast_ref::<async_nats::jetstream::Error>()
            && matches!(
                server.error_code(),
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            )
        {
            return WriteFailure::Conflict;
        }
        cause = error.source();
    }
    WriteFailure::Other
}

fn write_error(error: impl std::error::Error + 'static) -> StoreError {
    match write_failure(&error) {
        WriteFailure::Conflict => StoreError::Conflict,
        _ => unavailable(error),
    }
}

/// Runs a write, and runs it again while it reaches no stream leader, for up to
/// [`UNROUTED_RETRY`]: after a NATS node dies, the streams it led elect a new
/// leader within seconds, and until then a write gets "no responders". Such a
/// write was taken by nobody, so sending it again cannot apply it twice.
async fn write<T, E, F>(mut op: impl FnMut() -> F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let deadline = tokio::time::Instant::now() + UNROUTED_RETRY;
    let mut pause = Duration::from_millis(20);
    loop {
        match op().await {
            Err(error)
                if write_failure(&error) == WriteFailure::Unrouted
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::debug!(%error, "write reached no stream leader, sending it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

pub async fn create(kv: &kv::Store, key: &str, value: Bytes) -> Result<u64, StoreError> {
    if !keys::is_valid(key) {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    timed("create", async {
        write(|| kv.create(key, value.clone()))
            .await
            .map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => StoreError::Conflict,
                _ => write_error(e),
            })
    })
    .await
}

pub async fn update(
    kv: &kv::Store,
    key: &str,
    value: Bytes,
    revision: u64,
) -> Result<u64, StoreError> {
    if !keys::is_valid(key) {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    if revision == 0 {
        return Err(StoreError::Conflict);
    }
    timed("update", async {
        write(|| kv.update(key, value.clone(), revision))
            .await
            .map_err(write_error)
    })
    .await
}

pub async fn put(kv: &kv::Store, key: &str, value: Bytes) -> Result<u64, StoreError> {
    if !keys::is_valid(key) {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    timed("put", async {
        write(|| kv.put(key, value.clone()))
            .await
            .map_err(write_error)
    })
    .await
}

pub async fn delete(kv: &kv::Store, key: &str, revision: Option<u64>) -> Result<(), StoreError> {
    if !keys::is_valid(key) {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    timed("delete", async {
        write(|| kv.delete_expect_revision(key, revision))
            .await
            .map_err(write_error)
    })
    .await
}

/// An ordered consumer on the latest message of every key under `prefix`, then
/// (for a watch) every new one. Also returns whether nothing was pending at start.
async fn latest_per_key(
    kv: &kv::Store,
    prefix: &str,
) -> Result<(async_nats::jetstream::consumer::push::Ordered, bool), StoreError> {
    let consumer = kv
        .stream
        .create_consumer(OrderedConfig {
            // The default inbox prefix, which the client's own inboxes use too.
            deliver_subject: format!("_INBOX.{:032x}", rand::random::<u128>()),
            description: Some("meetup state reader".to_owned()),
            filter_subject: format!("{}{prefix}>", kv.prefix),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    let empty = consumer.cached_info().num_pending == 0;
    let messages = consumer.messages().await.map_err(unavailable)?;
    Ok((messages, empty))
}

/// One message of the bucket's stream as an [`Entry`], and how many are pending.
fn entry_of(
    kv: &kv::Store,
    message: &async_nats::jetstream::Message,
) -> Result<(Entry, u64), StoreError> {
    let info = message.info().map_err(unavailable)?;
    let deleted = message
        .headers
        .as_ref()
        .is_some_and(|h| h.get(KV_OPERATION).is_some() || h.get(MARKER_REASON).is_some());
    let key = message
        .subject
        .strip_prefix(kv.prefix.as_str())
        .ok_or_else(|| StoreError::Unavailable(format!("foreign subject {}", message.subject)))?
        .to_owned();
    Ok((
        Entry {
            key,
            value: (!deleted).then(|| message.payload.clone()),
            revision: info.stream_sequence,
        },
        info.pending,
    ))
}

pub async fn scan(kv: &kv::Store, prefix: &str) -> Result<Vec<Entry>, StoreError> {
    timed("scan", async {
        let (mut messages, empty) = latest_per_key(kv, prefix).await?;
        let mut entries = Vec::new();
        if empty {
            return Ok(entries);
        }
        while let Some(message) = messages.next().await {
            let message = message.map_err(unavailable)?;
            let (entry, pending) = entry_of(kv, &message)?;
            if entry.value.is_some() {
                entries.push(entry);
            }
            if pending == 0 {
                return Ok(entries);
            }
        }
        Err(StoreError::Unavailable("scan ended early".into()))
    })
    .await
}

pub async fn keys(kv: &kv::Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    timed("keys", async {
        let mut keys = kv.keys().await.map_err(unavailable)?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if key.starts_with(prefix) {
                found.push(key);
            }
        }
        Ok(found)
    })
    .await
}

pub async fn watch(kv: &kv::Store) -> Result<WatchStream, StoreError> {
    let (messages, empty) = timed("watch", latest_per_key(kv, "")).await?;
    let kv = kv.clone();
    let head = futures::stream::iter(empty.then_some(Ok(Watched::Current)));
    let mut current = empty;
    let live = messages.flat_map(move |message| {
        let items: Vec<Result<Watched, StoreError>> = match message {
            Err(error) => vec![Err(StoreError::WatchEnded(error.to_string()))],
            Ok(message) => match entry_of(&kv, &message) {
                Err(error) => vec![Err(error)],
                Ok((entry, pending)) => {
                    let mut items = vec![Ok(Watched::Entry(entry))];
                    if !current && pending == 0 {
                        current = true;
                        items.push(Ok(Watched::Current));
                    }
                    items
                }
            },
        };
        futures::stream::iter(items)
    });
    Ok(Box::pin(head.chain(live)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u64) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": code, "description": "wrong last sequence"
        }))
        .unwrap_or_else(|e| panic!("server error json: {e}"))
    }

    #[test]
    fn a_lost_race_is_a_conflict_whichever_code_the_server_uses() {
        for code in [10071, 10164] {
            let publish = PublishError::with_source(PublishErrorKind::Other, server_error(code));
            let update = kv::UpdateError::with_source(kv::UpdateErrorKind::Other, publish);
            assert_eq!(write_failure(&update), WriteFailure::Conflict, "{code}");
            assert!(matches!(write_error(update), StoreError::Conflict));
        }
    }

    #[test]
    fn no_responders_is_unrouted_and_the_rest_unavailable() {
        let unrouted = kv::UpdateError::with_source(
            kv::UpdateErrorKind::Other,
            PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert_eq!(write_failure(&unrouted), WriteFailure::Unrouted);
        let other = kv::UpdateError::with_source(
            kv::UpdateErrorKind::Other,
            PublishError::new(PublishErrorKind::BrokenPipe),
        );
        assert_eq!(write_failure(&other), WriteFailure::Other);
        assert!(matches!(write_error(other), StoreError::Unavailable(_)));
    }
}
