//! The Redis store's own counters: every round trip to Redis and every
//! failure, with a histogram of round-trip times, handed to `/metrics` as
//! the core's [`StoreMetrics`] and read there as [`RoundTrips`].
//!
//! It counts and nothing else: it does not know how the counters are
//! served, nor which calls are made.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::core::log_store::{RoundTrips, StoreMetrics};

/// The upper bounds of the round-trip histogram's buckets, in
/// microseconds: 100 µs to 2.5 s, past [`REDIS_TIMEOUT`].
///
/// [`REDIS_TIMEOUT`]: super::REDIS_TIMEOUT
pub const RTT_BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Redis round trips and failures, for `/metrics`.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Commands and scripts sent.
    pub calls: AtomicU64,
    /// Of those, how many failed (unreachable, timed out, refused).
    pub errors: AtomicU64,
    /// Their round-trip times added up, in microseconds.
    pub rtt_micros: AtomicU64,
    /// Round trips per bucket, not cumulative: `[i]` counts those longer
    /// than `RTT_BUCKETS_MICROS[i - 1]` and at most `RTT_BUCKETS_MICROS[i]`;
    /// the last, those longer than every bound.
    pub rtt_buckets: [AtomicU64; RTT_BUCKETS_MICROS.len() + 1],
    /// Bytes of appends every room's writer on this node holds now, queued
    /// or being written: a gauge, bounded by [`QueueLimits::node_bytes`].
    ///
    /// [`QueueLimits::node_bytes`]: super::QueueLimits::node_bytes
    pub queued_bytes: AtomicUsize,
}

impl RedisStats {
    pub(super) fn record(&self, started: Instant, ok: bool) {
        self.observe(started.elapsed(), ok);
    }

    /// Counts one call that took `rtt` and failed unless `ok`.
    pub fn observe(&self, rtt: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.rtt_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = RTT_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.rtt_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl StoreMetrics for RedisStats {
    fn round_trips(&self) -> RoundTrips {
        let bounds = RTT_BUCKETS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        RoundTrips {
            storage: "redis",
            title: "Redis",
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rtt_sum_seconds: self.rtt_micros.load(Ordering::Relaxed) as f64 / 1e6,
            rtt_buckets: bounds
                .zip(&self.rtt_buckets)
                .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
                .collect(),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_trip_is_counted_in_seconds_in_its_bucket_whose_bound_is_inclusive() {
        // Arrange
        let stats = RedisStats::default();

        // Act
        stats.observe(Duration::from_micros(300), true);
        stats.observe(Duration::from_micros(3_000), true);
        stats.observe(Duration::from_micros(2_500), false);
        stats.observe(Duration::from_secs(10), false);
        let read = stats.round_trips();

        // Assert
        let bucket = |bound: f64| {
            read.rtt_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, count)| *count)
        };
        assert_eq!((read.storage, read.title), ("redis", "Redis"));
        assert_eq!((read.calls, read.errors, read.rtt_count()), (4, 2, 4));
        assert_eq!(bucket(0.0001), Some(0));
        assert_eq!(bucket(0.0005), Some(1));
        assert_eq!(bucket(0.0025), Some(1), "a bound is inclusive");
        assert_eq!(bucket(0.005), Some(1));
        assert_eq!(bucket(f64::INFINITY), Some(1));
        assert_eq!(read.rtt_buckets.len(), RTT_BUCKETS_MICROS.len() + 1);
        assert!((read.rtt_sum_seconds - 10.0058).abs() < 1e-9);
    }
}
