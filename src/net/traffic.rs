//! What crosses the wire, counted exactly: every byte the server reads from
//! and writes to each connection, request and response heads included,
//! charged to the client that asked (the `client=ID` a page puts on its
//! requests) and to the kind of request, and served at `GET /traffic`; and
//! the same for the whole node, every request whether it names a client or
//! not, served at `GET /metrics`.
//!
//! Every accepted connection (`net::conn`) counts what it carries into its
//! [`ConnectionMeter`]. Each request tells the meter whom to charge
//! ([`ConnectionMeter::begin`]); the meter splits the connection's bytes
//! between requests like this:
//!
//! - bytes read while no request is being served are the next request's head,
//!   so they wait in the meter until that request says whom to charge;
//! - bytes written after a response's body is done are that response's tail,
//!   so they go to the request that was just answered.
//!
//! That split is exact for HTTP/1.1 as browsers speak it: one request at a
//! time on a connection, the next sent only after the last answer. A client
//! that pipelines has the heads it sends early charged to the request being
//! answered. A WebSocket is charged to the client its upgrade named, for the
//! connection's whole life.
//!
//! This module knows no routes and no HTTP framework: the HTTP layer's
//! admission ([`crate::http::admission`]) calls it for every request and
//! upgrade.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

use super::read_ahead::ReadAhead;

/// How many clients' tallies are kept. Past it, the one unused the longest
/// is forgotten: ids come from anyone, so the table must not grow with them.
pub const MAX_CLIENTS: usize = 4096;

/// The longest client id, in bytes.
pub const MAX_CLIENT_ID: usize = 64;

/// A client's name for itself: 1 to [`MAX_CLIENT_ID`] characters from
/// `A–Z a–z 0–9 _ -`. Not a credential: anyone who knows it can read its
/// tally, which holds only byte counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Checks a raw id.
    pub fn parse(raw: &str) -> Option<ClientId> {
        let fits = !raw.is_empty()
            && raw.len() <= MAX_CLIENT_ID
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        fits.then(|| ClientId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which of the four transports a request or connection reads the log
/// with: the one name for it, in `/stats`, `/traffic` and `/metrics`. Which
/// endpoint is which transport is said by the endpoint table, in the HTTP
/// layer; this module knows no paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Short polling
    Poll,
    /// Long polling
    LongPoll,
    /// Server-Sent Events
    Sse,
    /// WebSocket: the upgrade and the socket after it
    Ws,
    /// WebTransport: a session over HTTP/3, on UDP
    Wt,
}

/// What a request was for, as tallied: one of the transports, or `None`
/// for everything else (register, send, stats, the page's files).
pub type Channel = Option<Transport>;

/// Where a channel's counters sit in a tally: each transport's, then the
/// rest's.
fn slot(channel: Channel) -> usize {
    match channel {
        Some(transport) => transport as usize,
        None => 5,
    }
}

/// One channel's counters in a tally.
#[derive(Debug, Default)]
struct ChannelCounters {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A snapshot of one channel's counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ChannelView {
    /// HTTP requests made (for SSE and WebSocket: connections opened).
    pub requests: u64,
    /// Bytes the server read: request heads and bodies, WebSocket frames.
    pub bytes_in: u64,
    /// Bytes the server wrote: response heads and bodies, stream chunks,
    /// WebSocket frames.
    pub bytes_out: u64,
}

/// What one client has cost, per channel.
#[derive(Debug, Default)]
pub struct Tally {
    channels: [ChannelCounters; 6],
    /// Milliseconds after the table started when it was last charged, for
    /// forgetting the one unused the longest.
    last_used: AtomicU64,
}

/// A snapshot of one client's tally, as served at `GET /traffic`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TallyView {
    /// `GET /poll`
    pub poll: ChannelView,
    /// `GET /longpoll`
    pub longpoll: ChannelView,
    /// `GET /sse`
    pub sse: ChannelView,
    /// `GET /ws`
    pub ws: ChannelView,
    /// WebTransport sessions (`/wt`, over QUIC)
    pub webtransport: ChannelView,
    /// Every other request.
    pub other: ChannelView,
}

impl Tally {
    fn counters(&self, channel: Channel) -> &ChannelCounters {
        &self.channels[slot(channel)]
    }

