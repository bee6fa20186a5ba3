//! Bookkeeping for one step of a run: which messages each subscriber got,
//! how late, and whether any were missing or came twice.
//!
//! Each message carries its own index and its *scheduled* send time in the
//! payload (`id` is `"<step>.<index>"`, `text` the scheduled time in µs on the
//! load generator's clock). Latency is counted from the schedule, not from
//! when the publisher got round to sending, so a stall anywhere (publisher,
//! server or subscriber) shows up in the histogram instead of hiding in a
//! lower send rate: this is an open-loop measurement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// The load generator's clock: microseconds since the process started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    pub fn now_micros(&self) -> u64 {
        self.micros(Instant::now())
    }
}

/// The longest latency the histograms hold: two minutes, in µs.
const HISTOGRAM_MAX_MICROS: u64 = 120_000_000;

/// A latency histogram in µs with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Shared by every subscriber of a step.
pub struct Tally {
    pub clock: Clock,
    /// Which step this is; messages of other steps are stale and ignored.
    pub step: u32,
    /// How many messages the publishers send in this step, indices 0..count.
    pub count: u64,
    /// First copies delivered, over all subscribers.
    pub unique: AtomicU64,
    /// Delivery latency from the scheduled send time, in µs.
    pub latency: Mutex<Histogram<u64>>,
    /// Round trip of each short poll, in µs: the HTTP round trip on this machine.
    pub poll_rtt: Mutex<Histogram<u64>>,
    /// When message 0 is scheduled (µs on the clock) and the gap between
    /// two messages (µs), set at the start: cursor moves carry only their
    /// index, and their scheduled time is worked out from it.
    schedule: OnceLock<(u64, f64)>,
}

impl Tally {
    pub fn new(clock: Clock, step: u32, count: u64) -> Self {
        Tally {
            clock,
            step,
            count,
            unique: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            poll_rtt: Mutex::new(histogram()),
            schedule: OnceLock::new(),
        }
    }

    /// Sets when message 0 is scheduled and the gap to each next one.
    pub fn set_schedule(&self, t0: Instant, slot: Duration) {
        let _ = self
            .schedule
            .set((self.clock.micros(t0), slot.as_secs_f64() * 1e6));
    }

    /// When message `index` is scheduled, in µs on the clock, once the
    /// schedule is set.
    fn scheduled(&self, index: u64) -> Option<u64> {
        let (t0, slot) = *self.schedule.get()?;
        Some(t0 + (slot * index as f64) as u64)
    }

    /// The payload of message `index`, scheduled at `at`: (`id`, `text`).
    pub fn payload(&self, index: u64, at: Instant) -> (String, String) {
        (
            format!("{}.{index}", self.step),
            self.clock.micros(at).to_string(),
        )
    }

    pub fn record_poll_rtt(&self, rtt: Duration) {
        let micros = (rtt.as_micros() as u64).clamp(1, HISTOGRAM_MAX_MICROS);
        let _ = self.poll_rtt.lock().record(micros);
    }
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// One bit per message index of this step.
    bits: Vec<u64>,
    /// Distinct messages of this step received.
    pub unique: u64,
    /// Messages of this step received again, by payload id.
    pub duplicate_ids: u64,
    /// The last log seq received (pushlab only).
    last_seq: Option<u64>,
    /// Seqs skipped over without a `gap` notice (pushlab only).
    pub missing_seqs: u64,
    /// Seqs received again or out of order (pushlab only).
    pub duplicate_seqs: u64,
    /// `gap` notices: the server said events were lost.
    pub gaps: u64,
    /// Messages from another step, ignored.
    pub stale: u64,
    /// Bytes of application payload delivered: the event JSON for pushlab,
    /// the message object for the peers.
    pub payload_bytes: u64,
    /// Why the subscriber stopped, if it did.
    pub failure: Option<String>,
}

impl Seen {
    pub fn new(count: u64) -> Self {
        Seen {
            bits: vec![0; count.div_ceil(64) as usize],
            ..Default::default()
        }
    }

