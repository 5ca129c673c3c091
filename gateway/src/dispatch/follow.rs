//! Following one bucket: its watch, opened again (after a short pause) whenever
//! it breaks.
//!
//! [`Follow::next`] runs in the dispatcher's `select!`, which drops it whenever
//! another branch is ready first, so it must be cancel-safe: opening a watch
//! (creating a consumer: a request and its reply) is kept in `opening` and goes
//! on where it was, instead of starting over on every presence change or relay.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use meetup_runtime::store::{Bucket, StoreError, WatchStream, Watched};

/// Pause before a broken watch is opened again.
const REWATCH_AFTER: Duration = Duration::from_millis(250);

/// What following a bucket brings.
pub(super) enum Followed {
    /// A new watch: its snapshot comes next, then [`Watched::Current`].
    Started,
    Item(Watched),
    /// The watch broke; a new one starts shortly.
    Lost,
}

/// One bucket's watch, opened again whenever it breaks.
pub(super) struct Follow {
    bucket: Bucket,
    name: &'static str,
    stream: Option<WatchStream>,
    /// The watch being opened, once the pause after a failure is over.
    opening: Option<BoxFuture<'static, Result<WatchStream, StoreError>>>,
    retry_at: tokio::time::Instant,
}

impl Follow {
    pub(super) fn new(bucket: Bucket, name: &'static str) -> Self {
        Follow {
            bucket,
            name,
            stream: None,
            opening: None,
            retry_at: tokio::time::Instant::now(),
        }
    }

    /// What happened next; `None` while the watch is down (it is reopened in time).
    pub(super) async fn next(&mut self) -> Option<Followed> {
        let Some(stream) = self.stream.as_mut() else {
            let opening = self.opening.get_or_insert_with(|| {
                let (bucket, at) = (self.bucket.clone(), self.retry_at);
                Box::pin(async move {
                    tokio::time::sleep_until(at).await;
                    bucket.watch().await
                })
            });
            let opened = opening.await;
            self.opening = None;
            return match opened {
                Ok(stream) => {
                    tracing::info!(bucket = self.name, "watching");
                    self.stream = Some(stream);
                    Some(Followed::Started)
                }
                Err(error) => {
                    self.failed(&error);
                    None
                }
            };
        };
        match stream.next().await {
            Some(Ok(item)) => Some(Followed::Item(item)),
            Some(Err(error)) => {
                self.failed(&error);
                Some(Followed::Lost)
            }
            None => {
                self.failed(&StoreError::WatchEnded("the watch ended".into()));
                Some(Followed::Lost)
            }
        }
    }

    /// Drops a watch that is open but stuck, to open a new one at once. True
    /// when there was one to drop.
    pub(super) fn reopen(&mut self) -> bool {
        if self.stream.take().is_none() {
            return false;
        }
        tracing::warn!(bucket = self.name, "watch stuck; watching again");
        crate::metrics::get().bus_error("watch");
        self.retry_at = tokio::time::Instant::now();
        true
    }

    fn failed(&mut self, error: &StoreError) {
        tracing::warn!(bucket = self.name, %error, "watch lost; watching again");
        crate::metrics::get().bus_error("watch");
        self.stream = None;
        self.retry_at = tokio::time::Instant::now() + REWATCH_AFTER;
    }
}