    /// A snapshot of every channel.
    pub fn view(&self) -> TallyView {
        let view = |channel: Channel| {
            let c = self.counters(channel);
            ChannelView {
                requests: c.requests.load(Ordering::Relaxed),
                bytes_in: c.bytes_in.load(Ordering::Relaxed),
                bytes_out: c.bytes_out.load(Ordering::Relaxed),
            }
        };
        TallyView {
            poll: view(Some(Transport::Poll)),
            longpoll: view(Some(Transport::LongPoll)),
            sse: view(Some(Transport::Sse)),
            ws: view(Some(Transport::Ws)),
            webtransport: view(Some(Transport::Wt)),
            other: view(None),
        }
    }
}

/// Every client's tally, bounded by [`MAX_CLIENTS`], and the node's.
#[derive(Debug)]
pub struct Clients {
    started: Instant,
    table: Mutex<HashMap<ClientId, Arc<Tally>>>,
    /// Every request the node served, whether it named a client or not.
    node: Arc<Tally>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            started: Instant::now(),
            table: Mutex::new(HashMap::new()),
            node: Arc::default(),
        }
    }
}

impl Clients {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whom to charge for a request on `channel` from `client`: its tally,
    /// made (and the oldest forgotten, if the table is full) on first use.
    pub fn charge(&self, client: &ClientId, channel: Channel) -> Charge {
        let now = self.now_ms();
        let mut table = self.table.lock();
        let tally = match table.get(client) {
            Some(tally) => tally.clone(),
            None => {
                if table.len() >= MAX_CLIENTS {
                    let oldest = table
                        .iter()
                        .min_by_key(|(_, tally)| tally.last_used.load(Ordering::Relaxed))
                        .map(|(id, _)| id.clone());
                    if let Some(oldest) = oldest {
                        table.remove(&oldest);
                    }
                }
                let tally = Arc::new(Tally::default());
                table.insert(client.clone(), tally.clone());
                tally
            }
        };
        tally.last_used.store(now, Ordering::Relaxed);
        Charge {
            client: Some(tally),
            node: self.node.clone(),
            channel,
        }
    }

    /// Whom to charge for a request on `channel` that names no client: the
    /// node alone.
    pub fn charge_node(&self, channel: Channel) -> Charge {
        Charge {
            client: None,
            node: self.node.clone(),
            channel,
        }
    }

    /// What every request the node served has cost, per channel.
    pub fn node_view(&self) -> TallyView {
        self.node.view()
    }

    /// A client's tally so far; all zeros for one never seen (or forgotten).
    pub fn view(&self, client: &ClientId) -> TallyView {
        self.table
            .lock()
            .get(client)
            .map(|tally| tally.view())
            .unwrap_or_default()
    }

    /// How many clients are tallied now.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }
}

/// Whom a request's bytes are charged to, on one channel: the node's
/// tally, and the client's if the request names one.
#[derive(Debug, Clone)]
pub struct Charge {
    client: Option<Arc<Tally>>,
    node: Arc<Tally>,
    channel: Channel,
}

impl Charge {
    /// Every tally charged: the node's, then the client's.
    fn counters(&self) -> impl Iterator<Item = &ChannelCounters> {
        std::iter::once(&self.node)
            .chain(&self.client)
            .map(|tally| tally.counters(self.channel))
    }

