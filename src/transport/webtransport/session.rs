//! One WebTransport session, from its CONNECT request to its close.
//!
//! [`serve`] waits for the request, runs the same admission as a WebSocket
//! upgrade (path, `:authority` as the `Host`, `origin`, the per-address
//! limits, the query, the room and the session), accepts the session and
//! opens the server's one unidirectional stream. A refusal is an `error`
//! line on that stream, then a close with [`CLOSE_POLICY`]. An admitted
//! session is one task: a single `select!` over the log, the client's
//! messages (from its streams and datagrams), the write of what is queued,
//! the stall timer and shutdown, which ends with one close and a reason.
//!
//! Outbound, the queue is one buffer of newline-delimited JSON, fed from
//! the reader only while it is under [`QUEUE_BYTES`] (so a client that
//! stops reading stops being fed, and resumes from its cursor), with QUIC's
//! send window ([`super::SEND_WINDOW`]) behind it. A session whose client
//! takes nothing of it for `--slow-client-timeout` is closed
//! ([`CLOSE_POLICY`], `too_slow`).
//!
//! Inbound, at most `--wt-streams` client streams are read at once (one
//! past it is stopped with [`CLOSE_POLICY`]), each by a small task that cuts it into
//! lines of at most [`MAX_BODY_BYTES`] and hands them over a bounded
//! channel, so a busy session holds its clients back through QUIC's flow
//! control instead of buffering. A longer line, or a datagram over
//! `--wt-datagram-bytes`, closes the session ([`CLOSE_TOO_LARGE`]).
//!
//! `--delay-ms` delays TCP below HTTP ([`crate::net::delay`]), which QUIC
//! does not pass through, so a session holds the delay itself: a log event
//! goes to the client that long after its append, and a client's message is
//! acted on that long after it arrives (at most [`HELD_IN_BYTES`] of them
//! held at once; past that the session stops reading, as a full relay
//! does). Its controls (`hello`, `welcome`, errors) are not held.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Bytes, BytesMut};
use bytes::Buf as _;
use serde::Deserialize;
use tokio::io::AsyncWrite as _;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use wtransport::endpoint::{IncomingSession, SessionRequest};
use wtransport::error::ConnectionError;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::{
    Handshake, CLOSE_LEFT, CLOSE_POLICY, CLOSE_SHUTDOWN, CLOSE_TOO_LARGE, HANDSHAKE_TIMEOUT,
};
use crate::core::error::ApiError;
use crate::core::log::{now_millis, EventBody, Reader};
use crate::core::protocol::{self, ClientMessage, Control, MAX_BODY_BYTES};
use crate::core::room::{Attachment, Room};
use crate::http::admission::{check_host_of, check_origin_of, direct_client_ip};
use crate::http::api::ReadQuery;
use crate::http::state::AppState;
use crate::net::limits::Permit;
use crate::net::traffic::{Charge, ClientId};
use crate::transport::{Opened, Transport};

/// The soft limit of a session's outbound queue, in bytes: log events are
/// queued only below it. Controls may take it to twice that; a session
/// that would pass that is closed as too slow.
pub const QUEUE_BYTES: usize = 256 * 1024;

/// The session path.
pub const PATH: &str = "/wt";

/// Lines from the client's streams waiting for the session task, per
/// session. Past it, the stream readers wait, and QUIC holds the client.
const INBOUND_LINES: usize = 16;
/// Under `--delay-ms`, the most bytes of a session's client messages held
/// for their delay at once.
pub const HELD_IN_BYTES: usize = 256 * 1024;

/// How much of a client stream is read at once, in bytes.
const READ_CHUNK: usize = 4 * 1024;

/// How long a closing session may take to deliver its last lines before
/// its connection is closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How often a session's QUIC byte counts are charged to its client.
const CHARGE_EVERY: Duration = Duration::from_secs(1);

/// The options a session's query adds to the read query every transport
/// takes.
#[derive(Debug, Default, Deserialize)]
struct SessionOptions {
    /// `datagrams` to get cursor moves as datagrams; anything else (or
    /// nothing) keeps them on the stream.
    cursors: Option<String>,
    /// The client whose tally the session's bytes are charged to.
    client: Option<String>,
}

