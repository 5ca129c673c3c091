//! Gateway leases as the services see them: which gateways the state mentions
//! but the gateways bucket no longer holds (their lease expired: dead, frozen or
//! cut off), and since when. Every service replica keeps its own view; the
//! removals it leads to are compare-and-set writes, so however many replicas
//! notice the same dead gateway, its sessions go exactly once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::{Bucket, StoreError, keys};

/// What one replica has seen of the leases.
#[derive(Debug, Default)]
pub struct LeaseView {
    missing_since: HashMap<String, SystemTime>,
    /// The lease lifetime: after the store was out of reach (or this view was
    /// not asked) for that long, every lease may have expired for want of a
    /// store to renew it in, not because its gateway died. The view then waits
    /// this long again, with the store answering, before it declares anything:
    /// time enough for every living gateway to take its lease again.
    grace: Duration,
    /// When the store last answered, and since when without a gap.
    answered: Option<(SystemTime, SystemTime)>,
}

/// A gateway to sweep: the sessions it registered before `cutoff` are dead.
/// Sessions it registers after it came back (with a new lease) are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadGateway {
    pub gateway_id: String,
    pub cutoff: SystemTime,
}

impl LeaseView {
    /// A view for leases living `lease_ttl`; see [`LeaseView::grace`].
    pub fn new(lease_ttl: Duration) -> Self {
        LeaseView {
            grace: lease_ttl,
            ..Default::default()
        }
    }

    /// Reads the live leases and returns the gateways among `mentioned` that have
    /// been without one for at least `confirm` (a presence replica waits one sweep
    /// longer than a calls replica, so peers hear `user-left-call` first).
    pub async fn dead_gateways<'a>(
        &mut self,
        leases: &Bucket,
        mentioned: impl IntoIterator<Item = &'a str>,
        confirm: Duration,
    ) -> Result<Vec<DeadGateway>, StoreError> {
        // Each lease is asked of the bucket's leader: a listing may come from a
        // replica that lags (a NATS node just restarted), and a lease missing
        // from it would remove a live gateway's sessions.
        let mentioned: Vec<&str> = mentioned.into_iter().collect();
        let mut live = HashSet::new();
        for id in &mentioned {
            match leases.exists_on_leader(&keys::lease(id)).await {
                Ok(true) => {
                    live.insert((*id).to_owned());
                }
                Ok(false) => {}
                Err(error) => {
                    self.answered = None;
                    return Err(error);
                }
            }
        }
        Ok(self.update(&live, mentioned, confirm, SystemTime::now()))
    }

    fn update<'a>(
        &mut self,
        live: &HashSet<String>,
        mentioned: impl IntoIterator<Item = &'a str>,
        confirm: Duration,
        now: SystemTime,
    ) -> Vec<DeadGateway> {
        let mentioned: HashSet<&str> = mentioned.into_iter().collect();
        let answering_since = match self.answered {
            // Sweeps come every fraction of a second; a longer silence is an
            // outage, long enough for some lease to run out.
            Some((last, since))
                if self.grace.is_zero()
                    || now.duration_since(last).unwrap_or_default() < self.grace / 3 =>
            {
                since
            }
            // The first answer after a gap (or ever): absences seen before it
            // say nothing.
            _ => {
                self.missing_since.clear();
                now
            }
        };
        self.answered = Some((now, answering_since));
        if now.duration_since(answering_since).unwrap_or_default() < self.grace {
            return Vec::new();
        }
        self.missing_since
            .retain(|id, _| mentioned.contains(id.as_str()) && !live.contains(id));
        let mut dead = Vec::new();
        for id in mentioned {
            if live.contains(id) {
                continue;
            }
            let since = *self.missing_since.entry(id.to_owned()).or_insert(now);
            if now.duration_since(since).unwrap_or_default() >= confirm {
                dead.push(DeadGateway {
                    gateway_id: id.to_owned(),
                    cutoff: since,
                });
            }
        }
        dead.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_gateway_is_dead_once_it_has_been_without_lease_long_enough() {
        let mut view = LeaseView::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let second = Duration::from_secs(1);
        assert!(
            view.update(&set(&["a", "b"]), ["a", "b"], second, t0)
                .is_empty()
        );
        // b's lease is gone: noticed, not yet confirmed.
        assert!(
            view.update(&set(&["a"]), ["a", "b"], second, t0 + second / 2)
                .is_empty()
        );
        let dead = view.update(&set(&["a"]), ["a", "b"], second, t0 + second * 2);
        assert_eq!(
            dead,
            vec![DeadGateway {
                gateway_id: "b".into(),
                cutoff: t0 + second / 2
            }]
        );
        // b came back with a new lease: forgotten.
        assert!(
            view.update(&set(&["a", "b"]), ["a", "b"], second, t0 + second * 3)
                .is_empty()
        );
        assert!(view.missing_since.is_empty());
    }

    #[test]
    fn after_the_store_was_out_of_reach_every_gateway_gets_a_lease_lifetime_to_come_back() {
        let second = Duration::from_secs(1);
        let mut view = LeaseView::new(second * 3);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        // Fresh: nothing is declared before the store answered for a lifetime.
        assert!(view.update(&set(&[]), ["a"], Duration::ZERO, t0).is_empty());
        for t in 1..=6 {
            assert!(
                view.update(&set(&["a"]), ["a"], Duration::ZERO, t0 + second * t / 2)
                    .is_empty()
            );
        }
        // The store goes away for 5 s (a NATS node died, its streams elect a
        // leader): a's lease expired meanwhile, and is missing at the first answer.
        let back = t0 + second * 8;
        assert!(
            view.update(&set(&[]), ["a"], Duration::ZERO, back)
                .is_empty()
        );
        // a takes its lease again within the grace: never declared dead; b,
        // truly gone, is declared once the store answered for a lifetime.
        let half = second / 2;
        for t in 1..6 {
            assert!(
                view.update(&set(&["a"]), ["a", "b"], Duration::ZERO, back + half * t)
                    .is_empty()
            );
        }
        let dead = view.update(&set(&["a"]), ["a", "b"], Duration::ZERO, back + half * 6);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].gateway_id, "b");
    }

    #[test]
    fn with_no_confirmation_time_a_missing_lease_is_dead_at_once() {
        let mut view = LeaseView::default();
        let now = SystemTime::now();
        let dead = view.update(&set(&[]), ["x"], Duration::ZERO, now);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].cutoff, now);
    }
}