    /// Charges `bytes` read from the client.
    pub fn add_in(&self, bytes: u64) {
        if bytes > 0 {
            for c in self.counters() {
                c.bytes_in.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }

    /// Charges `bytes` written to the client.
    pub fn add_out(&self, bytes: u64) {
        if bytes > 0 {
            for c in self.counters() {
                c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }

    /// Counts one request (or connection) made.
    pub fn add_request(&self) {
        for c in self.counters() {
            c.requests.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where a connection stands between its requests.
#[derive(Debug)]
enum Phase {
    /// A request is being served; its bytes go to its charge, if it has one.
    Serving(Option<Charge>),
    /// No request is being served. What is read waits for the next request;
    /// what is written is the tail of the last answer.
    Between {
        last: Option<Charge>,
        unclaimed_in: u64,
    },
}

/// One connection's byte counter, shared by the connection that counts into
/// it (`net::conn`) and the requests served on it; it also keeps how far
/// the connection may read ahead of them ([`ReadAhead`]).
#[derive(Debug)]
pub struct ConnectionMeter {
    state: Mutex<MeterState>,
}

#[derive(Debug)]
struct MeterState {
    phase: Phase,
    ahead: ReadAhead,
}

impl Default for ConnectionMeter {
    fn default() -> Self {
        ConnectionMeter {
            state: Mutex::new(MeterState {
                phase: Phase::Between {
                    last: None,
                    unclaimed_in: 0,
                },
                ahead: ReadAhead::default(),
            }),
        }
    }
}

impl ConnectionMeter {
    /// Counts bytes read from the client.
    pub fn read(&self, bytes: usize) {
        let bytes = bytes as u64;
        let mut state = self.state.lock();
        state.ahead.read(bytes);
        match &mut state.phase {
            Phase::Serving(charge) => {
                if let Some(charge) = charge {
                    charge.add_in(bytes);
                }
            }
            Phase::Between { unclaimed_in, .. } => *unclaimed_in += bytes,
        }
    }

    /// Counts bytes written to the client.
    pub fn wrote(&self, bytes: usize) {
        let bytes = bytes as u64;
        match &self.state.lock().phase {
            Phase::Serving(Some(charge))
            | Phase::Between {
                last: Some(charge), ..
            } => charge.add_out(bytes),
            _ => {}
        }
    }

    /// How many bytes the connection may read now; `None` if it must wait,
    /// and then `cx` is woken when it may try again ([`ReadAhead`]).
    pub fn read_allowed(&self, cx: &mut Context<'_>) -> Option<u64> {
        let state = &mut *self.state.lock();
        let serving = matches!(state.phase, Phase::Serving(_));
        state.ahead.allowed(serving, cx)
    }

    /// From now on the connection reads as much as it likes: a protocol
    /// that bounds its own reading (HTTP/2, a WebSocket) took it over.
    pub fn read_freely(&self) {
        self.state.lock().ahead.free();
    }

    /// A request begins, with up to `body` bytes of body still to read: it
    /// is charged (if it names a client) one request and the head read since
    /// the last one ended, and from now on what the connection carries.
    pub fn begin(&self, charge: Option<Charge>, body: u64) {
        let state = &mut *self.state.lock();
        state.ahead.begin(body);
        let phase = &mut state.phase;
        let unclaimed = match &*phase {
            Phase::Between { unclaimed_in, .. } => *unclaimed_in,
            Phase::Serving(_) => 0,
        };
        if let Some(charge) = &charge {
            charge.add_request();
            charge.add_in(unclaimed);
        }
        *phase = Phase::Serving(charge);
    }

    /// The request's answer is complete (its body is done); what is written
    /// from now on is its tail.
    pub fn end(&self) {
        let state = &mut *self.state.lock();
        let last = match &mut state.phase {
            Phase::Serving(charge) => charge.take(),
            Phase::Between { last, .. } => last.take(),
        };
        state.phase = Phase::Between {
            last,
            unclaimed_in: 0,
        };
        state.ahead.end();
    }
}

/// The most streams of one HTTP/2 connection tracked at once. Past it the
/// connection's later streams are charged to no one: a page keeps far
/// fewer open, and the table must not grow with what a client sends.
pub const MAX_TRACKED_STREAMS: usize = 1024;

/// One HTTP/2 stream, as [`StreamMeter`] tracks it.
#[derive(Debug, Default)]
struct StreamTally {
    /// Whom its bytes go to, once its request has said.
    charge: Option<Charge>,
    /// Bytes read for it before its request said whom to charge.
    unclaimed_in: u64,
    /// Whether the client has ended its side (END_STREAM).
    client_done: bool,
    /// Whether the server has ended its side.
    server_done: bool,
}

/// The streams of one HTTP/2 connection and whom each is charged to.
#[derive(Debug, Default)]
struct Streams {
    table: HashMap<u32, StreamTally>,
    /// Streams opened and not yet given a charge, oldest first.
    unbound: std::collections::VecDeque<u32>,
    /// The highest stream id the client has opened.
    last_opened: u32,
    /// Set once [`MAX_TRACKED_STREAMS`] was passed: nothing more is tracked.
    overflowed: bool,
}

impl Streams {
    fn close_if_done(&mut self, id: u32) {
        if self
            .table
            .get(&id)
            .is_some_and(|s| s.client_done && s.server_done)
        {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: u32) {
        if let Some(stream) = self.table.remove(&id) {
            if stream.charge.is_none() {
                self.unbound.retain(|&unbound| unbound != id);
            }
        }
    }
}

/// One HTTP/2 connection's byte counter: each frame (its 9-byte header
/// and payload, before encryption) is charged to the request of its
/// stream. Frames on stream 0 (settings, pings, the connection's window)
/// and the TLS records around them are charged to no one.
///
/// Which request a stream carries is known by order: the HTTP/2 layer
/// hands requests to the service in the order their HEADERS arrived, and
/// the service calls [`StreamMeter::bind_next`] for each, before anything
/// else runs. A stream the HTTP/2 layer refuses without handing it on is
/// dropped from that order when the server resets it; until then a later
/// request on the same connection may take its place, so a client that
/// sends malformed streams can only move bytes between its own requests.
#[derive(Debug, Default)]
pub struct StreamMeter {
    streams: Mutex<Streams>,
}

impl StreamMeter {
    /// The client opened stream `id` (a HEADERS frame on a new stream).
    pub fn opened(&self, id: u32) {
        let mut streams = self.streams.lock();
        if id <= streams.last_opened || streams.overflowed {
            return;
        }
        streams.last_opened = id;
        if streams.table.len() >= MAX_TRACKED_STREAMS {
            streams.overflowed = true;
            streams.table.clear();
            streams.unbound.clear();
            return;
        }
        streams.table.insert(id, StreamTally::default());
        streams.unbound.push_back(id);
    }

    /// The next request handed to the service is charged to `charge`: one
    /// request, what its stream carried so far, and what it carries later.
    pub fn bind_next(&self, charge: Charge) {
        charge.add_request();
        let mut streams = self.streams.lock();
        let Some(id) = streams.unbound.pop_front() else {
            return;
        };
        if let Some(stream) = streams.table.get_mut(&id) {
            charge.add_in(std::mem::take(&mut stream.unclaimed_in));
            stream.charge = Some(charge);
        }
    }

    /// Counts a frame of `bytes` read on stream `id`; `ends` when it ends
    /// the client's side, `resets` when it is a RST_STREAM.
    pub fn read(&self, id: u32, bytes: usize, ends: bool, resets: bool) {
        let mut streams = self.streams.lock();
        let Some(stream) = streams.table.get_mut(&id) else {
            return;
        };
        match &stream.charge {
            Some(charge) => charge.add_in(bytes as u64),
            None => stream.unclaimed_in += bytes as u64,
        }
        stream.client_done |= ends;
        if resets {
            streams.forget(id);
        } else {
            streams.close_if_done(id);
        }
    }

    /// Counts a frame of `bytes` written on stream `id`; `ends` when it
    /// ends the server's side, `resets` when it is a RST_STREAM.
    pub fn wrote(&self, id: u32, bytes: usize, ends: bool, resets: bool) {
        let mut streams = self.streams.lock();
        let Some(stream) = streams.table.get_mut(&id) else {
            return;
        };
        if let Some(charge) = &stream.charge {
            charge.add_out(bytes as u64);
        }
        stream.server_done |= ends;
        if resets {
            streams.forget(id);
        } else {
            streams.close_if_done(id);
        }
    }

    /// How many streams are open (or not yet seen closed) now.
    pub fn tracked(&self) -> usize {
        self.streams.lock().table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> ClientId {
        ClientId::parse(id).unwrap()
    }

    #[test]
    fn client_ids_are_short_plain_words() {
        assert!(ClientId::parse("page-3f9a_poll").is_some());
        assert!(ClientId::parse("").is_none());
        assert!(ClientId::parse("a b").is_none());
        assert!(ClientId::parse(&"x".repeat(MAX_CLIENT_ID + 1)).is_none());
    }

    #[test]
    fn a_head_read_between_requests_is_charged_to_the_request_it_begins() {
        // Arrange
        let clients = Clients::default();
        let meter = ConnectionMeter::default();

        // Act: head, answer, the answer's tail after its body, next head.
        meter.read(100);
        meter.begin(Some(clients.charge(&client("a"), Some(Transport::Poll))), 0);
        meter.wrote(200);
        meter.end();
        meter.wrote(5);
        meter.read(90);
        meter.begin(
            Some(clients.charge(&client("b"), Some(Transport::LongPoll))),
            0,
        );
        meter.read(10);
        meter.wrote(300);

        // Assert
        let a = clients.view(&client("a")).poll;
        assert_eq!((a.requests, a.bytes_in, a.bytes_out), (1, 100, 205));
        let b = clients.view(&client("b")).longpoll;
        assert_eq!((b.requests, b.bytes_in, b.bytes_out), (1, 100, 300));
    }

    #[test]
    fn a_request_without_a_client_is_charged_to_no_one() {
        let clients = Clients::default();
        let meter = ConnectionMeter::default();
        meter.begin(Some(clients.charge(&client("a"), Some(Transport::Sse))), 0);
        meter.end();
        meter.read(50);
        meter.begin(None, 0);
        meter.wrote(70);
        meter.end();
        meter.wrote(3);
        let a = clients.view(&client("a")).sse;
        assert_eq!((a.requests, a.bytes_in, a.bytes_out), (1, 0, 0));
    }

    #[test]
    fn the_node_is_charged_for_every_request_whether_it_names_a_client_or_not() {
        // Arrange
        let clients = Clients::default();
        let meter = ConnectionMeter::default();

        // Act: one request names a client, the next names none.
        meter.read(40);
        meter.begin(Some(clients.charge(&client("a"), Some(Transport::Sse))), 0);
        meter.wrote(60);
        meter.end();
        meter.read(30);
        meter.begin(Some(clients.charge_node(Some(Transport::Sse))), 0);
        meter.wrote(20);
        meter.end();

        // Assert
        let node = clients.node_view().sse;
        assert_eq!((node.requests, node.bytes_in, node.bytes_out), (2, 70, 80));
        let a = clients.view(&client("a")).sse;
        assert_eq!((a.requests, a.bytes_in, a.bytes_out), (1, 40, 60));
        assert_eq!(clients.len(), 1, "the node is no client");
    }

    #[test]
    fn the_table_forgets_the_client_unused_the_longest_when_full() {
        let clients = Clients::default();
        for i in 0..MAX_CLIENTS {
            clients.charge(&client(&format!("c{i}")), None);
        }
        assert_eq!(clients.len(), MAX_CLIENTS);
        clients.charge(&client("newcomer"), None).add_request();
        assert_eq!(clients.len(), MAX_CLIENTS);
        assert_eq!(clients.view(&client("newcomer")).other.requests, 1);
    }

    #[test]
    fn each_http2_stream_is_charged_to_its_own_request_however_they_interleave() {
        // Arrange: streams 1 and 3 open before either request is served.
        let clients = Clients::default();
        let meter = StreamMeter::default();
        meter.opened(1);
        meter.read(1, 40, true, false);
        meter.opened(3);
        meter.read(3, 30, true, false);
        meter.read(0, 17, false, false);

        // Act: bound in order, then their answers interleave.
        meter.bind_next(clients.charge(&client("a"), Some(Transport::Sse)));
        meter.bind_next(clients.charge(&client("b"), Some(Transport::Poll)));
        meter.wrote(3, 100, false, false);
        meter.wrote(1, 50, false, false);
        meter.wrote(3, 9, true, false);

        // Assert
        let a = clients.view(&client("a")).sse;
        assert_eq!((a.requests, a.bytes_in, a.bytes_out), (1, 40, 50));
        let b = clients.view(&client("b")).poll;
        assert_eq!((b.requests, b.bytes_in, b.bytes_out), (1, 30, 109));
        assert_eq!(meter.tracked(), 1, "stream 3 ended both ways");
    }

    #[test]
    fn a_stream_the_server_resets_before_serving_it_gives_up_its_place() {
        let clients = Clients::default();
        let meter = StreamMeter::default();
        meter.opened(1);
        meter.opened(3);
        meter.wrote(1, 13, false, true);
        meter.read(3, 25, true, false);
        meter.bind_next(clients.charge(&client("a"), None));
        let a = clients.view(&client("a")).other;
        assert_eq!((a.requests, a.bytes_in), (1, 25));
        assert_eq!(meter.tracked(), 1);
    }

    #[test]
    fn a_connection_tracks_a_bounded_number_of_streams() {
        let meter = StreamMeter::default();
        for id in (1..).step_by(2).take(MAX_TRACKED_STREAMS + 1) {
            meter.opened(id);
        }
        assert_eq!(meter.tracked(), 0, "past the bound nothing is tracked");
    }
}
