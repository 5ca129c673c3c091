//! Latency histograms and the results line.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Microsecond latencies from 1 µs to 60 s, 3 significant digits.
#[allow(clippy::expect_used)] // constant, valid bounds: this cannot fail
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let micros = latency.as_micros().clamp(1, 60_000_000) as u64;
    let _ = h.record(micros);
}

/// `{count, p50_ms, p99_ms, p999_ms, max_ms, mean_ms}`.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |micros: u64| micros as f64 / 1000.0;
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

/// Prints the one JSON line on stdout and a human summary on stderr.
pub fn emit(result: &Value) {
    println!("{result}");
    eprintln!(
        "{}",
        serde_json::to_string_pretty(result).unwrap_or_default()
    );
}

/// A progress line on stderr, once a second, on long runs.
pub fn progress(label: &str, elapsed: Duration, total: Duration, detail: &str) {
    eprint!(
        "\r{label}: {:>4.0}s / {:.0}s {detail}    ",
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    );
    if elapsed >= total {
        eprintln!();
    }
}
