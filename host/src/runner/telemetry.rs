//! The latency histogram of a strategy's event handling: fixed buckets of
//! atomics, written by the run loop on every live event and read by
//! `/metrics` without a lock.
//!
//! Owns the bucket bounds and the counts; never renders text (the metrics
//! module does) and never allocates while recording.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (`+Inf` is implied).
pub const BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Counts per bucket (not cumulative), the sum and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    /// Observations above the last bound.
    over: AtomicU64,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A histogram as read at one moment: cumulative counts per bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramReading {
    /// `(le, observations ≤ le)` for every bound, then `+Inf`.
    pub cumulative: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        match BOUNDS.iter().position(|&b| seconds <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now. Read without a lock, so a reading taken while an
    /// event is recorded may miss it in one field; `+Inf` is the bucket
    /// total, so the reading is always consistent with itself.
    pub fn read(&self) -> HistogramReading {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(BOUNDS.len() + 1);
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push((*bound, total));
        }
        total += self.over.load(Ordering::Relaxed);
        cumulative.push((f64::INFINITY, total));
        HistogramReading {
            cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.record(Duration::from_micros(40));
        h.record(Duration::from_micros(700));
        h.record(Duration::from_secs(3));
        let r = h.read();
        assert_eq!(r.count, 3);
        assert_eq!(r.cumulative[0], (0.000_05, 1));
        // 700 µs is above 0.5 ms and within 1 ms.
        assert_eq!(r.cumulative[3], (0.000_5, 1));
        assert_eq!(r.cumulative[4], (0.001, 2));
        assert_eq!(r.cumulative[BOUNDS.len() - 1], (1.0, 2));
        assert_eq!(r.cumulative[BOUNDS.len()], (f64::INFINITY, 3));
        assert!((r.sum_seconds - 3.000_74).abs() < 1e-9, "{}", r.sum_seconds);
    }
}