/// How a session ends: a close code and its reason (a machine code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Close {
    code: u32,
    reason: &'static str,
}

/// Why the session task stops.
enum Stop {
    /// Close with this code, after what is queued has been delivered.
    Close(Close),
    /// Close at once: the client is not taking what is queued.
    Abort(Close),
    /// The connection is gone; nothing can be sent.
    Gone,
}

const TOO_SLOW: Close = Close {
    code: CLOSE_POLICY,
    reason: "too_slow",
};

const TOO_LARGE: Close = Close {
    code: CLOSE_TOO_LARGE,
    reason: "too_large",
};

/// A refusal of a session: the `error` line it gets, and its close.
struct Refusal {
    code: &'static str,
    error: String,
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Self {
        Refusal {
            code: err.code(),
            error: err.to_string(),
        }
    }
}

/// What an admitted session brings.
struct Admitted {
    permit: Permit,
    ip: IpAddr,
    query: ReadQuery,
    datagrams: bool,
    room: Room,
    attached: Option<Attachment>,
}

/// Serves one QUIC connection: its handshake (counted by `handshake`
/// until the CONNECT request arrives), its admission, its session.
pub async fn serve(state: web::Data<AppState>, incoming: IncomingSession, handshake: Handshake) {
    let request = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(request)) => request,
        Ok(Err(err)) => {
            tracing::debug!(%err, "a QUIC connection failed before its session request");
            return;
        }
        Err(_) => {
            tracing::debug!("a QUIC connection sent no session request in time");
            return;
        }
    };
    drop(handshake);
    let (path, query) = split_path(request.path());
    let options = web::Query::<SessionOptions>::from_query(query)
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let charge = match options.client.as_deref().and_then(ClientId::parse) {
        Some(client) => state.clients.charge(&client, Some(Transport::Wt)),
        None => state.clients.charge_node(Some(Transport::Wt)),
    };
    charge.add_request();
    let admitted = admit(&state, &request, path, query, &options).await;
    let connection = match request.accept().await {
        Ok(connection) => connection,
        Err(err) => {
            tracing::debug!(%err, "could not accept a WebTransport session");
            return;
        }
    };
    let mut meter = Meter::new(&connection, charge);
    // The handshake's bytes are charged at once.
    meter.charge();
    let stream = match open_stream(&connection).await {
        Some(stream) => stream,
        None => {
            meter.charge();
            return;
        }
    };
    match admitted {
        Err(refusal) => {
            refuse(&connection, stream, refusal).await;
            meter.charge();
        }
        Ok(admitted) => {
            let session = Session::new(state, connection, stream, admitted, meter);
            session.run().await;
        }
    }
}

/// `:path` split into the path and its query.
fn split_path(full: &str) -> (&str, &str) {
    full.split_once('?').unwrap_or((full, ""))
}

/// The checks a session request passes, in the order an upgrade passes
/// them: its `:authority` (as the `Host`), its `origin`, its path, a place
/// under the connection limits, its query, and its room and session.
async fn admit(
    state: &AppState,
    request: &SessionRequest,
    path: &str,
    query: &str,
    options: &SessionOptions,
) -> Result<Admitted, Refusal> {
    let authority = request.authority();
    check_host_of(authority, &state.config).map_err(|refused| Refusal {
        code: refused.code(),
        error: refused.to_string(),
    })?;
    if let Some(origin) = request.origin() {
        check_origin_of(origin, Some(authority), &state.config)?;
    }
    if path != PATH {
        return Err(Refusal {
            code: "not_found",
            error: format!("no WebTransport endpoint at {path}; sessions open at {PATH}"),
        });
    }
    let ip = direct_client_ip(request.remote_address());
    let permit = state.limit.admit(ip)?;
    let query = ReadQuery::parse(query)?;
    let Opened { room, attached } = super::super::open(state, Transport::Wt, &query, ip).await?;
    Ok(Admitted {
        permit,
        ip,
        datagrams: options.cursors.as_deref() == Some("datagrams"),
        query,
        room,
        attached,
    })
}

/// Opens the server's stream; `None` if the connection is already gone.
async fn open_stream(connection: &Connection) -> Option<SendStream> {
    let opening = connection.open_uni().await.ok()?;
    opening.await.ok()
}

