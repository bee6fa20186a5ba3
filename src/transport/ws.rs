//! WebSocket: `GET /ws` upgrades to a persistent two-way connection, one JSON
//! text frame per message in each direction.
//!
//! An upgrade request never reaches actix-web's router: actix-http hands the
//! connection to [`upgrade`], which checks the request, answers the
//! handshake, and gives the TCP stream to one task for the socket's whole
//! life. That task runs a single `select!` over the client's frames, new log
//! events, the ping timer and shutdown; it writes frames to the socket itself
//! (see [`super::ws_stream`]) and closes once, with a reason. A `GET /ws`
//! without an upgrade goes through the router to [`websocket`], which runs
//! the same checks and then refuses it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::ws::{CloseCode, CloseReason, Message};
use actix_http::{h1, ws::handshake, ConnectionType, HttpMessage as _, Request, Response};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError as _};
use futures_util::future::BoxFuture;
use futures_util::SinkExt as _;
use tokio::net::TcpStream;
use tokio::time::{interval_at, Instant};

use super::ws_stream::{Inbound, Pushed, ReadError, Received, WsStream};
use super::{AppState, ReadQuery};
use crate::config::{Config, WS_MISSED_PONGS, WS_PING_INTERVAL};
use crate::error::ApiError;
use crate::log::{EventLog, Seq};
use crate::middleware::{self, Permit};
use crate::presence::ConnectionGuard;
use crate::protocol::{self, ClientMessage, Control};
use crate::stats::Transport;

/// `GET /ws` without an upgrade: the same checks as [`upgrade`], then a
/// `bad_request`, since there is no socket to serve.
pub async fn websocket(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let _attached = admit(&state, req.headers(), req.query_string())?;
    Err(not_an_upgrade())
}

/// Serves every request that asks for `Connection: upgrade`, with the
/// connection it came on. Only `GET /ws` is upgraded; anything else gets the
/// JSON error the router would have given, and the connection closes.
pub async fn upgrade(
    state: web::Data<AppState>,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error> {
    if let Err(err) = try_upgrade(state, req, framed).await {
        // The client went away during the handshake; there is no one to tell.
        tracing::debug!(%err, "websocket handshake failed");
    }
    Ok(())
}

async fn try_upgrade(
    state: web::Data<AppState>,
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> io::Result<()> {
    // A socket counts against the limit for as long as it is open.
    let Some(permit) = state.limit.acquire() else {
        return refuse(framed, middleware::at_capacity()).await;
    };
    if req.path() != "/ws" {
        return refuse(
            framed,
            ApiError::NotFound("this path".into()).error_response(),
        )
        .await;
    }
    if req.method() != Method::GET {
        return refuse(framed, crate::method_not_allowed()).await;
    }
    let (query, attached) = match admit(&state, req.headers(), req.uri().query().unwrap_or("")) {
        Ok(admitted) => admitted,
        Err(err) => return refuse(framed, err.error_response()).await,
    };
    let response = match handshake(req.head()) {
        Ok(mut accepted) => accepted.finish().drop_body(),
        Err(_) => return refuse(framed, not_an_upgrade().error_response()).await,
    };
    framed
        .send(h1::Message::Item((response, BodySize::None)))
        .await?;
    let parts = framed.into_parts();
    let stream = WsStream::new(parts.io, parts.read_buf, state.stats.clone());
    let socket = Socket {
        cursor: query.since,
        epoch: query.epoch().map(str::to_owned),
        attached,
        stream,
        client_closed: false,
        state,
        _permit: permit,
    };
    actix_web::rt::spawn(socket.run());
    Ok(())
}

/// The checks every `/ws` request passes, in the order of the contract:
/// the query string, the origin, then the session it attaches to.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    query: &str,
) -> Result<(ReadQuery, Option<ConnectionGuard>), ApiError> {
    let query = web::Query::<ReadQuery>::from_query(query)
        .map_err(|err| ApiError::BadRequest(format!("bad query string: {err}")))?
        .into_inner();
    check_origin(headers, &state.config)?;
    state.counters(Transport::Ws).request();
    let attached = query
        .session
        .map(|s| state.room.presence().connect(s))
        .transpose()?;
    Ok((query, attached))
}

fn not_an_upgrade() -> ApiError {
    ApiError::BadRequest("GET /ws expects a WebSocket upgrade".into())
}

/// Answers an upgrade request with an ordinary response, then closes.
async fn refuse(
    mut framed: Framed<TcpStream, h1::Codec>,
    response: HttpResponse,
) -> io::Result<()> {
    let (head, body) = response.into_parts();
    // Error bodies are small JSON in memory; reading one cannot fail.
    let body = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let mut head: Response<()> = head.into();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = BodySize::Sized(body.len() as u64);
    framed.feed(h1::Message::Item((head, size))).await?;
    framed.feed(h1::Message::Chunk(Some(body))).await?;
    framed.send(h1::Message::Chunk(None)).await
}

/// Refuses an upgrade from a page on another origin unless it is allowed.
/// Clients that send no Origin (not browsers) are not affected.
fn check_origin(headers: &HeaderMap, config: &Config) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| ApiError::ForbiddenOrigin("(not text)".into()))?;
    if config.origin_allowed(origin) {
        return Ok(());
    }
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
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
    stream: WsStream,
    /// Whether the client sent its close frame.
    client_closed: bool,
    /// This socket's place under `--max-connections`.
    _permit: Permit,
}

