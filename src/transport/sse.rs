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
use futures_util::Stream;
use tokio::time::{interval_at, Instant, Interval};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{Opened, Transport};
use crate::config::SSE_HEARTBEAT;
use crate::core::error::ApiError;
use crate::core::log::{Reader, Seq};
use crate::core::protocol::Control;
use crate::core::room::Attachment;
use crate::http::admission::ClientIp;
use crate::http::api::ReadQuery;
use crate::http::state::AppState;
use crate::http::stats::OpenGuard;

/// The most a stream writes in one chunk, in bytes. actix pulls the next
/// chunk only when its write buffer has room, so this bounds what one slow
/// reader can hold in server memory.
pub const SSE_CHUNK_BYTES: usize = 64 * 1024;

/// `GET /sse?since=N[&epoch=E][&session=S][&room=R]`, honouring
/// `Last-Event-ID`.
pub async fn sse_stream(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
    ip: web::ReqData<ClientIp>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut from = query.cursor();
    // A reconnecting EventSource repeats its original URL, so the header is
    // the fresher cursor.
    if let Some(value) = req.headers().get("last-event-id") {
        from.seq = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<Seq>().ok())
            .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event seq".into()))?;
    }
    let Opened { room, attached } = super::open(&state, Transport::Sse, &query, ip.0).await?;
    let open = state.stats.open(Transport::Sse);
    let stream = SseStream {
        reader: room.reader(from),
        started: false,
        drained: false,
        heartbeat: interval_at(Instant::now() + SSE_HEARTBEAT, SSE_HEARTBEAT),
        stopping: Box::pin(state.shutdown.clone().cancelled_owned()),
        _attached: attached,
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
    reader: Reader,
    /// Whether the opening `retry` and `hello` have gone out.
    started: bool,
    /// Whether the last read took everything the log held: the next poll
    /// then waits for a newer event before it reads again, rather than
    /// reading nothing once per event.
    drained: bool,
    heartbeat: Interval,
    /// Resolves when the server shuts down; registered once per stream.
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    _attached: Option<Attachment>,
    _open: OpenGuard,
}

impl SseStream {
    /// What the log holds after the cursor, as one chunk of at most about
    /// [`SSE_CHUNK_BYTES`] (with the opening `hello` on the first call), or
    /// `None` when there is nothing new.
    fn read_chunk(&mut self) -> Option<Bytes> {
        let mut opening = String::new();
        if !self.started {
            self.started = true;
            // Ask EventSource to come back quickly if the stream drops.
            opening.push_str("retry: 1000\n");
            push_control(&mut opening, &Control::hello(&self.reader));
        }
        let read = self
            .reader
            .next(SSE_CHUNK_BYTES.saturating_sub(opening.len()));
        self.drained = !read.more;
        // Sized once: an event's lines are its JSON and at most 40 bytes
        // around it, so the chunk is not grown event by event.
        let events_len: usize = read.events.iter().map(|e| e.json().len() + 40).sum();
        let mut chunk = String::with_capacity(opening.len() + events_len);
        chunk.push_str(&opening);
        if let Some(cursor) = read.gap {
            push_control(&mut chunk, &Control::gap(&self.reader, cursor));
        }
        for event in &read.events {
            chunk.push_str("id: ");
            chunk.push_str(itoa::Buffer::new().format(event.seq));
            chunk.push_str("\ndata: ");
            chunk.push_str(event.json());
            chunk.push_str("\n\n");
        }
        if chunk.is_empty() {
            return None;
        }
        self.state
            .counters(Transport::Sse)
            .sent(read.events.len(), chunk.len());
        Some(Bytes::from(chunk))
    }
}

/// actix pulls the stream: `poll_next` runs only when the connection can
/// take another chunk.
impl Stream for SseStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.drained {
                if let Some(chunk) = this.read_chunk() {
                    return Poll::Ready(Some(Ok(chunk)));
                }
            }
            if this.reader.poll_newer(cx).is_pending() {
                break;
            }
            // Something newer than the cursor is in the log: read it.
            this.drained = false;
        }
        // Asked only when there is nothing left to send, once per wait
        // rather than once per chunk: a stream that keeps up comes here
        // after every chunk, and one that does not is not polled at all
        // until its socket drains.
        if this.stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
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