/// Answers a refused session: its `error` line, delivered, then the close.
async fn refuse(connection: &Connection, mut stream: SendStream, refusal: Refusal) {
    tracing::debug!(code = refusal.code, "refused a WebTransport session");
    let line = line(&Control::Error {
        code: refusal.code,
        error: refusal.error,
        id: None,
        to: None,
    });
    let deliver = async {
        stream.write_all(&line).await.ok()?;
        stream.finish().await.ok()
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, deliver).await;
    connection.close(VarInt::from_u32(CLOSE_POLICY), refusal.code.as_bytes());
}

/// A control message as one line of JSON.
fn line(control: &Control) -> Vec<u8> {
    let mut json = control.to_json().into_bytes();
    json.push(b'\n');
    json
}

/// What arrives from the client's streams.
enum Inbound {
    /// One line, without its newline.
    Line(Bytes),
    /// A line over [`MAX_BODY_BYTES`].
    TooLarge,
}

/// Charges a session's QUIC bytes (UDP payloads, handshake and
/// retransmissions included) to its client, as they grow.
struct Meter {
    quic: wtransport::quinn::Connection,
    charge: Charge,
    charged_in: u64,
    charged_out: u64,
}

impl Meter {
    fn new(connection: &Connection, charge: Charge) -> Meter {
        Meter {
            quic: connection.quic_connection().clone(),
            charge,
            charged_in: 0,
            charged_out: 0,
        }
    }

    /// Charges what was sent and received since the last charge.
    fn charge(&mut self) {
        let stats = self.quic.stats();
        self.charge.add_in(stats.udp_rx.bytes - self.charged_in);
        self.charge.add_out(stats.udp_tx.bytes - self.charged_out);
        self.charged_in = stats.udp_rx.bytes;
        self.charged_out = stats.udp_tx.bytes;
    }
}

/// The server's stream and what is queued for it.
struct Outbound {
    stream: SendStream,
    /// Lines not yet taken by QUIC.
    queued: BytesMut,
    /// Since when the client has taken nothing of a non-empty queue.
    stalled_since: Option<Instant>,
}

impl Outbound {
    fn has_room(&self) -> bool {
        self.queued.len() < QUEUE_BYTES
    }

    fn room(&self) -> usize {
        QUEUE_BYTES.saturating_sub(self.queued.len())
    }

    /// Queues one line of JSON.
    fn push_line(&mut self, json: &[u8]) {
        if self.queued.is_empty() {
            self.stalled_since = Some(Instant::now());
        }
        self.queued.extend_from_slice(json);
        self.queued.extend_from_slice(b"\n");
    }

    /// Writes what QUIC takes now, at least one byte; an error means the
    /// stream or the connection is gone.
    async fn write_some(&mut self) -> io::Result<()> {
        let Outbound { stream, queued, .. } = self;
        let written =
            std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, queued)).await?;
        self.queued.advance(written);
        self.stalled_since = (!self.queued.is_empty()).then(Instant::now);
        if self.queued.is_empty() {
            // An emptied burst's buffer is given back.
            self.queued = BytesMut::new();
        }
        Ok(())
    }
}

struct Session {
    state: web::Data<AppState>,
    connection: Connection,
    reader: Reader,
    room: Room,
    attached: Option<Attachment>,
    ip: IpAddr,
    /// Whether cursor moves go as datagrams.
    datagrams: bool,
    out: Outbound,
    /// Lines from the client's streams.
    lines: mpsc::Receiver<Inbound>,
    /// Given to each client stream's reader.
    lines_in: mpsc::Sender<Inbound>,
    /// The client's streams being read now, against `--wt-streams`.
    streams: Arc<AtomicUsize>,
    meter: Meter,
    /// `--delay-ms`, which the session holds events and messages for.
    delay: Option<Duration>,
    /// Under a delay, when the first event held back is due.
    next_due: Option<Instant>,
    /// Under a delay, the client's messages not yet due, oldest first.
    held_in: VecDeque<(Instant, Bytes)>,
    /// Their bytes, against [`HELD_IN_BYTES`].
    held_in_bytes: usize,
    /// Bytes of this session's queue counted in the stats now.
    reported_queued: usize,
    /// This session's place under `--max-connections`.
    _permit: Permit,
}