    /// Checks a pushlab log seq: each must be one more than the last.
    pub fn seq(&mut self, seq: u64) {
        match self.last_seq {
            Some(last) if seq <= last => self.duplicate_seqs += 1,
            Some(last) => {
                self.missing_seqs += seq - last - 1;
                self.last_seq = Some(seq);
            }
            None => self.last_seq = Some(seq),
        }
    }

    /// After a `gap` notice the next seq may jump; that is reported, not missing.
    pub fn gap(&mut self) {
        self.gaps += 1;
        self.last_seq = None;
    }

    /// Records a delivered message by its payload; returns false if the
    /// payload is not one of ours.
    pub fn message(&mut self, tally: &Tally, id: &str, text: &str, payload_len: usize) -> bool {
        let now = tally.clock.now_micros();
        let Some((step, index)) = id.split_once('.') else {
            return false;
        };
        let (Ok(step), Ok(index), Ok(scheduled)) = (
            step.parse::<u32>(),
            index.parse::<u64>(),
            text.parse::<u64>(),
        ) else {
            return false;
        };
        self.record(tally, now, step, index, Some(scheduled), payload_len);
        true
    }

    /// Records a delivered cursor move that carried message `index` of
    /// `step`; its scheduled time comes from the tally's schedule.
    pub fn cursor(&mut self, tally: &Tally, step: u32, index: u64, payload_len: usize) {
        let now = tally.clock.now_micros();
        let scheduled = (step == tally.step)
            .then(|| tally.scheduled(index))
            .flatten();
        self.record(tally, now, step, index, scheduled, payload_len);
    }

    /// Records message `index` of `step`, delivered at `now` (µs), if it
    /// belongs to this step and its schedule is known; counts it stale if
    /// not.
    fn record(
        &mut self,
        tally: &Tally,
        now: u64,
        step: u32,
        index: u64,
        scheduled: Option<u64>,
        payload_len: usize,
    ) {
        let Some(scheduled) = scheduled.filter(|_| step == tally.step && index < tally.count)
        else {
            self.stale += 1;
            return;
        };
        self.payload_bytes += payload_len as u64;
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.bits[word] & bit != 0 {
            self.duplicate_ids += 1;
            return;
        }
        self.bits[word] |= bit;
        self.unique += 1;
        tally.unique.fetch_add(1, Ordering::Relaxed);
        let latency = now.saturating_sub(scheduled).clamp(1, HISTOGRAM_MAX_MICROS);
        let _ = tally.latency.lock().record(latency);
    }

    /// Up to `limit` indices of messages this subscriber never got.
    pub fn missing_examples(&self, count: u64, limit: usize) -> Vec<u64> {
        (0..count)
            .filter(|&i| self.bits[(i / 64) as usize] & (1 << (i % 64)) == 0)
            .take(limit)
            .collect()
    }

    /// Messages of this step this subscriber never got.
    pub fn missing_ids(&self, count: u64) -> u64 {
        count - self.unique
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_move_counts_from_its_scheduled_time_once_the_schedule_is_set() {
        let tally = Tally::new(Clock::new(), 3, 10);
        let mut seen = Seen::new(10);
        seen.cursor(&tally, 3, 0, 100);
        assert_eq!((seen.unique, seen.stale), (0, 1), "no schedule yet");

        tally.set_schedule(Instant::now(), Duration::from_millis(10));
        seen.cursor(&tally, 3, 4, 100);
        seen.cursor(&tally, 3, 4, 100);
        seen.cursor(&tally, 2, 5, 100);

        assert_eq!(seen.unique, 1);
        assert_eq!(seen.duplicate_ids, 1);
        assert_eq!(
            seen.stale, 2,
            "one before the schedule, one of another step"
        );
        assert_eq!(seen.missing_ids(10), 9);
        assert_eq!(tally.latency.lock().len(), 1);
    }

    #[test]
    fn a_message_still_counts_from_the_time_in_its_text() {
        let tally = Tally::new(Clock::new(), 1, 2);
        let mut seen = Seen::new(2);

        assert!(seen.message(&tally, "1.1", "0", 90));
        assert!(!seen.message(&tally, "not ours", "0", 90));

        assert_eq!(seen.unique, 1);
        assert_eq!(seen.missing_examples(2, 5), vec![0]);
        assert_eq!(seen.payload_bytes, 90);
    }
}
