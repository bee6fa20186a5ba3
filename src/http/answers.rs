//! Poll and long-poll answers made once and shared.
//!
//! When an event arrives, every long-poll held on a room answers at once,
//! and those that waited on the same cursor read the same events: a
//! thousand held requests make a thousand byte-identical bodies. The last
//! body made is kept here with what decides it, so the next request that
//! reads the same thing sends the same bytes instead of writing them again.
//!
//! A body is decided by its room's log (told apart by its epoch, which is
//! random per log), the first event's seq and how many events follow it (a
//! log only grows, so that range always holds the same events), the cursor
//! it leaves the reader at, and whether it reports a gap and more to come.
//!
//! It keeps one body of at most the poll answer's size bound, so its memory
//! is bounded by that; it knows no HTTP.

use bytes::Bytes;
use parking_lot::Mutex;

use crate::core::log::{Epoch, Read, Seq};

/// What decides a poll answer's body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    epoch: Epoch,
    first: Option<Seq>,
    events: usize,
    cursor: Seq,
    gap: bool,
    more: bool,
}

/// The last poll answer made, to share with the requests that read the
/// same thing.
#[derive(Debug, Default)]
pub struct SharedAnswers {
    last: Mutex<Option<(Key, Bytes)>>,
}

impl SharedAnswers {
    /// The body for `read`, which left its reader at `cursor` in the log of
    /// `epoch`: the last one made if it was for the same read, else one
    /// made now with `make`, which is kept for the next.
    pub fn body(
        &self,
        read: &Read,
        cursor: Seq,
        epoch: &Epoch,
        make: impl FnOnce() -> String,
    ) -> Bytes {
        let key = Key {
            epoch: epoch.clone(),
            first: read.events.first().map(|event| event.seq),
            events: read.events.len(),
            cursor,
            gap: read.gap.is_some(),
            more: read.more,
        };
        if let Some((last, body)) = &*self.last.lock() {
            if *last == key {
                return body.clone();
            }
        }
        // Made outside the lock: other workers' requests need not wait.
        let body = Bytes::from(make());
        *self.last.lock() = Some((key, body.clone()));
        body
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::*;
    use crate::core::log::{EventBody, MemoryLog};
    use crate::core::names::Name;

    fn read_of(log: &MemoryLog, count: usize) -> Read {
        let events = (0..count)
            .map(|_| {
                let body = EventBody::Mousemove { x: 0.5, y: 0.5 };
                log.append_now(Name::parse("alice").unwrap(), body).unwrap()
            })
            .collect();
        Read {
            events,
            ..Read::default()
        }
    }

    #[test]
    fn requests_that_read_the_same_events_share_one_body_made_once() {
        // Arrange
        let log = MemoryLog::new(10);
        let read = read_of(&log, 2);
        let epoch = Epoch::random();
        let answers = SharedAnswers::default();
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            "body".to_owned()
        };

        // Act
        let first = answers.body(&read, 2, &epoch, make);
        let second = answers.body(&read, 2, &epoch, make);

        // Assert
        assert_eq!(made.get(), 1, "the second request reused the first body");
        assert_eq!(first, second);
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same bytes, shared");
    }

    #[test]
    fn a_different_read_cursor_or_log_gets_a_body_of_its_own() {
        // Arrange
        let log = MemoryLog::new(10);
        let two = read_of(&log, 2);
        let one = Read {
            events: vec![Arc::clone(&two.events[0])],
            ..Read::default()
        };
        let epoch = Epoch::random();
        let answers = SharedAnswers::default();
        let body = |read: &Read, cursor, epoch: &Epoch, text: &str| {
            answers.body(read, cursor, epoch, || text.to_owned())
        };

        // Act and Assert: each differs from the one before in one way.
        assert_eq!(body(&two, 2, &epoch, "a"), "a");
        assert_eq!(body(&one, 2, &epoch, "b"), "b", "fewer events");
        assert_eq!(body(&one, 3, &epoch, "c"), "c", "another cursor");
        assert_eq!(body(&one, 3, &Epoch::random(), "d"), "d", "another log");
        let more = Read {
            more: true,
            events: one.events.clone(),
            ..Read::default()
        };
        assert_eq!(body(&more, 3, &epoch, "e"), "e", "more to come");
    }
}