impl Session {
    fn new(
        state: web::Data<AppState>,
        connection: Connection,
        stream: SendStream,
        admitted: Admitted,
        meter: Meter,
    ) -> Session {
        let (lines_in, lines) = mpsc::channel(INBOUND_LINES);
        Session {
            reader: admitted.room.reader(admitted.query.cursor()),
            room: admitted.room,
            attached: admitted.attached,
            ip: admitted.ip,
            datagrams: admitted.datagrams,
            out: Outbound {
                stream,
                queued: BytesMut::new(),
                stalled_since: None,
            },
            lines,
            lines_in,
            streams: Arc::default(),
            meter,
            delay: state.config.delay(),
            next_due: None,
            held_in: VecDeque::new(),
            held_in_bytes: 0,
            reported_queued: 0,
            _permit: admitted.permit,
            state,
            connection,
        }
    }

    async fn run(mut self) {
        let _open = self.state.stats.open(Transport::Wt);
        let stop = self.serve().await;
        match stop {
            Stop::Gone => {}
            Stop::Abort(close) => self.close(close),
            Stop::Close(close) => {
                let out = &mut self.out;
                let deliver = async {
                    while !out.queued.is_empty() {
                        out.write_some().await.ok()?;
                    }
                    out.stream.finish().await.ok()
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, deliver).await;
                self.close(close);
            }
        }
        self.report_queued();
        self.meter.charge();
    }

    fn close(&self, close: Close) {
        self.connection
            .close(VarInt::from_u32(close.code), close.reason.as_bytes());
    }

