//! The history service's Prometheus metrics, in the process registry.

use std::sync::LazyLock;
use std::time::Duration;

use meetup_platform::metrics::{Labels, latency_histogram, register};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::record::Applied;

pub struct HistoryMetrics {
    snapshots: Family<Labels, Counter>,
    apply_latency: Histogram,
    pruned: Counter,
}

static METRICS: LazyLock<HistoryMetrics> = LazyLock::new(|| {
    let metrics = HistoryMetrics {
        snapshots: Family::default(),
        apply_latency: latency_histogram(),
        pruned: Counter::default(),
    };
    register(
        "history_snapshots",
        "Call snapshots consumed, by result (applied, stale, skipped, undecodable, error)",
        metrics.snapshots.clone(),
    );
    register(
        "history_apply_seconds",
        "Time to write one call snapshot (one transaction)",
        metrics.apply_latency.clone(),
    );
    register(
        "history_pruned_calls",
        "Call records removed by retention",
        metrics.pruned.clone(),
    );
    metrics
});

pub fn get() -> &'static HistoryMetrics {
    &METRICS
}

impl HistoryMetrics {
    pub fn snapshot(&self, result: &'static str) {
        self.snapshots
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    pub fn applied(&self, applied: Applied, took: Duration) {
        self.snapshot(match applied {
            Applied::Yes => "applied",
            Applied::Stale => "stale",
        });
        self.apply_latency.observe(took.as_secs_f64());
    }

    pub fn pruned(&self, calls: u64) {
        self.pruned.inc_by(calls);
    }
}
