//! Abuse limits enforced at the edge: events per second per socket (with a
//! disconnect on sustained abuse) and new connections per second per IP.
//! Cluster-wide limits (sockets per user, participants per call, calls per
//! user) live in the services, which see the whole cluster.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate
            >= self.burst
    }
}

/// What the event limiter decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: refuse this event.
    Refuse,
    /// Refused so often lately that the socket is to be disconnected.
    Disconnect,
    /// The socket is being disconnected: drop the event without an answer.
    Drop,
}

/// Per-socket event rate limit.
#[derive(Debug)]
pub struct EventLimiter {
    bucket: TokenBucket,
    refused: u32,
    window_start: Instant,
    max_refused: u32,
    disconnecting: bool,
}

/// Window over which refused events are counted towards a disconnect.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);

impl EventLimiter {
    pub fn new(rate: u32, burst: u32, max_refused: u32) -> Self {
        EventLimiter {
            bucket: TokenBucket::new(f64::from(rate), f64::from(burst.max(1))),
            refused: 0,
            window_start: Instant::now(),
            max_refused,
            disconnecting: false,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.disconnecting {
            return Verdict::Drop;
        }
        if self.bucket.try_take(now) {
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.max_refused {
            self.disconnecting = true;
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

/// New connections per second per client IP, shared by all requests.
#[derive(Debug)]
pub struct IpLimiter {
    rate: f64,
    burst: f64,
    // A std Mutex is fine: never held across an `.await`, a map lookup long.
    buckets: Mutex<(HashMap<IpAddr, TokenBucket>, Instant)>,
}

impl IpLimiter {
    pub fn new(rate: u32) -> Self {
        IpLimiter {
            rate: f64::from(rate),
            burst: f64::from(rate.saturating_mul(2).max(1)),
            buckets: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    /// True when `ip` may open one more connection now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (buckets, last_prune) = &mut *guard;
        // Forget idle clients now and then, so that the map stays small.
        if now.saturating_duration_since(*last_prune) > Duration::from_secs(10) {
            buckets.retain(|_, b| !b.is_full(now));
            *last_prune = now;
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0);
        assert_eq!((0..8).filter(|_| bucket.try_take(start)).count(), 5);
        // 0.5 s later: 5 more tokens.
        let later = start + Duration::from_millis(500);
        assert_eq!((0..8).filter(|_| bucket.try_take(later)).count(), 5);
    }

    #[test]
    fn sustained_abuse_ends_in_a_disconnect() {
        let now = Instant::now();
        let mut limiter = EventLimiter::new(10, 10, 20);
        let verdicts: Vec<Verdict> = (0..40).map(|_| limiter.check(now)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Allow));
        assert!(verdicts[10..30].iter().all(|v| *v == Verdict::Refuse));
        assert_eq!(verdicts[30], Verdict::Disconnect);
        assert!(
            verdicts[31..].iter().all(|v| *v == Verdict::Drop),
            "then silence"
        );
    }

    #[test]
    fn each_ip_has_its_own_budget() {
        let limiter = IpLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(
            (0..10).filter(|_| limiter.allow(a)).count(),
            4,
            "burst of twice the rate"
        );
        assert!(limiter.allow(b));
    }
}