    /// Runs until the session should close.
    async fn serve(&mut self) -> Stop {
        if let Err(stop) = self.send_control(&Control::hello(&self.reader)) {
            return stop;
        }
        let timeout = self.state.config.slow_client_timeout();
        let max_datagram = self.state.config.wt_datagram_bytes as usize;
        let max_streams = self.state.config.wt_streams as usize;
        let mut charging = tokio::time::interval(CHARGE_EVERY);
        let shutdown = self.state.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            if let Err(stop) = self.fill() {
                return stop;
            }
            self.report_queued();
            let has_room = self.out.has_room();
            let unsent = !self.out.queued.is_empty();
            let stall_deadline = self
                .out
                .stalled_since
                .map_or_else(Instant::now, |since| since + timeout);
            let events_due = self.next_due;
            let held_due = self.held_in.front().map(|(due, _)| *due);
            let reading = self.held_in_bytes < HELD_IN_BYTES;
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    return Stop::Close(Close { code: CLOSE_SHUTDOWN, reason: "shutting_down" });
                }
                written = self.out.write_some(), if unsent => {
                    if written.is_err() {
                        return Stop::Gone;
                    }
                }
                _ = sleep_until(stall_deadline), if unsent => {
                    tracing::info!(cursor = self.reader.cursor(), "closing a WebTransport session that stopped reading");
                    return Stop::Abort(TOO_SLOW);
                }
                _ = sleep_until(held_due.unwrap_or_else(Instant::now)), if held_due.is_some() => {
                    if let Err(stop) = self.act_on_due().await {
                        return stop;
                    }
                }
                inbound = self.lines.recv(), if reading => {
                    // The session holds a sender, so the channel never ends.
                    let next = match inbound {
                        Some(Inbound::Line(line)) => self.on_arrival(line).await,
                        Some(Inbound::TooLarge) => Err(Stop::Abort(TOO_LARGE)),
                        None => Ok(()),
                    };
                    if let Err(stop) = next {
                        return stop;
                    }
                }
                datagram = self.connection.receive_datagram(), if reading => match datagram {
                    Ok(datagram) if datagram.payload().len() > max_datagram => {
                        return Stop::Abort(TOO_LARGE);
                    }
                    Ok(datagram) => {
                        if let Err(stop) = self.on_arrival(datagram.payload()).await {
                            return stop;
                        }
                    }
                    Err(err) => return self.on_gone(err).await,
                },
                stream = self.connection.accept_uni() => match stream {
                    Ok(stream) => match StreamCount::take(&self.streams, max_streams) {
                        Some(counted) => {
                            tokio::spawn(read_lines(stream, self.lines_in.clone(), counted));
                        }
                        None => stream.stop(VarInt::from_u32(CLOSE_POLICY)),
                    },
                    Err(err) => return self.on_gone(err).await,
                },
                _ = self.reader.newer(), if has_room && events_due.is_none() => {}
                _ = sleep_until(events_due.unwrap_or_else(Instant::now)), if has_room && events_due.is_some() => {}
                _ = charging.tick() => self.meter.charge(),
            }
        }
    }

    /// The connection ended: a client that closed its session cleanly
    /// ends its user's session at once, unless another connection of it is
    /// still open; any other end leaves it to time out.
    async fn on_gone(&mut self, err: ConnectionError) -> Stop {
        if matches!(err, ConnectionError::ApplicationClosed(_)) {
            if let Some(attached) = self.attached.take() {
                self.room.close(attached).await;
            }
        }
        Stop::Gone
    }

    /// Updates the stats' count of queued bytes.
    fn report_queued(&mut self) {
        let queued = self.out.queued.len();
        if queued != self.reported_queued {
            let delta = queued as i64 - self.reported_queued as i64;
            self.state.stats.queued(Transport::Wt, delta);
            self.reported_queued = queued;
        }
    }

    /// Queues the events after the cursor while the queue has room; cursor
    /// moves go as datagrams instead when the client asked for them.
    fn fill(&mut self) -> Result<(), Stop> {
        let (mut events, mut bytes) = (0, 0);
        let mut result = Ok(());
        // Under a delay, the Unix millisecond the first event held back is due.
        let mut held: Option<u64> = None;
        // The clock is read only under a delay, once per fill.
        let delayed = self
            .delay
            .map(|delay| (delay.as_millis() as u64, now_millis()));
        while self.out.has_room() {
            let read = match delayed {
                None => self.reader.next(self.out.room()),
                Some((delay_ms, now)) => self.reader.next_while(self.out.room(), |event| {
                    let due = event.ts + delay_ms;
                    if due > now {
                        held.get_or_insert(due);
                    }
                    due <= now
                }),
            };
            if let Some(cursor) = read.gap {
                if let Err(stop) = self.send_control(&Control::gap(&self.reader, cursor)) {
                    result = Err(stop);
                    break;
                }
            }
            for event in &read.events {
                events += 1;
                bytes += event.json().len();
                let json = event.json().as_bytes();
                let as_datagram =
                    self.datagrams && matches!(event.body, EventBody::Mousemove { .. });
                // A datagram that cannot go (too big for the path, or
                // datagrams refused) goes on the stream instead.
                if !(as_datagram && self.connection.send_datagram(json).is_ok()) {
                    self.out.push_line(json);
                }
            }
            if !read.more || held.is_some() {
                break;
            }
        }
        if events > 0 {
            self.state.counters(Transport::Wt).sent(events, bytes);
        }
        self.next_due = held
            .zip(delayed)
            .map(|(due, (_, now))| Instant::now() + Duration::from_millis(due.saturating_sub(now)));
        result
    }

    /// A client message that has arrived: acted on now, or under a delay
    /// held until it is due.
    async fn on_arrival(&mut self, message: Bytes) -> Result<(), Stop> {
        match self.delay {
            None => self.on_message(&message).await,
            Some(delay) => {
                self.held_in_bytes += message.len();
                self.held_in.push_back((Instant::now() + delay, message));
                Ok(())
            }
        }
    }

    /// Acts on the held client messages that are due, in their order.
    async fn act_on_due(&mut self) -> Result<(), Stop> {
        let now = Instant::now();
        while self.held_in.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, message)) = self.held_in.pop_front() {
                self.held_in_bytes -= message.len();
                self.on_message(&message).await?;
            }
        }
        Ok(())
    }

    /// Queues a control message; a queue at twice its soft limit means the
    /// client is not reading.
    fn send_control(&mut self, control: &Control) -> Result<(), Stop> {
        let json = control.to_json();
        if self.out.queued.len() + json.len() > 2 * QUEUE_BYTES {
            return Err(Stop::Abort(TOO_SLOW));
        }
        self.state.counters(Transport::Wt).sent(0, json.len());
        self.out.push_line(json.as_bytes());
        Ok(())
    }

    fn reply_error(&mut self, err: &ApiError, id: Option<String>) -> Result<(), Stop> {
        self.send_control(&Control::Error {
            code: err.code(),
            error: err.to_string(),
            id,
            to: None,
        })
    }

    /// Acts on one client message, as a WebSocket frame is acted on.
    async fn on_message(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let message = match protocol::parse_client_message(bytes) {
            Ok(message) => message,
            Err(err) => {
                let id = crate::transport::ws::refused_message_id(bytes);
                return self.reply_error(&err, id);
            }
        };
        let room = self.room.clone();
        match (message, &self.attached) {
            (ClientMessage::Register(registration), None) => {
                let welcome = match room.register_from(registration, Some(self.ip)).await {
                    Ok(welcome) => welcome,
                    Err(err) => return self.reply_error(&err, None),
                };
                match room.attach(welcome.session) {
                    Ok(attached) => {
                        self.attached = Some(attached);
                        // The welcome describes the room up to its cursor.
                        self.reader.advance_to(welcome.cursor);
                        self.send_control(&Control::Welcome(welcome))
                    }
                    Err(err) => self.reply_error(&err, None),
                }
            }
            (ClientMessage::Leave, Some(attached)) => {
                if let Err(err) = room.leave(attached.session()).await {
                    if matches!(err, ApiError::StoreUnavailable) {
                        // Still live: the client may leave again.
                        return self.reply_error(&err, None);
                    }
                }
                self.attached = None;
                Err(Stop::Close(Close {
                    code: CLOSE_LEFT,
                    reason: "left",
                }))
            }
            (ClientMessage::Signal(_), _) => self.reply_error(
                &ApiError::BadRequest(
                    "signals go over a WebSocket opened with signals=true".into(),
                ),
                None,
            ),
            (_, None) => self.reply_error(&ApiError::UnknownSession, None),
            (message, Some(attached)) => {
                let id = match &message {
                    ClientMessage::Message { id, .. } => id.clone(),
                    _ => None,
                };
                match room.send(attached.session(), message).await {
                    Ok(_) => Ok(()),
                    Err(err) => self.reply_error(&err, id),
                }
            }
        }
    }
}

