//! The Redis store's own counters: every round trip to Redis and every
//! failure, with a histogram of round-trip times, read by `/metrics`
//! through the core's store seam.
//!
//! It counts and nothing else: it does not know how the counters are
//! served, nor which calls are made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The upper bounds of the round-trip histogram's buckets, in
/// microseconds: 100 µs to 2.5 s, past [`REDIS_TIMEOUT`].
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
