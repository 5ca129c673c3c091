//! Start-up that waits instead of exiting: a dependency that may come back
//! (NATS not up yet, JetStream without a leader, a database still starting) is
//! tried again with a growing pause and a log line each time, until it works or
//! the process is asked to stop. `docker compose up` and Kubernetes start every
//! process at once; one that exited on a dependency still starting would make a
//! crash loop of every cold start.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// The first pause after a failed attempt; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause: a dependency that comes up is used within about this
/// long plus one attempt.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The longest one attempt may take before it counts as failed (a JetStream
/// request without a leader waits for its own, longer, timeout).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `attempt` until it succeeds, pausing 100 ms, 200 ms, ... up to 1 s
/// between tries, each bounded by [`ATTEMPT_TIMEOUT`]. Returns `None` when
/// `stop` turns true first (the process is stopping).
pub async fn retry<T, E, F, Fut>(
    what: &'static str,
    stop: &mut watch::Receiver<bool>,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let mut pause = FIRST_PAUSE;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return None;
        }
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()) => outcome,
            _ = stop.wait_for(|s| *s) => return None,
        };
        let error = match outcome {
            Ok(Ok(value)) => {
                if failures > 0 {
                    tracing::info!(what, failures, "ready after waiting");
                }
                return Some(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        };
        failures += 1;
        tracing::warn!(what, attempt = failures, %error, retry_in = ?pause, "waiting for a dependency");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// A watch that turns true once `signal` resolves, for the start-up waits and
/// everything after them to share one stop.
pub fn stop_on(signal: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = signal => { let _ = stop.send(true); }
            // Nobody listens any more: nothing to tell.
            () = stop.closed() => {}
        }
    });
    stopped
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tries_again_until_it_works() {
        let (_keep, mut stop) = watch::channel(false);
        let mut tries = 0;
        let value = retry("thing", &mut stop, || {
            tries += 1;
            let n = tries;
            async move { if n < 4 { Err("not yet") } else { Ok(n) } }
        })
        .await;
        assert_eq!(value, Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let (stop_tx, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = stop_tx.send(true);
        });
        let value: Option<()> = retry("never", &mut stop, || async { Err("down") }).await;
        assert_eq!(value, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_hangs_counts_as_failed() {
        let (_keep, mut stop) = watch::channel(false);
        let mut tries = 0;
        let value = retry("slow", &mut stop, || {
            tries += 1;
            let n = tries;
            async move {
                if n == 1 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, &str>(n)
            }
        })
        .await;
        assert_eq!(value, Some(2));
    }
}
