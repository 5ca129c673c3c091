//! The compare-and-set cycle every write of the services goes through, written
//! once: read a key as a protobuf message, decide what to do with it, write the
//! decision with the revision that was read, and start again from the read when
//! another writer came first.

use bytes::Bytes;

use super::{Bucket, IsConflict, MAX_ATTEMPTS, StoreError, contention, pause_after_conflict};

/// A message read from a bucket, with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<M> {
    pub value: M,
    pub revision: u64,
}

/// What a [`Bucket::modify`] decided, with the answer `T` for its caller.
#[derive(Debug)]
pub enum Change<M, T> {
    /// Nothing to write.
    Keep(T),
    /// Write this message (over what was read, or as a new key).
    Put(M, T),
    /// Delete the key (nothing happens when it was absent).
    Delete(T),
}

impl Bucket {
    /// Reads `key` as an `M`, lets `decide` choose a [`Change`], and makes it
    /// with the revision read, so that nothing another writer did meanwhile is
    /// lost: when one came first, everything starts again from the read (a
    /// bounded number of times, pausing a little longer each time). A value
    /// that is not an `M` is handed to `decide` as absent, and a `Put`
    /// replaces it. Returns `decide`'s answer and the revision written (0 when
    /// nothing was, or on a delete).
    pub async fn modify<M, T, E, F, Fut>(&self, key: &str, decide: F) -> Result<(T, u64), E>
    where
        M: prost::Message + Default,
        E: From<StoreError> + IsConflict,
        F: FnMut(Option<Versioned<M>>) -> Fut,
        Fut: std::future::Future<Output = Result<Change<M, T>, E>>,
    {
        let (answer, revision, _) = self.modify_written(key, decide).await?;
        Ok((answer, revision))
    }

    /// [`Bucket::modify`], also returning the value it put (`None` when it
    /// put none: a keep or a delete), for a caller that tells a view of the
    /// bucket about its own write ([`super::due::Followed::modify`]).
    pub(super) async fn modify_written<M, T, E, F, Fut>(
        &self,
        key: &str,
        mut decide: F,
    ) -> Result<(T, u64, Option<Bytes>), E>
    where
        M: prost::Message + Default,
        E: From<StoreError> + IsConflict,
        F: FnMut(Option<Versioned<M>>) -> Fut,
        Fut: std::future::Future<Output = Result<Change<M, T>, E>>,
    {
        for round in 0..MAX_ATTEMPTS {
            let entry = self.get(key).await?;
            // The revision a write must name: the key holds a value (a deleted
            // key is created anew).
            let held = entry
                .as_ref()
                .filter(|e| e.value.is_some())
                .map(|e| e.revision);
            let read = entry.and_then(|e| match M::decode(e.value?) {
                Ok(value) => Some(Versioned {
                    value,
                    revision: e.revision,
                }),
                Err(error) => {
                    tracing::error!(key, %error, "undecodable value; taken as absent");
                    None
                }
            });
            let written = match decide(read).await? {
                Change::Keep(answer) => return Ok((answer, 0, None)),
                Change::Put(message, answer) => {
                    let bytes = Bytes::from(message.encode_to_vec());
                    let written = match held {
                        Some(revision) => self.update(key, bytes.clone(), revision).await,
                        None => self.create(key, bytes.clone()).await,
                    };
                    written.map(|revision| (answer, revision, Some(bytes)))
                }
                Change::Delete(answer) => match held {
                    Some(revision) => self.delete(key, revision).await.map(|()| (answer, 0, None)),
                    None => return Ok((answer, 0, None)),
                },
            };
            match written {
                Ok(done) => return Ok(done),
                Err(error) if error.is_conflict() => pause_after_conflict(round).await,
                Err(error) => return Err(error.into()),
            }
        }
        Err(contention().into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meetup_proto::bus::v1::{StartedCall, StartedCalls};
    use prost::Message;

    use super::*;
    use crate::store::MemoryBucket;

    fn bucket() -> Bucket {
        Bucket::Local(MemoryBucket::new(None))
    }

    async fn add(bucket: &Bucket, call_id: &str) -> Result<(usize, u64), StoreError> {
        bucket
            .modify("k", |read: Option<Versioned<StartedCalls>>| async move {
                let mut started = read.map(|r| r.value).unwrap_or_default();
                started.calls.push(StartedCall {
                    call_id: call_id.to_owned(),
                    reserved_at: None,
                });
                let count = started.calls.len();
                Ok(Change::Put(started, count))
            })
            .await
    }

    #[tokio::test]
    async fn concurrent_changes_all_land() {
        let bucket = Arc::new(bucket());
        let tasks: Vec<_> = (0..20)
            .map(|n| {
                let bucket = bucket.clone();
                tokio::spawn(async move { add(&bucket, &format!("c{n}")).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("joined").expect("written");
        }
        let entry = bucket.get("k").await.expect("read").expect("present");
        let started = StartedCalls::decode(entry.value.expect("a value")).expect("decodes");
        assert_eq!(started.calls.len(), 20, "no change was lost");
    }

    #[tokio::test]
    async fn keep_writes_nothing_delete_removes_and_garbage_is_replaced() {
        let bucket = bucket();
        let (answer, revision) = bucket
            .modify("k", |_: Option<Versioned<StartedCalls>>| async {
                Ok::<_, StoreError>(Change::Keep("kept"))
            })
            .await
            .expect("kept");
        assert_eq!((answer, revision), ("kept", 0));
        assert!(bucket.get("k").await.expect("read").is_none());

        bucket
            .put("k", Bytes::from_static(b"\xff\xff not protobuf"))
            .await
            .expect("put");
        let (count, revision) = add(&bucket, "c1").await.expect("replaced");
        assert_eq!(count, 1, "the garbage was read as absent");
        assert!(revision > 0);

        let ((), _) = bucket
            .modify("k", |read: Option<Versioned<StartedCalls>>| async move {
                assert_eq!(read.expect("present").value.calls.len(), 1);
                Ok::<_, StoreError>(Change::Delete(()))
            })
            .await
            .expect("deleted");
        assert!(
            bucket
                .get("k")
                .await
                .expect("read")
                .is_none_or(|e| e.value.is_none())
        );
        let (count, _) = add(&bucket, "c2").await.expect("created again");
        assert_eq!(count, 1);
    }
}
