//! The floor's long-poll log: every published text with a sequence number,
//! bounded in count and bytes, the oldest dropped first. It knows no
//! sockets and no HTTP; `longpoll` turns it into answers.
//!
//! The least a long-poll server must keep: a held request asks for what
//! came after its cursor, which may be more than one event, so the events
//! have to be kept somewhere until every reader has had them.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// How many events the log keeps.
pub const MAX_EVENTS: usize = 4096;
/// How many bytes of event text the log keeps.
pub const MAX_BYTES: usize = 4 << 20;
/// The longest text the log takes, in bytes; a longer one is relayed to
/// WebSockets only.
pub const MAX_EVENT_BYTES: usize = 64 << 10;
/// An answer stops adding events at this many bytes of them; the reader
/// gets the rest on its next request.
pub const MAX_ANSWER_BYTES: usize = 256 << 10;

/// The published texts, each a JSON value, with the seq of the first kept.
#[derive(Debug)]
pub struct EventLog {
    kept: Mutex<Kept>,
    /// The newest seq (0 before the first event), which held requests wait
    /// on; `watch` wakes every waiter once per change, never polls.
    head: watch::Sender<u64>,
    max_events: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Kept {
    /// Oldest first; seqs follow one another.
    events: VecDeque<(u64, Arc<str>)>,
    /// The bytes of text in `events`.
    bytes: usize,
    /// The seq the next event takes.
    next: u64,
}

impl EventLog {
    /// A log keeping at most `max_events` events and `max_bytes` of text.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        EventLog {
            kept: Mutex::new(Kept {
                next: 1,
                ..Kept::default()
            }),
            head: watch::Sender::new(0),
            max_events,
            max_bytes,
        }
    }

    /// Adds `text` (a JSON value) and wakes the held requests; returns its
    /// seq, or `None` when the text is longer than [`MAX_EVENT_BYTES`] or
    /// than the whole log may hold.
    pub fn append(&self, text: Arc<str>) -> Option<u64> {
        if text.len() > MAX_EVENT_BYTES.min(self.max_bytes) {
            return None;
        }
        let seq = {
            let mut kept = self.kept.lock();
            while kept.events.len() >= self.max_events || kept.bytes + text.len() > self.max_bytes {
                let Some((_, oldest)) = kept.events.pop_front() else {
                    break;
                };
                kept.bytes -= oldest.len();
            }
            let seq = kept.next;
            kept.next += 1;
            kept.bytes += text.len();
            kept.events.push_back((seq, text));
            seq
        };
        self.head.send_replace(seq);
        Some(seq)
    }

    /// The newest seq, 0 before the first event.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Waits until the log holds an event after `since`.
    pub async fn wait_after(&self, since: u64) {
        let mut head = self.head.subscribe();
        // The sender lives as long as the log, so this never ends in error.
        let _ = head.wait_for(|head| *head > since).await;
    }

    /// The answer to a reader at `since`, as pushlab's `/longpoll` shapes it:
    /// `{"events":[...],"cursor":N,"epoch":"floor","gap":false}`; `None`
    /// when nothing came after `since`. `gap` is true when events after
    /// `since` were dropped before this reader had them.
    pub fn answer_after(&self, since: u64) -> Option<String> {
        let kept = self.kept.lock();
        let head = kept.next - 1;
        if since >= head {
            return None;
        }
        let first = kept.events.front().map_or(kept.next, |(seq, _)| *seq);
        let gap = since + 1 < first;
        let skip = (since + 1).saturating_sub(first) as usize;
        let mut body = String::from(r#"{"events":["#);
        let mut cursor = since.max(first - 1);
        for (count, (seq, text)) in kept.events.iter().skip(skip).enumerate() {
            // The first event goes in whatever its size, so a reader always
            // moves on.
            if count > 0 && body.len() + text.len() > MAX_ANSWER_BYTES {
                break;
            }
            if count > 0 {
                body.push(',');
            }
            body.push_str(text);
            cursor = *seq;
        }
        body.push_str(&format!(
            r#"],"cursor":{cursor},"epoch":"floor","gap":{gap}}}"#
        ));
        Some(body)
    }
}

/// The answer when nothing came after `since` before the hold ended.
pub fn empty_answer(since: u64) -> String {
    format!(r#"{{"events":[],"cursor":{since},"epoch":"floor","gap":false}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(log: &EventLog, since: u64) -> serde_json::Value {
        serde_json::from_str(&log.answer_after(since).expect("an answer")).unwrap()
    }

    #[test]
    fn a_reader_gets_every_event_after_its_cursor_in_order() {
        let log = EventLog::new(16, 1024);
        for n in 1..=3 {
            log.append(format!(r#"{{"n":{n}}}"#).into());
        }

        let batch = answer(&log, 1);

        assert_eq!(batch["events"], serde_json::json!([{"n": 2}, {"n": 3}]));
        assert_eq!(batch["cursor"], 3);
        assert_eq!(batch["epoch"], "floor");
        assert_eq!(batch["gap"], false);
        assert!(log.answer_after(3).is_none());
    }

    #[test]
    fn the_log_drops_its_oldest_events_past_its_count_and_says_gap() {
        let log = EventLog::new(2, 1024);
        for n in 1..=5 {
            log.append(format!("{n}").into());
        }

        let batch = answer(&log, 0);

        assert_eq!(batch["events"], serde_json::json!([4, 5]));
        assert_eq!(batch["cursor"], 5);
        assert_eq!(batch["gap"], true);
        assert_eq!(answer(&log, 3)["gap"], false);
    }

    #[test]
    fn the_log_drops_its_oldest_events_past_its_bytes() {
        let log = EventLog::new(100, 10);
        log.append("\"aaaa\"".into());
        log.append("\"bbbb\"".into());

        let batch = answer(&log, 0);

        assert_eq!(batch["events"], serde_json::json!(["bbbb"]));
        assert_eq!(batch["gap"], true);
        assert_eq!(log.kept.lock().bytes, 6);
    }

    #[test]
    fn a_text_longer_than_the_log_may_hold_is_not_kept() {
        let log = EventLog::new(100, 10);

        assert_eq!(log.append("\"far too long\"".into()), None);
        assert_eq!(log.head(), 0);
    }

    #[test]
    fn an_answer_stops_at_its_byte_bound_and_the_cursor_says_where() {
        let log = EventLog::new(100, MAX_BYTES);
        // Four of these fit in an answer, five do not.
        let text: Arc<str> = format!("\"{}\"", "x".repeat(MAX_ANSWER_BYTES / 5 + 1)).into();
        for _ in 0..6 {
            assert!(log.append(text.clone()).is_some());
        }

        let batch = answer(&log, 0);

        assert_eq!(batch["events"].as_array().unwrap().len(), 4);
        assert_eq!(batch["cursor"], 4);
        assert_eq!(answer(&log, 4)["cursor"], 6);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_an_event_arrives() {
        let log = Arc::new(EventLog::new(16, 1024));
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.wait_after(0).await }
        });

        log.append("1".into());

        waiting.await.unwrap();
        assert_eq!(log.head(), 1);
    }
}
