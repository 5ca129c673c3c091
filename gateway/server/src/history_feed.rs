//! What feeds the history service of this process (no `HISTORY_URL`): the watch
//! of the calls bucket itself. The standalone history service reads the call
//! snapshots from a durable JetStream consumer (`meetup_history::source`); in the
//! embedded mode there is no stream, only the in-memory bucket.

use std::collections::HashMap;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use meetup_history::{CallSnapshot, HistoryStore};
use meetup_platform::store::{Bucket, Watched};

/// Changes the history takes from the watch at most at once.
const INGEST_BATCH: usize = 512;

/// Feeds the history of this process until `stop`: every revision of every
/// call's key, from the watch of the calls bucket (its snapshot first, so a
/// restart catches up with the records still in the bucket). Applying is
/// idempotent: an old or repeated version changes nothing.
pub async fn follow_calls(
    store: HistoryStore,
    calls: Bucket,
    stop: impl Future<Output = ()> + Send,
) {
    tokio::select! {
        () = stop => {}
        () = ingest(store, calls) => {}
    }
}

async fn ingest(store: HistoryStore, calls: Bucket) {
    loop {
        let mut watch = match calls.watch().await {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "history cannot watch the calls; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // What the watch has already delivered is taken at once, and only the
        // newest snapshot of each call is written: a call's start, joins,
        // leaves and end often arrive together, and the last says it all.
        let mut lost = false;
        while let Some(first) = watch.next().await {
            let mut newest: HashMap<String, CallSnapshot> = HashMap::new();
            let mut item = Some(first);
            let mut taken = 0;
            while let Some(next) = item.take() {
                match next {
                    Ok(Watched::Entry(entry)) => {
                        if let Some(value) = entry.value {
                            match meetup_history::source::decode_call_record(&value) {
                                Ok(Some(snapshot)) => {
                                    let keep = newest
                                        .get(&snapshot.call_id)
                                        .is_none_or(|kept| kept.version < snapshot.version);
                                    if keep {
                                        newest.insert(snapshot.call_id.clone(), snapshot);
                                    }
                                }
                                Ok(None) => {}
                                Err(error) => tracing::warn!(%error, "undecodable call record"),
                            }
                        }
                    }
                    Ok(Watched::Current) => {}
                    Err(error) => {
                        tracing::warn!(%error, "history lost the calls watch; watching again");
                        lost = true;
                        break;
                    }
                }
                taken += 1;
                if taken < INGEST_BATCH {
                    item = watch.next().now_or_never().flatten();
                }
            }
            for snapshot in newest.into_values() {
                if let Err(error) = store.apply(&snapshot).await {
                    tracing::warn!(%error, call_id = %snapshot.call_id, "call not recorded in the history");
                }
            }
            if lost {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
