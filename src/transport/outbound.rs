//! A WebSocket's outbound queue, bounded in bytes, and the response body that
//! drains it.
//!
//! The socket task pushes frames; actix pulls the body only when the
//! connection can take more. Log events are pushed only while the queue is
//! under its soft limit, so a client that stops reading simply stops being
//! fed: its cursor stays put, and it resumes from there once it reads again.
//! Small control frames may go past the soft limit up to a hard limit (twice
//! the soft one); a socket that reaches it is closed, so a client's memory on
//! the server never grows past that.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_codec::Encoder as _;
use actix_http::ws::{Codec, Message};
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::stats::{Stats, Transport};

/// The soft limit of a WebSocket's outbound queue, in bytes of frame payload.
pub const WS_QUEUE_BYTES: usize = 256 * 1024;

/// The producer side, held by the socket task.
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The consumer side: the WebSocket response body.
pub struct OutboundBody {
    shared: Arc<Shared>,
    codec: Codec,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the socket task when room frees up or the client is gone.
    drained: Notify,
    stats: Arc<Stats>,
}

struct Queue {
    frames: VecDeque<(Message, usize)>,
    /// Payload bytes queued and not yet handed to actix.
    bytes: usize,
    /// The body waiting for frames.
    waker: Option<Waker>,
    /// No more frames: the stream ends once the queue is drained.
    finished: bool,
    /// The body was dropped: the connection is gone.
    gone: bool,
}

/// What happened to a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Refused: the queue is at its hard limit.
    Overflow,
    /// Refused: the connection is gone.
    Gone,
}

/// A new queue and the body that drains it.
pub fn channel(stats: Arc<Stats>) -> (Outbound, OutboundBody) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            bytes: 0,
            waker: None,
            finished: false,
            gone: false,
        }),
        drained: Notify::new(),
        stats,
    });
    (
        Outbound {
            shared: shared.clone(),
        },
        OutboundBody {
            shared,
            codec: Codec::new(),
        },
    )
}

impl Outbound {
    /// Whether another log event may be queued now (the soft limit).
    pub fn has_room(&self) -> bool {
        let queue = self.shared.queue.lock();
        queue.bytes < WS_QUEUE_BYTES && !queue.gone
    }

    /// Bytes queued and not yet handed to the connection.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queue.lock().bytes
    }

    /// Whether the connection is gone.
    pub fn is_gone(&self) -> bool {
        self.shared.queue.lock().gone
    }

    /// Queues a frame unless that would pass the hard limit.
    pub fn push(&self, message: Message) -> Pushed {
        let len = payload_len(&message);
        let waker = {
            let mut queue = self.shared.queue.lock();
            if queue.gone || queue.finished {
                return Pushed::Gone;
            }
            if queue.bytes + len > 2 * WS_QUEUE_BYTES && !queue.frames.is_empty() {
                return Pushed::Overflow;
            }
            queue.bytes += len;
            queue.frames.push_back((message, len));
            queue.waker.take()
        };
        self.shared.stats.queued(Transport::Ws, len as i64);
        if let Some(waker) = waker {
            waker.wake();
        }
        Pushed::Queued
    }

    /// Queues a last frame past every limit, and ends the stream after it.
    pub fn finish(&self, last: Option<Message>) {
        let waker = {
            let mut queue = self.shared.queue.lock();
            if let Some(message) = last {
                if !queue.gone && !queue.finished {
                    let len = payload_len(&message);
                    queue.bytes += len;
                    queue.frames.push_back((message, len));
                    self.shared.stats.queued(Transport::Ws, len as i64);
                }
            }
            queue.finished = true;
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves when the connection is gone: the body was dropped.
    pub async fn gone(&self) {
        loop {
            let notified = self.shared.drained.notified();
            if self.is_gone() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when the queue drops under its soft limit or the connection
    /// goes away.
    pub async fn writable(&self) {
        loop {
            let notified = self.shared.drained.notified();
            if self.has_room() || self.is_gone() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.finish(None);
    }
}

fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        _ => 2,
    }
}

impl Stream for OutboundBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut buf = BytesMut::new();
        let (drained, finished) = {
            let mut queue = this.shared.queue.lock();
            let mut drained = 0;
            while let Some((message, len)) = queue.frames.pop_front() {
                drained += len;
                if let Err(err) = this.codec.encode(message, &mut buf) {
                    tracing::error!(%err, "could not encode a websocket frame");
                }
            }
            queue.bytes -= drained;
            if buf.is_empty() && !queue.finished {
                queue.waker = Some(cx.waker().clone());
            }
            (drained, queue.finished)
        };
        if drained > 0 {
            this.shared.stats.queued(Transport::Ws, -(drained as i64));
            this.shared.drained.notify_waiters();
        }
        if !buf.is_empty() {
            Poll::Ready(Some(Ok(buf.freeze())))
        } else if finished {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let left = {
            let mut queue = self.shared.queue.lock();
            queue.gone = true;
            let left = queue.bytes;
            queue.bytes = 0;
            queue.frames.clear();
            left
        };
        self.shared.stats.queued(Transport::Ws, -(left as i64));
        self.shared.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn text(len: usize) -> Message {
        Message::Text("x".repeat(len).into())
    }

    #[tokio::test]
    async fn the_queue_has_room_until_its_soft_limit() {
        let (out, _body) = channel(Arc::default());
        assert!(out.has_room());
        assert_eq!(out.push(text(WS_QUEUE_BYTES)), Pushed::Queued);
        assert!(!out.has_room());
        assert_eq!(out.queued_bytes(), WS_QUEUE_BYTES);
        // Controls still fit, up to the hard limit.
        assert_eq!(out.push(text(WS_QUEUE_BYTES - 10)), Pushed::Queued);
        assert_eq!(out.push(text(11)), Pushed::Overflow);
    }

    #[tokio::test]
    async fn draining_the_body_frees_room_and_wakes_the_writer() {
        let stats = Arc::new(Stats::default());
        let (out, mut body) = channel(stats.clone());
        out.push(text(WS_QUEUE_BYTES));
        let writer = tokio::spawn(async move {
            out.writable().await;
            out
        });
        let chunk = body.next().await.unwrap().unwrap();
        // A text frame of 256 KiB: 2 header bytes, 8 length bytes, the payload.
        assert_eq!(chunk.len(), WS_QUEUE_BYTES + 10);
        let out = writer.await.unwrap();
        assert!(out.has_room());
        assert_eq!(stats.view().ws.queued, 0);
    }

    #[tokio::test]
    async fn a_dropped_body_means_the_client_is_gone() {
        let (out, body) = channel(Arc::default());
        out.push(text(10));
        drop(body);
        assert!(out.is_gone());
        assert_eq!(out.push(text(1)), Pushed::Gone);
        out.writable().await;
    }

    #[tokio::test]
    async fn finishing_sends_the_last_frame_then_ends_the_stream() {
        let (out, mut body) = channel(Arc::default());
        out.push(text(WS_QUEUE_BYTES * 2));
        out.finish(Some(Message::Close(None)));
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(
            &chunk[chunk.len() - 2..],
            &[0x88, 0x00],
            "ends with a close frame"
        );
        assert!(body.next().await.is_none());
    }
}
