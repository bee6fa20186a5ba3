//! Server-Sent Events: `GET /sse` is one response that never ends. Each event
//! goes out as `id: <seq>` and `data: <json>`; control messages carry no id.
//!
//! The stream is pulled: actix asks for the next chunk only when the socket
//! can take it, so a client that stops reading simply falls behind its cursor
//! instead of filling the server's memory.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::BoxFuture;
use futures_util::Stream;
use tokio::time::{interval_at, Instant, Interval};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{AppState, ReadQuery};
use crate::config::SSE_HEARTBEAT;
use crate::error::ApiError;
use crate::log::Seq;
use crate::presence::ConnectionGuard;
use crate::protocol::Control;
use crate::stats::{OpenGuard, Transport};

/// The most a stream writes in one chunk, in bytes. actix pulls the next
/// chunk only when its write buffer has room, so this bounds what one slow
/// reader can hold in server memory.
pub const SSE_CHUNK_BYTES: usize = 64 * 1024;

/// `GET /sse?since=N[&epoch=E][&session=S]`, honouring `Last-Event-ID`.
pub async fn sse_stream(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.counters(Transport::Sse).request();
    // A reconnecting EventSource repeats its original URL, so the header is
    // the fresher cursor.
    let since = match req.headers().get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<Seq>().ok())
            .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event seq".into()))?,
        None => query.since,
    };
    let connection = query
        .session
        .map(|s| state.room.presence().connect(s))
        .transpose()?;
    let open = state.stats.open(Transport::Sse);
    let stream = SseStream {
        cursor: since,
        epoch: query.epoch().map(str::to_owned),
        started: false,
        heartbeat: interval_at(Instant::now() + SSE_HEARTBEAT, SSE_HEARTBEAT),
        stopping: Box::pin(state.shutdown.clone().cancelled_owned()),
        newer: None,
        _connection: connection,
        _open: open,
        state,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Tells nginx and similar proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

struct SseStream {
    state: web::Data<AppState>,
    /// The last seq sent.
    cursor: Seq,
    /// The client's epoch, checked on the first read only.
    epoch: Option<String>,
    started: bool,
    heartbeat: Interval,
    /// Resolves when the server shuts down; registered once per stream.
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Resolves once the log has events after the cursor; kept until it
    /// fires, so a stream subscribes once per wait, not once per poll.
    newer: Option<BoxFuture<'static, ()>>,
    _connection: Option<ConnectionGuard>,
    _open: OpenGuard,
}

impl SseStream {
    /// What the log holds after the cursor, as one chunk of at most about
    /// [`SSE_CHUNK_BYTES`] (with the opening `hello` on the first call), or
    /// `None` when there is nothing new.
    fn read_chunk(&mut self) -> Option<Bytes> {
        let log = self.state.log().clone();
        let batch = log.read_since(self.cursor, self.epoch.take().as_deref());
        let mut chunk = String::new();
        if !self.started {
            self.started = true;
            // Ask EventSource to come back quickly if the stream drops.
            chunk.push_str("retry: 1000\n");
            push_control(
                &mut chunk,
                &Control::Hello {
                    epoch: log.epoch().clone(),
                    cursor: self.cursor,
                },
            );
        }
        if batch.gap {
            let cursor = batch.events.first().map_or(batch.cursor, |e| e.seq - 1);
            push_control(
                &mut chunk,
                &Control::Gap {
                    epoch: log.epoch().clone(),
                    cursor,
                },
            );
        }
        let mut sent = 0;
        self.cursor = batch.cursor;
        for event in &batch.events {
            if chunk.len() >= SSE_CHUNK_BYTES {
                // The rest is read again from the cursor on the next pull.
                self.cursor = event.seq - 1;
                break;
            }
            chunk.push_str("id: ");
            chunk.push_str(itoa::Buffer::new().format(event.seq));
            chunk.push_str("\ndata: ");
            chunk.push_str(event.json());
            chunk.push_str("\n\n");
            sent += 1;
        }
        if chunk.is_empty() {
            return None;
        }
        self.state.counters(Transport::Sse).sent(sent, chunk.len());
        Some(Bytes::from(chunk))
    }
}

/// actix pulls the stream: `poll_next` runs only when the connection can
/// take another chunk.
impl Stream for SseStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        loop {
            if let Some(chunk) = this.read_chunk() {
                // Whatever the wait was for has been read.
                this.newer = None;
                return Poll::Ready(Some(Ok(chunk)));
            }
            let cursor = this.cursor;
            let log = this.state.log();
            let newer = this.newer.get_or_insert_with(|| log.wait_after(cursor));
            if newer.as_mut().poll(cx).is_pending() {
                break;
            }
            // Events arrived between the read and the wait: read again.
            this.newer = None;
        }
        match this.heartbeat.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(b": heartbeat\n\n")))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn push_control(chunk: &mut String, control: &Control) {
    chunk.push_str("data: ");
    chunk.push_str(&control.to_json());
    chunk.push_str("\n\n");
}
