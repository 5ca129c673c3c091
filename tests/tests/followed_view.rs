//! A view of a bucket kept by its watch (`meetup_platform::store::due::Followed`)
//! on JetStream, written by another process's client: once it says it has
//! caught up, it holds every write the bucket acknowledged before the question.
//! Found by the presence replicas' test (`presence_grpc.rs`): the head the view
//! waited for was the stream's last sequence as cached when the bucket was
//! opened, so a view that had not yet seen another replica's write answered as
//! caught up (a count one session short).

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use meetup_platform::store::due::{Followed, View};
use meetup_platform::store::{BucketSettings, Entry, StateStore};
use meetup_tests::NatsServer;

#[derive(Default)]
struct Keys(BTreeSet<String>);

impl View for Keys {
    fn apply(&mut self, entry: &Entry) {
        match entry.value {
            Some(_) => self.0.insert(entry.key.clone()),
            None => self.0.remove(&entry.key),
        };
    }
}

async fn store(url: &str) -> StateStore {
    let client = async_nats::connect(url).await.expect("connects");
    StateStore::jetstream(client, BucketSettings::default())
        .await
        .expect("buckets")
}

#[tokio::test]
async fn a_view_that_says_it_caught_up_holds_every_write_acknowledged_before() {
    let nats = NatsServer::start().await.expect("nats-server");
    let (reader, writer) = (store(&nats.url()).await, store(&nats.url()).await);
    let view: Followed<Keys> = Followed::start(reader.calls.clone());
    assert!(
        view.caught_up(Duration::from_secs(5)).await,
        "the view opens"
    );
    for n in 0..200 {
        let key = format!("c.k{n}");
        writer
            .calls
            .create(&key, Bytes::from_static(b"call"))
            .await
            .expect("written");
        // Right after the write, before the watch had time to bring it.
        assert!(
            view.caught_up(Duration::from_secs(5)).await,
            "round {n}: caught up"
        );
        let has = view.read(|keys| keys.0.contains(&key));
        assert_eq!(has, Some(true), "round {n}: a caught-up view lacks {key}");
    }
}
