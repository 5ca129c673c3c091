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
use meetup_platform::store::{Bucket, StoreError, WatchStream, Watched};

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

/// Opens a new watch of the bucket.
type Open = Box<dyn Fn() -> BoxFuture<'static, Result<WatchStream, StoreError>> + Send>;

/// One bucket's watch, opened again whenever it breaks.
pub(super) struct Follow {
    open: Open,
    name: &'static str,
    stream: Option<WatchStream>,
    /// The watch being opened, once the pause after a failure is over.
    opening: Option<BoxFuture<'static, Result<WatchStream, StoreError>>>,
    retry_at: tokio::time::Instant,
}

impl Follow {
    pub(super) fn new(bucket: Bucket, name: &'static str) -> Self {
        Self::with_opener(
            Box::new(move || {
                let bucket = bucket.clone();
                Box::pin(async move { bucket.watch().await })
            }),
            name,
        )
    }

    fn with_opener(open: Open, name: &'static str) -> Self {
        Follow {
            open,
            name,
            stream: None,
            opening: None,
            retry_at: tokio::time::Instant::now(),
        }
    }

    /// What happened next. While the watch is down this keeps opening it again
    /// (after a pause) until it opens: it never gives up, because a branch of
    /// `select!` that returned without a match would stay disabled until some
    /// other branch fired, and with no other traffic the watch would stay
    /// closed for good.
    pub(super) async fn next(&mut self) -> Followed {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let opening = self.opening.get_or_insert_with(|| {
                    let (open, at) = ((self.open)(), self.retry_at);
                    Box::pin(async move {
                        tokio::time::sleep_until(at).await;
                        open.await
                    })
                });
                let opened = opening.await;
                self.opening = None;
                match opened {
                    Ok(stream) => {
                        tracing::info!(bucket = self.name, "watching");
                        self.stream = Some(stream);
                        return Followed::Started;
                    }
                    Err(error) => {
                        self.failed(&error);
                        continue;
                    }
                }
            };
            return match stream.next().await {
                Some(Ok(item)) => Followed::Item(item),
                Some(Err(error)) => {
                    self.failed(&error);
                    Followed::Lost
                }
                None => {
                    self.failed(&StoreError::WatchEnded("the watch ended".into()));
                    Followed::Lost
                }
            };
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use meetup_platform::store::MemoryBucket;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_fails_to_open_is_opened_again_without_any_other_wakeup() {
        let bucket = MemoryBucket::new(None);
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let mut follow = Follow::with_opener(
            Box::new(move || {
                let attempt = counted.fetch_add(1, Ordering::SeqCst);
                let stream = bucket.watch();
                Box::pin(async move {
                    if attempt < 3 {
                        Err(StoreError::Unavailable("no leader".into()))
                    } else {
                        Ok(stream)
                    }
                })
            }),
            "test",
        );
        // As in the dispatcher: a select! whose other branch never fires.
        let never = futures::future::pending::<()>();
        let followed = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                item = follow.next() => item,
                () = never => unreachable!(),
            }
        })
        .await
        .expect("the watch opens by itself");
        assert!(matches!(followed, Followed::Started));
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
        assert!(matches!(
            follow.next().await,
            Followed::Item(Watched::Current)
        ));
    }
}
