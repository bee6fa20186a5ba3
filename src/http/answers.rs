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