/// One client stream counted among its session's until dropped.
struct StreamCount(Arc<AtomicUsize>);

impl StreamCount {
    /// Counts one more stream, unless `max` are being read already.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<StreamCount> {
        // Only the session task takes; readers only give back.
        if count.load(Ordering::Acquire) >= max {
            return None;
        }
        count.fetch_add(1, Ordering::AcqRel);
        Some(StreamCount(count.clone()))
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one client stream as lines of JSON and hands them to the session,
/// until the stream ends, a line is too long, or the session is gone. A
/// last line without its newline counts when the stream finishes.
async fn read_lines(mut stream: RecvStream, lines: mpsc::Sender<Inbound>, _counted: StreamCount) {
    let mut buf = BytesMut::new();
    let mut chunk = vec![0; READ_CHUNK];
    loop {
        while let Some(at) = buf.iter().position(|&b| b == b'\n') {
            let mut line = buf.split_to(at + 1).freeze();
            line.truncate(at);
            if line.last() == Some(&b'\r') {
                line.truncate(at - 1);
            }
            if !line.iter().all(u8::is_ascii_whitespace)
                && lines.send(Inbound::Line(line)).await.is_err()
            {
                return;
            }
        }
        if buf.len() > MAX_BODY_BYTES {
            let _ = lines.send(Inbound::TooLarge).await;
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(Some(read)) => buf.extend_from_slice(&chunk[..read]),
            Ok(None) => {
                let last = if buf.len() > MAX_BODY_BYTES {
                    Inbound::TooLarge
                } else if buf.iter().all(u8::is_ascii_whitespace) {
                    return;
                } else {
                    Inbound::Line(buf.freeze())
                };
                let _ = lines.send(last).await;
                return;
            }
            Err(_) => return,
        }
    }
}
