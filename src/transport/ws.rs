//! WebSocket: `GET /ws` upgrades to a persistent two-way connection, one JSON
//! text frame per message in each direction.
//!
//! The handler only checks the request and does the handshake; one task per
//! socket then runs a single `select!` over client frames, new log events,
//! the ping timer and shutdown, and closes the socket once, with a reason.

use actix_http::body::BodyStream;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Message};
use std::time::Duration;

use tokio::time::{interval_at, Instant};

use super::outbound::{self, Outbound, Pushed};
use super::{AppState, ReadQuery};
use crate::config::{Config, WS_MISSED_PONGS, WS_PING_INTERVAL};
use crate::error::ApiError;
use crate::log::Seq;
use crate::presence::ConnectionGuard;
use crate::protocol::{self, ClientMessage, Control, MAX_BODY_BYTES};
use crate::stats::Transport;
use crate::transport::ConnectionSocket;

/// `GET /ws[?session=S&since=N&epoch=E]`.
///
/// Without a session the socket observes, and its first frame may be a
/// `register`. With one, it attaches to that session and first receives the
/// events after `since`.
pub async fn websocket(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &state.config)?;
    state.counters(Transport::Ws).request();
    let attached = query
        .session
        .map(|s| state.room.presence().connect(s))
        .transpose()?;
    let (response, _unused, frames) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::BadRequest("GET /ws expects a WebSocket upgrade".into()))?;
    // actix-ws's own sender queues by frame count; pushlab's queue is
    // bounded in bytes, so the response gets that queue's body instead.
    let (out, outbound_body) = outbound::channel(state.stats.clone());
    let response = response
        .set_body(BodyStream::new(outbound_body))
        .map_into_boxed_body();
    let frames = frames
        .max_frame_size(MAX_BODY_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_BODY_BYTES);
    let socket = Socket {
        cursor: query.since,
        epoch: query.epoch().map(str::to_owned),
        attached,
        out,
        state,
    };
    let connection = req.conn_data::<ConnectionSocket>().copied();
    actix_web::rt::spawn(socket.run(frames, connection));
    Ok(response)
}

/// Refuses an upgrade from a page on another origin unless it is allowed.
/// Clients that send no Origin (not browsers) are not affected.
fn check_origin(req: &HttpRequest, config: &Config) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| ApiError::ForbiddenOrigin("(not text)".into()))?;
    if config.origin_allowed(origin) {
        return Ok(());
    }
    let own_host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    match (own_host, origin_host) {
        (Some(own), Some(theirs)) if own.eq_ignore_ascii_case(theirs) => Ok(()),
        _ => Err(ApiError::ForbiddenOrigin(origin.to_owned())),
    }
}

/// What the loop does after handling a client frame.
enum Next {
    Continue,
    Close(Option<CloseReason>),
}

/// Why the socket task stops.
enum Stop {
    /// Close the socket with this reason.
    Close(Option<CloseReason>),
    /// The connection is already gone; nothing can be sent.
    Gone,
}

struct Socket {
    state: web::Data<AppState>,
    /// The last seq queued on this socket.
    cursor: Seq,
    /// The client's epoch, checked on the first read only.
    epoch: Option<String>,
    /// The session this socket speaks for, once it has one.
    attached: Option<ConnectionGuard>,
    out: Outbound,
}

impl Socket {
    async fn run(
        mut self,
        mut frames: AggregatedMessageStream,
        connection: Option<ConnectionSocket>,
    ) {
        let _open = self.state.stats.open(Transport::Ws);
        let (reason, grace) = match self.serve(&mut frames).await {
            Stop::Gone => return,
            // A client that stopped reading will not read a close frame either.
            Stop::Close(reason) if is_slow_client(&reason) => (reason, Duration::ZERO),
            Stop::Close(reason) => (reason, CLOSE_GRACE),
        };
        self.out.finish(Some(Message::Close(reason)));
        if tokio::time::timeout(grace, self.out.gone()).await.is_err() {
            if let Some(connection) = connection {
                // Still connected: this task runs on the worker that owns the
                // connection, so nothing has closed it since `gone` said no.
                connection.cut();
            }
        }
    }

