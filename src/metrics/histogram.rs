//! A fixed-bucket latency histogram of atomics, rendered in the Prometheus text format.
//!
//! The recorder's own histograms keep every sample in a shared queue until a scrape folds them
//! into buckets: one contended push per request. Here a sample is counted straight into its
//! bucket, and a run of equal samples (a pipelined batch read and answered together) costs one
//! bucket add and one sum add, whatever its length.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Cumulative-bucket histogram of durations.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds in seconds, as rendered.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds, for the bucket search.
    bounds_ns: Box<[u64]>,
    /// Samples per bucket (not cumulative); the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// Sum of all samples in nanoseconds.
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts `n` samples of duration `d`.
    #[inline]
    pub fn record_n(&self, d: Duration, n: u64) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let at = self.bounds_ns.partition_point(|&b| b < ns);
        self.buckets[at].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    /// Samples counted so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The current counts, to merge or render.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Appends the `_bucket`, `_sum` and `_count` series of `name`; `labels` is the rendered
    /// label list without braces (`command="get"`), possibly empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        self.snapshot().render(out, name, labels);
    }
}

/// A histogram's counts at one moment; snapshots of one metric from several shards add up.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    bounds: &'static [f64],
    /// Samples per bucket (not cumulative); the last is `+Inf`.
    buckets: Vec<u64>,
    sum_ns: u64,
}

impl Snapshot {
    /// An empty snapshot with these bounds.
    pub fn empty(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum_ns: 0,
        }
    }

    /// Adds `other`'s counts (same bounds).
    pub fn merge(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Appends the `_bucket`, `_sum` and `_count` series of `name` (see
    /// [`AtomicHistogram::render`]).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket;
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_ns as f64 / 1e9;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_cumulative_buckets() {
        static BOUNDS: &[f64] = &[0.001, 0.01];
        let h = AtomicHistogram::new(BOUNDS);
        h.record_n(Duration::from_micros(500), 3);
        h.record_n(Duration::from_millis(1), 1);
        h.record_n(Duration::from_millis(5), 2);
        h.record_n(Duration::from_secs(1), 1);
        assert_eq!(h.count(), 7);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "command=\"get\"");
        let expected = "x_seconds_bucket{command=\"get\",le=\"0.001\"} 4\n\
                        x_seconds_bucket{command=\"get\",le=\"0.01\"} 6\n\
                        x_seconds_bucket{command=\"get\",le=\"+Inf\"} 7\n\
                        x_seconds_sum{command=\"get\"} 1.0125\n\
                        x_seconds_count{command=\"get\"} 7\n";
        assert_eq!(out, expected);
        let mut bare = String::new();
        h.render(&mut bare, "y", "");
        assert!(
            bare.contains("y_bucket{le=\"+Inf\"} 7\ny_sum 1.0125\ny_count 7\n"),
            "{bare}"
        );
        let mut twice = h.snapshot();
        twice.merge(&h.snapshot());
        assert_eq!(twice.count(), 14);
        let mut empty = Snapshot::empty(BOUNDS);
        empty.merge(&h.snapshot());
        assert_eq!(empty, h.snapshot());
    }
}
