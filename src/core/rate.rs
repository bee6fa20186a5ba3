//! The token bucket behind every rate limit of the core: events per session
//! (kept by the room's directory on one node), events and registrations per
//! client address (kept by presence). It knows nothing of sessions or
//! addresses, only of tokens and time.

use tokio::time::Instant;

/// A token bucket: refills at a steady rate up to its burst.
pub(crate) struct TokenBucket {
    /// Tokens left; one is taken per event allowed.
    pub(crate) tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            refilled: now,
        }
    }

    /// Adds what `per_second` has refilled since the last look, up to `burst`.
    pub(crate) fn refill(&mut self, per_second: f64, burst: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.refilled = now;
        self.tokens
    }

    /// Takes one token for a limit of `rate` events a second with bursts of
    /// twice that, or says no; a `rate` of 0 is no limit.
    pub(crate) fn take(&mut self, rate: u32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        let (per_second, burst) = event_allowance(rate);
        if self.refill(per_second, burst, now) < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Events a second and burst for a rate limit of `rate` events a second.
pub(crate) fn event_allowance(rate: u32) -> (f64, f64) {
    (f64::from(rate), f64::from(rate) * 2.0)
}
