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
}

/// A gateway to sweep: the sessions it registered before `cutoff` are dead.
/// Sessions it registers after it came back (with a new lease) are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadGateway {
    pub gateway_id: String,
    pub cutoff: SystemTime,
}

impl LeaseView {
    /// Reads the live leases and returns the gateways among `mentioned` that have
    /// been without one for at least `confirm` (a presence replica waits one sweep
    /// longer than a calls replica, so peers hear `user-left-call` first).
    pub async fn dead_gateways<'a>(
        &mut self,
        leases: &Bucket,
        mentioned: impl IntoIterator<Item = &'a str>,
        confirm: Duration,
    ) -> Result<Vec<DeadGateway>, StoreError> {
        let live: HashSet<String> = leases
            .keys(keys::LEASE_PREFIX)
            .await?
            .iter()
            .filter_map(|k| keys::gateway_id_of(k).map(str::to_owned))
            .collect();
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
    fn with_no_confirmation_time_a_missing_lease_is_dead_at_once() {
        let mut view = LeaseView::default();
        let now = SystemTime::now();
        let dead = view.update(&set(&[]), ["x"], Duration::ZERO, now);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].cutoff, now);
    }
}
