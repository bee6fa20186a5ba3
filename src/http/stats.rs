//! Counters per transport, served at `GET /stats` and shown on the compare
//! page. Plain relaxed atomics: they are for watching, not for accounting.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::net::traffic::Transport;

/// One transport's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Held long-polls, open streams or open sockets right now.
    open: AtomicI64,
    /// HTTP requests (or, for streams and sockets, connections) served.
    requests: AtomicU64,
    /// Log events delivered to clients.
    events: AtomicU64,
    /// Body bytes sent: response bodies, stream chunks, frame payloads.
    bytes: AtomicU64,
    /// Responses that carried no event.
    empty: AtomicU64,
    /// Bytes waiting in outbound queues right now.
    queued: AtomicI64,
}

/// A snapshot of one transport's counters, as JSON.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CountersView {
    /// Held long-polls, open streams or open sockets right now.
    pub open: i64,
    /// Requests or connections served.
    pub requests: u64,
    /// Log events delivered.
    pub events: u64,
    /// Body bytes sent.
    pub bytes: u64,
    /// Responses with no event in them.
    pub empty: u64,
    /// Bytes waiting in outbound queues right now.
    pub queued: i64,
}

impl Counters {
    /// Counts a request or new connection.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what one response, chunk or frame carried.
    pub fn sent(&self, events: usize, bytes: usize) {
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a response that carried no event.
    pub fn empty(&self) {
        self.empty.fetch_add(1, Ordering::Relaxed);
    }

    fn view(&self) -> CountersView {
        CountersView {
            open: self.open.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            empty: self.empty.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}

/// WebRTC signals the server passed on, and those it refused.
#[derive(Debug, Default)]
pub struct SignalCounters {
    relayed: AtomicU64,
    refused: AtomicU64,
}

/// A snapshot of the signal counters, as JSON.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SignalCountersView {
    /// Signals delivered to their target's sockets.
    pub relayed: u64,
    /// Signals refused with an `error` frame.
    pub refused: u64,
}

impl SignalCounters {
    /// Counts a signal passed on.
    pub fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a signal refused.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn view(&self) -> SignalCountersView {
        SignalCountersView {
            relayed: self.relayed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Keeps a connection counted as open until it is dropped.
pub struct OpenGuard {
    stats: Arc<Stats>,
    transport: Transport,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.stats
            .of(self.transport)
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters for every transport.
#[derive(Debug, Default)]
pub struct Stats {
    poll: Counters,
    longpoll: Counters,
    sse: Counters,
    ws: Counters,
    webtransport: Counters,
    /// WebRTC signals, which go over WebSockets but are no log events.
    pub signals: SignalCounters,
}

/// A snapshot of every transport's counters, as served at `GET /stats`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    /// Short polling.
    pub poll: CountersView,
    /// Long polling.
    pub longpoll: CountersView,
    /// Server-Sent Events.
    pub sse: CountersView,
    /// WebSocket.
    pub ws: CountersView,
    /// WebTransport.
    pub webtransport: CountersView,
}

impl Stats {
    /// The counters of one transport.
    pub fn of(&self, transport: Transport) -> &Counters {
        match transport {
            Transport::Poll => &self.poll,
            Transport::LongPoll => &self.longpoll,
            Transport::Sse => &self.sse,
            Transport::Ws => &self.ws,
            Transport::Wt => &self.webtransport,
        }
    }

    /// Counts an open connection of `transport` until the guard is dropped.
    pub fn open(self: &Arc<Self>, transport: Transport) -> OpenGuard {
        self.of(transport).open.fetch_add(1, Ordering::Relaxed);
        OpenGuard {
            stats: self.clone(),
            transport,
        }
    }

    /// Adds `delta` bytes to what waits in `transport`'s outbound queues.
    pub fn queued(&self, transport: Transport, delta: i64) {
        self.of(transport)
            .queued
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// A snapshot of all of them.
    pub fn view(&self) -> StatsView {
        StatsView {
            poll: self.poll.view(),
            longpoll: self.longpoll.view(),
            sse: self.sse.view(),
            ws: self.ws.view(),
            webtransport: self.webtransport.view(),
        }
    }
}