    /// Runs until the socket should close.
    async fn serve(&mut self, frames: &mut AggregatedMessageStream) -> Stop {
        let log = self.state.log().clone();
        let hello = Control::Hello {
            epoch: log.epoch().clone(),
            cursor: self.cursor,
        };
        if let Err(stop) = self.send_control(&hello) {
            return stop;
        }
        let slow_limit = self.state.config.slow_client_timeout();
        let mut ping = interval_at(Instant::now() + WS_PING_INTERVAL, WS_PING_INTERVAL);
        let mut missed_pongs = 0;
        // When the outbound queue last filled up, while it stays full.
        let mut stalled_since: Option<Instant> = None;
        loop {
            if let Err(stop) = self.fill() {
                return stop;
            }
            // The stall clock runs from when the queue filled up, and starts
            // again every time the client drains some of it.
            let has_room = self.out.has_room();
            if has_room {
                stalled_since = None;
            } else {
                stalled_since.get_or_insert_with(Instant::now);
            }
            let give_up_at = stalled_since.map(|since| since + slow_limit);
            tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => {
                    return Stop::Close(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("server shutting down".into()),
                    }));
                }
                frame = frames.recv() => {
                    let next = match frame {
                        None => return Stop::Gone,
                        Some(Err(err)) => {
                            tracing::debug!(%err, "websocket protocol error");
                            Next::Close(Some(protocol_close(&err)))
                        }
                        Some(Ok(AggregatedMessage::Text(text))) => self.on_text(text.as_bytes()).await,
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            let err = ApiError::BadRequest("send JSON in text frames".into());
                            self.reply(&Control::from(&err))
                        }
                        Some(Ok(AggregatedMessage::Ping(payload))) => self.push(Message::Pong(payload)),
                        Some(Ok(AggregatedMessage::Pong(_))) => {
                            missed_pongs = 0;
                            Next::Continue
                        }
                        Some(Ok(AggregatedMessage::Close(_))) => {
                            // A clean close ends the session at once.
                            if let Some(guard) = self.attached.take() {
                                self.state.room.end(guard.session()).await;
                            }
                            Next::Close(None)
                        }
                    };
                    if let Next::Close(reason) = next {
                        return Stop::Close(reason);
                    }
                }
                _ = log.wait_after(self.cursor), if has_room => {}
                _ = self.out.writable(), if !has_room => {
                    if self.out.is_gone() {
                        return Stop::Gone;
                    }
                    stalled_since = None;
                }
                _ = sleep_until_or_never(give_up_at) => {
                    tracing::info!(cursor = self.cursor, "closing a websocket that stopped reading");
                    return Stop::Close(Some(CloseReason {
                        code: CloseCode::Policy,
                        description: Some("too slow: the client stopped reading".into()),
                    }));
                }
                _ = ping.tick() => {
                    if missed_pongs >= WS_MISSED_PONGS {
                        return Stop::Close(Some(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("no pong".into()),
                        }));
                    }
                    missed_pongs += 1;
                    if let Next::Close(reason) = self.push(Message::Ping(Bytes::new())) {
                        return Stop::Close(reason);
                    }
                }
            }
        }
    }

    /// Queues the events after the cursor while the outbound queue has room.
    fn fill(&mut self) -> Result<(), Stop> {
        let state = self.state.clone();
        let log = state.log();
        let counters = state.counters(Transport::Ws);
        while self.out.has_room() {
            let batch = log.read_since(self.cursor, self.epoch.take().as_deref());
            if batch.gap {
                let cursor = batch.events.first().map_or(batch.cursor, |e| e.seq - 1);
                let epoch = log.epoch().clone();
                self.send_control(&Control::Gap { epoch, cursor })?;
            }
            if batch.events.is_empty() {
                self.cursor = batch.cursor;
                return Ok(());
            }
            for event in &batch.events {
                if !self.out.has_room() {
                    // The rest is read again from the cursor once there is room.
                    return Ok(());
                }
                counters.sent(1, event.json().len());
                if self.out.push(Message::Text(event.json_shared())) == Pushed::Gone {
                    return Err(Stop::Gone);
                }
                self.cursor = event.seq;
            }
        }
        Ok(())
    }

    async fn on_text(&mut self, bytes: &[u8]) -> Next {
        let message = match protocol::parse_client_message(bytes) {
            Ok(message) => message,
            Err(err) => {
                let control = Control::Error {
                    code: err.code(),
                    error: err.to_string(),
                    id: refused_message_id(bytes),
                };
                return self.reply(&control);
            }
        };
        let room = self.state.room.clone();
        match (message, &self.attached) {
            (ClientMessage::Register(name), None) => match room.register(name).await {
                Ok(welcome) => match room.presence().connect(welcome.session) {
                    Ok(guard) => {
                        self.attached = Some(guard);
                        // The welcome's history and users describe the room
                        // up to its cursor; events resume after it.
                        self.cursor = self.cursor.max(welcome.cursor);
                        self.reply(&Control::Welcome(welcome))
                    }
                    Err(err) => self.reply(&Control::from(&err)),
                },
                Err(err) => self.reply(&Control::from(&err)),
            },
            (ClientMessage::Leave, Some(guard)) => {
                room.end(guard.session()).await;
                self.attached = None;
                Next::Close(Some(CloseReason {
                    code: CloseCode::Normal,
                    description: Some("left".into()),
                }))
            }
            (_, None) => self.reply(&Control::from(&ApiError::UnknownSession)),
            (message, Some(guard)) => {
                let id = match &message {
                    ClientMessage::Message { id, .. } => id.clone(),
                    _ => None,
                };
                match room.submit(guard.session(), message).await {
                    Ok(_) => Next::Continue,
                    Err(err) => self.reply(&Control::Error {
                        code: err.code(),
                        error: err.to_string(),
                        id,
                    }),
                }
            }
        }
    }

    /// Queues a control message in answer to a client frame.
    fn reply(&mut self, control: &Control) -> Next {
        match self.send_control(control) {
            Ok(()) => Next::Continue,
            Err(Stop::Close(reason)) => Next::Close(reason),
            Err(Stop::Gone) => Next::Close(None),
        }
    }

    fn send_control(&mut self, control: &Control) -> Result<(), Stop> {
        let json = control.to_json();
        self.state.counters(Transport::Ws).sent(0, json.len());
        match self.out.push(Message::Text(json.into())) {
            Pushed::Queued => Ok(()),
            Pushed::Gone => Err(Stop::Gone),
            Pushed::Overflow => Err(Stop::Close(Some(overflow_reason()))),
        }
    }

    fn push(&mut self, message: Message) -> Next {
        match self.out.push(message) {
            Pushed::Queued => Next::Continue,
            Pushed::Gone => Next::Close(None),
            Pushed::Overflow => Next::Close(Some(overflow_reason())),
        }
    }
}

/// How long a closing socket may take to send its close frame before its
/// connection is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

fn is_slow_client(reason: &Option<CloseReason>) -> bool {
    reason.as_ref().is_some_and(|r| {
        r.code == CloseCode::Policy
            && r.description
                .as_deref()
                .is_some_and(|d| d.starts_with("too slow") || d == "no pong")
    })
}

fn overflow_reason() -> CloseReason {
    CloseReason {
        code: CloseCode::Policy,
        description: Some("too slow: outbound queue full".into()),
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The `id` of a refused chat message, when it can still be read, so the
/// client can mark that message as failed.
fn refused_message_id(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: String,
    }
    serde_json::from_slice::<WithId>(bytes)
        .ok()
        .map(|m| m.id)
        .filter(|id| id.chars().count() <= protocol::MAX_ID_CHARS)
}

fn protocol_close(err: &actix_ws::ProtocolError) -> CloseReason {
    let code = match err {
        actix_ws::ProtocolError::Overflow => CloseCode::Size,
        _ => CloseCode::Protocol,
    };
    CloseReason {
        code,
        description: Some(err.to_string()),
    }
}