impl Socket {
    async fn run(mut self) {
        let _open = self.state.stats.open(Transport::Ws);
        let reason = match self.serve().await {
            Stop::Gone => return,
            Stop::Close(reason) => reason,
        };
        let slow = is_slow_client(&reason);
        self.stream.push_unchecked(Message::Close(reason));
        // A client that stopped reading will not read a close frame either.
        if slow {
            let _ = self.stream.flush();
            self.stream.abort();
            return;
        }
        // The server closes the TCP connection first (RFC 6455, 7.1.1): at
        // once when the client started the close, after the client's answer
        // when the server did.
        let closing = async {
            if self.client_closed {
                self.stream.drain().await;
            } else {
                self.stream.linger().await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
    }

    /// Runs until the socket should close.
    async fn serve(&mut self) -> Stop {
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
        // When the outbound buffer last filled up, while it stays full.
        let mut stalled_since: Option<Instant> = None;
        // Registered once, not on every turn of the loop.
        let shutdown = self.state.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        // Resolves once the log has events after the cursor; kept across
        // turns of the loop until it fires.
        let mut newer: Option<BoxFuture<'static, ()>> = None;
        loop {
            if let Err(stop) = self.fill() {
                return stop;
            }
            if self.stream.flush().is_err() {
                return Stop::Gone;
            }
            // The stall clock runs from when the buffer filled up, and starts
            // again every time the client drains some of it.
            let has_room = self.stream.has_room();
            if has_room {
                stalled_since = None;
                if newer.is_none() {
                    newer = Some(log.wait_after(self.cursor));
                }
            } else {
                stalled_since.get_or_insert_with(Instant::now);
            }
            let give_up_at = stalled_since.map(|since| since + slow_limit);
            let unsent = self.stream.queued() > 0;
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    return Stop::Close(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("server shutting down".into()),
                    }));
                }
                readable = self.stream.readable() => {
                    if readable.is_err() {
                        return Stop::Gone;
                    }
                    match self.stream.receive() {
                        Received::Gone => return Stop::Gone,
                        Received::Nothing => {}
                        Received::Data => {
                            if let Next::Close(reason) = self.on_received(&mut missed_pongs).await {
                                return Stop::Close(reason);
                            }
                        }
                    }
                }
                _ = wait_or_never(newer.as_mut()), if has_room => {
                    newer = None;
                }
                writable = self.stream.writable(), if unsent => {
                    if writable.is_err() {
                        return Stop::Gone;
                    }
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

    /// Handles every whole message that has arrived.
    async fn on_received(&mut self, missed_pongs: &mut u32) -> Next {
        loop {
            let message = match self.stream.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Next::Continue,
                Err(err) => {
                    tracing::debug!(%err, "websocket protocol error");
                    return Next::Close(Some(protocol_close(&err)));
                }
            };
            let next = match message {
                Inbound::Text(text) => self.on_text(&text).await,
                Inbound::Binary(_) => {
                    let err = ApiError::BadRequest("send JSON in text frames".into());
                    self.reply(&Control::from(&err))
                }
                Inbound::Ping(payload) => self.push(Message::Pong(payload)),
                Inbound::Pong(_) => {
                    *missed_pongs = 0;
                    Next::Continue
                }
                Inbound::Close => {
                    self.client_closed = true;
                    // A clean close ends the session at once.
                    if let Some(guard) = self.attached.take() {
                        self.state.room.end(guard.session()).await;
                    }
                    Next::Close(None)
                }
            };
            if let Next::Close(reason) = next {
                return Next::Close(reason);
            }
        }
    }

    /// Queues the events after the cursor while the outbound buffer has room.
    fn fill(&mut self) -> Result<(), Stop> {
        let state = self.state.clone();
        // Counted once per fill, not per event: the counters are shared by
        // every socket, and a busy fill queues dozens of events.
        let (mut events, mut bytes) = (0, 0);
        let result = self.fill_counting(state.log(), &mut events, &mut bytes);
        if events > 0 {
            state.counters(Transport::Ws).sent(events, bytes);
        }
        result
    }

    fn fill_counting(
        &mut self,
        log: &Arc<dyn EventLog>,
        events: &mut usize,
        bytes: &mut usize,
    ) -> Result<(), Stop> {
        while self.stream.has_room() {
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
                if !self.stream.has_room() {
                    // The rest is read again from the cursor once there is room.
                    return Ok(());
                }
                *events += 1;
                *bytes += event.json().len();
                self.stream
                    .push_unchecked(Message::Text(event.json_shared()));
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
        match self.stream.push(Message::Text(json.into())) {
            Pushed::Queued => Ok(()),
            Pushed::Overflow => Err(Stop::Close(Some(overflow_reason()))),
        }
    }

    fn push(&mut self, message: Message) -> Next {
        match self.stream.push(message) {
            Pushed::Queued => Next::Continue,
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

async fn wait_or_never(newer: Option<&mut BoxFuture<'static, ()>>) {
    match newer {
        Some(newer) => newer.await,
        None => std::future::pending().await,
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

fn protocol_close(err: &ReadError) -> CloseReason {
    CloseReason {
        code: err.close_code(),
        description: Some(err.to_string()),
    }
}
