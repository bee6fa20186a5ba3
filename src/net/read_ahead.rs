//! How far an HTTP/1 connection may read ahead of the requests it serves.
//!
//! actix-http's dispatcher reads what the socket has and decodes every
//! whole request in it into a queue, one request head (about 300 B with
//! its header map) for every 40 B a pipelining client sends. Its own cap on
//! that queue is checked only before it decodes a buffer of up to 128 KiB,
//! so a client that pipelines thousands of requests and reads the answers
//! slowly, or not at all, has all of them decoded and held until it goes:
//! about 600 MB for fifty such connections.
//!
//! So the connection reads only as much as its requests need. It may read
//! [`READ_AHEAD`] bytes, plus the body each request declares when it
//! begins. Once that is used up it reads on only when the dispatcher has
//! nothing queued, which it knows without looking inside the dispatcher: the
//! dispatcher reads only before it serves, so a read that finds no request
//! being served comes after everything decoded so far was answered.
//!
//! - **A request is being served** and the credit is used up: the read waits
//!   until that request ends. The next one comes from the queue, so the
//!   credit is not renewed until the queue is empty.
//! - **No request is being served**, and one began since the credit was
//!   given: the queue is empty, so the credit is renewed.
//! - **No request is being served, and none began**: the dispatcher may still
//!   hold a whole request it has not decoded yet, so the read declines once
//!   and wakes the task at once, letting it decode. If it is asked again
//!   with still nothing begun, what it holds is part of one long head, and
//!   it gets another [`READ_AHEAD`] to finish it (actix-http refuses a head
//!   past 128 KiB on its own).
//!
//! A client that speaks HTTP/1.1 as browsers do, one request at a time,
//! never waits here: a request head and its body are always within credit.
//! A pipelining client has at most [`READ_AHEAD`] bytes of requests queued,
//! about 200 heads, whatever it sends.

use std::task::{Context, Waker};

/// What a connection may read beyond the bodies its requests declare: one
/// generous request head. 8 KiB holds every head a browser sends (nginx's
/// default `large_client_header_buffers` is 4 of 8 KiB, for the longest).
pub const READ_AHEAD: u64 = 8 * 1024;

/// One connection's credit to read.
#[derive(Debug)]
pub struct ReadAhead {
    /// Bytes the connection may read before it must wait.
    credit: u64,
    /// Whether a request began since the credit was last renewed.
    begun: bool,
    /// Whether a read with nothing being served already declined once for
    /// the dispatcher to decode what it holds.
    declined: bool,
    /// The connection's task, while its read waits for a request to end.
    waiting: Option<Waker>,
    /// Whether reads are no longer bounded here ([`ReadAhead::free`]).
    free: bool,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            credit: READ_AHEAD,
            begun: false,
            declined: false,
            waiting: None,
            free: false,
        }
    }
}

impl ReadAhead {
    /// How many bytes the connection may read now, `serving` telling
    /// whether a request is being served. `None` if it must wait: then `cx`
    /// is woken when it may try again.
    pub fn allowed(&mut self, serving: bool, cx: &mut Context<'_>) -> Option<u64> {
        if self.free {
            return Some(u64::MAX);
        }
        if self.credit > 0 {
            return Some(self.credit);
        }
        if serving {
            // Polled again by the same task (a stream's every chunk): keep
            // the waker it left rather than clone it anew.
            if !self
                .waiting
                .as_ref()
                .is_some_and(|waiting| waiting.will_wake(cx.waker()))
            {
                self.waiting = Some(cx.waker().clone());
            }
            return None;
        }
        if self.begun || self.declined {
            self.credit = READ_AHEAD;
            self.begun = false;
            self.declined = false;
            return Some(self.credit);
        }
        self.declined = true;
        cx.waker().wake_by_ref();
        None
    }

    /// Stops bounding the connection's reads, for a protocol that bounds its
    /// own (HTTP/2's flow control, a WebSocket's buffer) and that begins
    /// and ends no request here. A waiting read goes on.
    pub fn free(&mut self) {
        self.free = true;
        self.end();
    }

    /// The connection read `bytes`.
    pub fn read(&mut self, bytes: u64) {
        self.credit = self.credit.saturating_sub(bytes);
    }

    /// A request began, with `body` bytes still to read.
    pub fn begin(&mut self, body: u64) {
        self.credit = self.credit.saturating_add(body);
        self.begun = true;
    }

    /// The request being served ended: a read waiting for it may go on.
    pub fn end(&mut self) {
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts how often it is woken.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    /// A connection that has read all its credit, no request begun.
    fn spent() -> ReadAhead {
        let mut ahead = ReadAhead::default();
        ahead.read(READ_AHEAD);
        ahead
    }

    /// A waker and the count of its wake-ups.
    fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_client_that_sends_one_request_at_a_time_never_waits() {
        // Arrange
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        let mut ahead = ReadAhead::default();

        for _ in 0..1000 {
            // Act: a 600 B head and a 2 KB body it declares, then the answer.
            assert!(ahead.allowed(false, &mut cx).is_some());
            ahead.read(600);
            ahead.begin(2000);
            assert!(ahead.allowed(true, &mut cx).is_some());
            ahead.read(2000);
            ahead.end();
        }

        // Assert: the credit never ran out.
        assert_eq!(woken(&count), 0);
    }

    #[test]
    fn queued_requests_get_no_new_credit_until_the_queue_is_empty() {
        // Arrange: a pipelining client filled the credit with 200 heads.
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        let mut ahead = spent();

        // Act: the dispatcher serves the queued requests one by one.
        for _ in 0..199 {
            ahead.begin(0);
            // Assert: while one is served, its read waits.
            assert_eq!(ahead.allowed(true, &mut cx), None);
            ahead.end();
        }
        let woken_while_queued = woken(&count);
        ahead.begin(0);
        ahead.end();

        // Assert: with nothing served and the queue drained, reading goes on.
        assert_eq!(woken_while_queued, 199);
        assert_eq!(ahead.allowed(false, &mut cx), Some(READ_AHEAD));
    }

    #[test]
    fn a_head_longer_than_the_credit_gets_more_after_one_decline() {
        // Arrange
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        let mut ahead = spent();

        // Act and assert: the first read declines and wakes the task at once,
        // the second, with still no request begun, gets more credit.
        assert_eq!(ahead.allowed(false, &mut cx), None);
        assert_eq!(woken(&count), 1);
        assert_eq!(ahead.allowed(false, &mut cx), Some(READ_AHEAD));
    }

    #[test]
    fn a_connection_taken_over_by_a_protocol_that_bounds_itself_reads_freely() {
        // Arrange: a read waits while a request is served.
        let (count, waker) = counted();
        let mut cx = Context::from_waker(&waker);
        let mut ahead = spent();
        ahead.begin(0);
        assert_eq!(ahead.allowed(true, &mut cx), None);

        // Act
        ahead.free();

        // Assert: the waiting read is woken and nothing bounds it any more.
        assert_eq!(woken(&count), 1);
        assert_eq!(ahead.allowed(true, &mut cx), Some(u64::MAX));
    }
}
