//! Reads of the state store on a three-node NATS cluster (buckets with three
//! replicas) through a node that was down while keys were written: until that
//! node has caught up, its copy lacks them, and a direct get it answers says
//! "not found". Found by the stress script: during a NATS node's restart a
//! call just started (its start acknowledged) was refused to its joiner as
//! `call-not-found`. A key written and acknowledged must be found by any
//! process, through any node.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use meetup_platform::store::{BucketSettings, StateStore, StoreError};
use meetup_tests::cluster::NatsCluster;

/// Restarts of the lagging node, each with its own keys written while it was down.
const ROUNDS: usize = 4;
/// Keys written while the node is down, in each round.
const KEYS: usize = 300;

async fn store_through(url: &str) -> StateStore {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .expect("connects");
    let settings = BucketSettings {
        replicas: 3,
        ..BucketSettings::default()
    };
    // The buckets' stream info needs the metadata leader, which a node that
    // just started may not know yet.
    for _ in 0..100 {
        if let Ok(store) = StateStore::jetstream(client.clone(), settings).await {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the buckets never opened through {url}");
}

/// Creates `key`. While a stream elects a leader (a node just died) a write
/// may be refused as unavailable, as a client would see it: tried again, for
/// at most 10 s. An earlier try that was stored after all makes it exist.
async fn create(writer: &StateStore, key: &str) {
    for _ in 0..100 {
        match writer.calls.create(key, Bytes::from_static(b"call")).await {
            Ok(_) | Err(StoreError::Conflict) => return,
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => panic!("{key}: {other}"),
        }
    }
    panic!("{key} never written");
}

/// Writes through one node and reads each key back at once through every
/// node: a follower's copy may not hold a write its leader acknowledged yet.
async fn read_back(
    writer: &StateStore,
    readers: &[StateStore],
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut missing = Vec::new();
    for i in 0..n {
        let key = format!("c.{prefix}-{i}");
        create(writer, &key).await;
        for (node, reader) in readers.iter().enumerate() {
            if reader.calls.get(&key).await.ok().flatten().is_none() {
                missing.push(format!("{key} through n{node}"));
            }
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_acknowledged_is_found_through_every_node_at_once() {
    let mut nats = NatsCluster::start().await.expect("nats cluster");
    let writer = store_through(&nats.nodes[0].url()).await;
    let mut readers = Vec::new();
    for node in &nats.nodes {
        readers.push(store_through(&node.url()).await);
    }
    let mut missing = read_back(&writer, &readers, "steady", KEYS).await;
    for round in 0..ROUNDS {
        // A node that was down while keys were written catches up after it
        // starts again; its readers reconnect to it meanwhile.
        nats.nodes[2].stop("KILL").await.expect("n2 stops");
        for i in 0..KEYS {
            let key = format!("c.down-{round}-{i}");
            create(&writer, &key).await;
        }
        nats.nodes[2].start().await.expect("n2 starts again");
        missing.extend(read_back(&writer, &readers, &format!("after-{round}"), KEYS).await);
        for i in 0..KEYS {
            let key = format!("c.down-{round}-{i}");
            if readers[2].calls.get(&key).await.ok().flatten().is_none() {
                missing.push(format!("{key} through n2"));
            }
        }
        nats.wait_streams_current().await.expect("caught up");
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged keys read as absent: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
