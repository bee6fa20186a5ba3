//! WebSocket: `GET /ws` upgrades to a persistent two-way connection, one JSON
//! text frame per message in each direction.
//!
//! An upgrade request never reaches actix-web's router: actix-http hands the
//! connection to [`upgrade`], which checks the request, answers the
//! handshake, and gives the TCP stream to one task for the socket's whole
//! life. That task runs a single `select!` over the client's frames, new log
//! events, the ping timer and shutdown; it writes frames to the socket itself
//! (see [`stream`]) and closes once, with a reason. The routing
//! rules (404, 405) and the admission rules (connection limit, origin) are
//! the router's own functions, called from here; a `GET /ws` without an
//! upgrade goes through the router, which refuses it.
//!
//! A client's messages go into the log in the order they came, but the
//! socket does not wait for one to be stored before it reads the next (up to
//! 64 at once): a store that answers later, Redis or the journal, then takes
//! a busy socket's messages in groups. Refusals are answered in order, and
//! anything else the client sends (a leave, a signal) is acted on once the
//! messages before it are stored.

pub mod stream;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::IpAddr;
use std::task::Poll;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::ws::{CloseCode, CloseReason, Message};
use actix_http::{h1, ws::handshake, ConnectionType, HttpMessage as _, Request, Response};
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse, ResponseError as _};
use bytestring::ByteString;
use futures_util::{FutureExt as _, SinkExt as _};
use tokio::time::{interval_at, Instant};

use self::stream::{Inbound, Pushed, ReadError, Ready, Received, WsStream};
use super::Opened;
use super::Transport;
use crate::config::{WS_MISSED_PONGS, WS_PING_INTERVAL};
use crate::core::error::ApiError;
use crate::core::log::Reader;
use crate::core::protocol::{self, ClientMessage, Control};
use crate::core::room::{Attachment, Room, Sending};
use crate::core::signals::Inbox;
use crate::http::admission::{self, Answer};
use crate::http::api::ReadQuery;
use crate::http::endpoints::{self, Endpoint};
use crate::http::state::AppState;
use crate::net::conn::{IntoSocket, ReadySocket};
use crate::net::limits::Permit;
use crate::net::traffic::ConnectionMeter;

/// Serves every request that asks for `Connection: upgrade`, with the
/// connection it came on. Only `GET /ws` is upgraded; anything else gets the
/// JSON error the router would have given, and the connection closes.
pub async fn upgrade<C: IntoSocket>(
    state: web::Data<AppState>,
    req: Request,
    framed: Framed<C, h1::Codec>,
) -> Result<(), actix_web::Error> {
    if let Err(err) = try_upgrade(state, req, framed).await {
        // The client went away during the handshake; there is no one to tell.
        tracing::debug!(%err, "websocket handshake failed");
    }
    Ok(())
}

async fn try_upgrade<C: IntoSocket>(
    state: web::Data<AppState>,
    req: Request,
    mut framed: Framed<C, h1::Codec>,
) -> io::Result<()> {
    let meter = framed.io_ref().meter();
    let (permit, ip, query, room, attached, inbox) = match admit(&state, &req, meter).await {
        Ok(admitted) => admitted,
        Err(answer) => return refuse(framed, answer.into_response()).await,
    };
    let response = match handshake(req.head()) {
        Ok(mut accepted) => accepted.finish().drop_body(),
        Err(_) => return refuse(framed, endpoints::not_an_upgrade().error_response()).await,
    };
    framed
        .send(h1::Message::Item((response, BodySize::None)))
        .await?;
    let parts = framed.into_parts();
    // The socket keeps the connection the upgrade came on, counted as
    // before; a client that takes nothing is cut after the socket's own
    // limit rather than the HTTP one.
    let conn = parts.io.into_socket(state.config.slow_client_timeout())?;
    let stream = WsStream::new(conn, parts.read_buf, state.stats.clone());
    let socket = Socket {
        reader: room.reader(query.cursor()),
        room,
        attached,
        takes_signals: query.signals,
        inbox,
        ip,
        stream,
        client_closed: false,
        sending: VecDeque::new(),
        state,
        _permit: permit,
    };
    actix_web::rt::spawn(socket.run());
    Ok(())
}

/// What an admitted upgrade brings: its place under the limits, the
/// client's IP, its query, the session it attached to, and where that
/// session's signals arrive if the socket asked for them.
type Admitted = (
    Permit,
    IpAddr,
    ReadQuery,
    Room,
    Option<Attachment>,
    Option<Inbox>,
);

/// The checks an upgrade passes: admission's, as every routed request
/// passes them ([`admission::admit`], which charges the upgrade to `meter`),
/// then `/ws`'s own query, origin and session.
async fn admit(
    state: &AppState,
    req: &Request,
    meter: &ConnectionMeter,
) -> Result<Admitted, Answer> {
    let admitted = admission::admit(state, req.head(), Some(meter))?;
    if admitted.route? != Endpoint::Ws {
        return Err(ApiError::BadRequest("only GET /ws takes a WebSocket upgrade".into()).into());
    }
    // `/ws` is under the limits, so admission took a place, which the
    // socket holds for as long as it is open.
    let permit = admitted.permit.ok_or(ApiError::Internal)?;
    let ip = admitted.ip;
    let query = ReadQuery::parse(req.uri().query().unwrap_or(""))?;
    admission::check_origin(req.headers(), &state.config)?;
    let Opened { room, attached } = super::open(state, Transport::Ws, &query, ip).await?;
    let inbox = match (&attached, query.signals) {
        (Some(attached), true) => Some(room.listen_signals(attached.session())?),
        _ => None,
    };
    Ok((permit, ip, query, room, attached, inbox))
}

/// Answers an upgrade request with an ordinary response, then closes.
async fn refuse<C: IntoSocket>(
    mut framed: Framed<C, h1::Codec>,
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

/// What the loop does after handling a client frame.
enum Next {
    Continue,
    Stop(Stop),
}

/// Why the socket task stops.
enum Stop {
    /// Close the socket with this reason and wait for the client's answer.
    Close(Option<CloseReason>),
    /// The client stopped reading: send the close frame if the kernel takes
    /// it, then reset the connection, since it would not read an answer.
    TooSlow(CloseReason),
    /// The connection is already gone; nothing can be sent.
    Gone,
}

struct Socket<S: ReadySocket> {
    state: web::Data<AppState>,
    /// This socket's way through its room's log.
    reader: Reader,
    /// The one room this socket serves.
    room: Room,
    /// The session this socket speaks for, once it has one.
    attached: Option<Attachment>,
    /// Whether the client asked for its session's WebRTC signals.
    takes_signals: bool,
    /// Where those signals arrive, once the socket has a session.
    inbox: Option<Inbox>,
    /// The client's IP, for a registration over this socket.
    ip: IpAddr,
    stream: WsStream<S>,
    /// Whether the client sent its close frame.
    client_closed: bool,
    /// The client's messages on their way into the log, oldest first: the
    /// socket reads on while they are stored.
    sending: VecDeque<(Option<String>, Sending)>,
    /// This socket's place under `--max-connections`.
    _permit: Permit,
}

impl<S: ReadySocket> Socket<S> {
    async fn run(mut self) {
        let _open = self.state.stats.open(Transport::Ws);
        let reason = match self.serve().await {
            Stop::Gone => return,
            Stop::TooSlow(reason) => {
                self.stream.push_unchecked(Message::Close(Some(reason)));
                let _ = self.stream.flush();
                self.stream.abort();
                return;
            }
            Stop::Close(reason) => reason,
        };
        self.stream.push_unchecked(Message::Close(reason));
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
        if let Err(stop) = self.send_control(&Control::hello(&self.reader)) {
            return stop;
        }
        let mut ping = interval_at(Instant::now() + WS_PING_INTERVAL, WS_PING_INTERVAL);
        let mut missed_pongs = 0;
        // Registered once, not on every turn of the loop.
        let shutdown = self.state.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            if let Err(stop) = self.fill() {
                return stop;
            }
            if self.stream.flush().is_err() {
                return Stop::Gone;
            }
            let has_room = self.stream.has_room();
            let unsent = self.stream.queued() > 0;
            let can_read = self.sending.len() < MAX_SENDING;
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    return Stop::Close(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("server shutting down".into()),
                    }));
                }
                // Before the client's frames, so a reply to a frame comes
                // after every signal that was waiting when it arrived. Only
                // while the buffer has room: a socket that stops reading
                // leaves its signals in its bounded inbox, and their
                // senders hear `target_busy`.
                signal = next_signal(&mut self.inbox), if has_room => {
                    self.state.counters(Transport::Ws).sent(0, signal.len());
                    self.stream.push_unchecked(Message::Text(signal));
                }
                // Oldest first, so errors are answered in the order the
                // messages came.
                sent = next_sent(&mut self.sending), if !self.sending.is_empty() => {
                    if let Next::Stop(stop) = self.on_sent(sent) {
                        return stop;
                    }
                }
                // The connection, for the client's frames (not while too
                // many messages are on their way into the log: the client
                // waits, as TCP tells it to) and for taking what is queued.
                // Its send timeout is the stall rule: the clock runs while
                // the client takes nothing of what is queued, and starts
                // again whenever it takes some.
                ready = self.stream.ready(can_read), if can_read || unsent => match ready {
                    Ok(Ready::Sent) => {}
                    Ok(Ready::Readable) => match self.stream.receive() {
                        Received::Gone => return Stop::Gone,
                        Received::Nothing => {}
                        Received::Data => {
                            if let Next::Stop(stop) = self.on_received(&mut missed_pongs).await {
                                return stop;
                            }
                        }
                    },
                    Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                        tracing::info!(cursor = self.reader.cursor(), "closing a websocket that stopped reading");
                        return Stop::TooSlow(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("too slow: the client stopped reading".into()),
                        });
                    }
                    Err(_) => return Stop::Gone,
                },
                // Only while the buffer has room: a full one is not fed.
                _ = self.reader.newer(), if has_room => {}
                _ = ping.tick() => {
                    if missed_pongs >= WS_MISSED_PONGS {
                        return Stop::TooSlow(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("no pong".into()),
                        });
                    }
                    missed_pongs += 1;
                    if let Next::Stop(stop) = self.push(Message::Ping(Bytes::new())) {
                        return stop;
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
                    return Next::Stop(Stop::Close(Some(protocol_close(&err))));
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
                    // The session's messages go into the log before its leave.
                    if let Next::Stop(stop) = self.settle().await {
                        return Next::Stop(stop);
                    }
                    // A clean close ends the session at once, unless another
                    // connection of it is still open.
                    if let Some(attached) = self.attached.take() {
                        self.room.close(attached).await;
                    }
                    Next::Stop(Stop::Close(None))
                }
            };
            if let Next::Stop(stop) = next {
                return Next::Stop(stop);
            }
        }
    }

    /// Queues the events after the cursor while the outbound buffer has room.
    fn fill(&mut self) -> Result<(), Stop> {
        // Counted once per fill, not per event: the counters are shared by
        // every socket, and a busy fill queues dozens of events.
        let (mut events, mut bytes) = (0, 0);
        let mut result = Ok(());
        while self.stream.has_room() {
            let read = self.reader.next(self.stream.room());
            if let Some(cursor) = read.gap {
                if let Err(stop) = self.send_control(&Control::gap(&self.reader, cursor)) {
                    result = Err(stop);
                    break;
                }
            }
            for event in &read.events {
                events += 1;
                bytes += event.json().len();
                self.stream
                    .push_unchecked(Message::Text(event.json_shared()));
            }
            if !read.more {
                break;
            }
        }
        if events > 0 {
            self.state.counters(Transport::Ws).sent(events, bytes);
        }
        result
    }

    async fn on_text(&mut self, bytes: &[u8]) -> Next {
        let parsed = match (protocol::parse_client_message(bytes), &self.attached) {
            (
                Ok(message @ (ClientMessage::Message { .. } | ClientMessage::Mousemove { .. })),
                Some(attached),
            ) => {
                let id = match &message {
                    ClientMessage::Message { id, .. } => id.clone(),
                    _ => None,
                };
                let sending = self.room.send(attached.session(), message);
                return self.start_sending(id, sending).await;
            }
            (parsed, _) => parsed,
        };
        // Anything else is answered after the messages before it.
        if let Next::Stop(stop) = self.settle().await {
            return Next::Stop(stop);
        }
        let message = match parsed {
            Ok(message) => message,
            Err(err) => {
                let to = refused_signal_target(bytes);
                if to.is_some() {
                    self.state.stats.signals.refused();
                }
                let control = Control::Error {
                    code: err.code(),
                    error: err.to_string(),
                    id: refused_message_id(bytes),
                    to: to.flatten(),
                };
                return self.reply(&control);
            }
        };
        let room = self.room.clone();
        match (message, &self.attached) {
            (ClientMessage::Register(registration), None) => {
                match room.register_from(registration, Some(self.ip)).await {
                    Ok(welcome) => match room.attach(welcome.session) {
                        Ok(attached) => {
                            if self.takes_signals {
                                self.inbox = room.listen_signals(welcome.session).ok();
                            }
                            self.attached = Some(attached);
                            // The welcome's history and users describe the room
                            // up to its cursor; events resume after it.
                            self.reader.advance_to(welcome.cursor);
                            self.reply(&Control::Welcome(welcome))
                        }
                        Err(err) => self.reply(&Control::from(&err)),
                    },
                    Err(err) => self.reply(&Control::from(&err)),
                }
            }
            (ClientMessage::Leave, Some(attached)) => {
                if let Err(err) = room.leave(attached.session()).await {
                    if matches!(err, ApiError::StoreUnavailable) {
                        // The session is still live: the client may leave
                        // again on this socket.
                        return self.reply(&Control::from(&err));
                    }
                }
                self.attached = None;
                Next::Stop(Stop::Close(Some(CloseReason {
                    code: CloseCode::Normal,
                    description: Some("left".into()),
                })))
            }
            (ClientMessage::Signal(signal), attached) => {
                let relayed = match attached {
                    Some(attached) => room.signal(attached.session(), &signal).await,
                    None => Err(ApiError::UnknownSession),
                };
                match relayed {
                    Ok(()) => {
                        self.state.stats.signals.relayed();
                        Next::Continue
                    }
                    Err(err) => {
                        self.state.stats.signals.refused();
                        self.reply(&Control::Error {
                            code: err.code(),
                            error: err.to_string(),
                            id: None,
                            to: Some(signal.to),
                        })
                    }
                }
            }
            (_, None) => self.reply(&Control::from(&ApiError::UnknownSession)),
            // Only a second `register` gets here: the room refuses it.
            (message, Some(attached)) => {
                let sending = room.send(attached.session(), message);
                self.start_sending(None, sending).await
            }
        }
    }

    /// Takes a message on its way into the log. When nothing is ahead of
    /// it, and the store took it at once (in memory, it does), it is done
    /// here; otherwise it waits its turn in `sending`, behind at most
    /// [`MAX_SENDING`] others.
    async fn start_sending(&mut self, id: Option<String>, mut sending: Sending) -> Next {
        if self.sending.is_empty() {
            if let Some(result) = (&mut sending).now_or_never() {
                return self.on_sent((id, result));
            }
        }
        while self.sending.len() >= MAX_SENDING {
            let sent = next_sent(&mut self.sending).await;
            if let Next::Stop(stop) = self.on_sent(sent) {
                return Next::Stop(stop);
            }
        }
        self.sending.push_back((id, sending));
        Next::Continue
    }

    /// Waits until every message on its way into the log is stored or
    /// refused, and answers the refused ones.
    async fn settle(&mut self) -> Next {
        while !self.sending.is_empty() {
            let sent = next_sent(&mut self.sending).await;
            if let Next::Stop(stop) = self.on_sent(sent) {
                return Next::Stop(stop);
            }
        }
        Next::Continue
    }

    /// Answers a message that the log refused; a stored one needs no
    /// answer, as its event comes back like every other.
    fn on_sent(&mut self, (id, result): Sent) -> Next {
        match result {
            Ok(_) => Next::Continue,
            Err(err) => self.reply(&Control::Error {
                code: err.code(),
                error: err.to_string(),
                id,
                to: None,
            }),
        }
    }

    /// Queues a control message in answer to a client frame.
    fn reply(&mut self, control: &Control) -> Next {
        match self.send_control(control) {
            Ok(()) => Next::Continue,
            Err(stop) => Next::Stop(stop),
        }
    }

    fn send_control(&mut self, control: &Control) -> Result<(), Stop> {
        let json = control.to_json();
        self.state.counters(Transport::Ws).sent(0, json.len());
        match self.stream.push(Message::Text(json.into())) {
            Pushed::Queued => Ok(()),
            Pushed::Overflow => Err(overflow()),
        }
    }

    fn push(&mut self, message: Message) -> Next {
        match self.stream.push(message) {
            Pushed::Queued => Next::Continue,
            Pushed::Overflow => Next::Stop(overflow()),
        }
    }
}

/// A client message that went into the log, or was refused: the `id` it
/// came with, and the seq of its event or the error.
type Sent = (Option<String>, Result<crate::core::log::Seq, ApiError>);

/// The most messages of one socket on their way into the log at once.
const MAX_SENDING: usize = 64;

/// The oldest message on its way into the log, once it is stored or
/// refused. Cancel-safe: a message leaves `sending` only when it is done.
async fn next_sent(sending: &mut VecDeque<(Option<String>, Sending)>) -> Sent {
    poll_fn(|cx| {
        let Some((_, future)) = sending.front_mut() else {
            return Poll::Pending;
        };
        let result = std::task::ready!(future.poll_unpin(cx));
        let (id, _) = sending.pop_front().expect("polled the front");
        Poll::Ready((id, result))
    })
    .await
}

/// How long a closing socket may take to send its close frame before its
/// connection is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

fn overflow() -> Stop {
    Stop::TooSlow(CloseReason {
        code: CloseCode::Policy,
        description: Some("too slow: outbound queue full".into()),
    })
}

/// The next signal for this socket's session; never, for a socket that
/// takes none.
async fn next_signal(inbox: &mut Option<Inbox>) -> ByteString {
    match inbox {
        // The hub keeps the sending side while the inbox lives, so this
        // only ends if the hub is gone; then no signal can come.
        Some(inbox) => match inbox.recv().await {
            Some(signal) => signal,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// For a refused frame that is a signal: `Some`, with its target's name
/// when it can be read, so the client knows which peer the refusal is for.
fn refused_signal_target(bytes: &[u8]) -> Option<Option<protocol::Name>> {
    #[derive(serde::Deserialize)]
    struct Addressed {
        #[serde(rename = "type")]
        kind: String,
        to: Option<String>,
    }
    let addressed = serde_json::from_slice::<Addressed>(bytes).ok()?;
    (addressed.kind == "signal")
        .then(|| addressed.to.and_then(|to| protocol::Name::parse(&to).ok()))
}

/// The `id` of a refused chat message, when it can still be read, so the
/// client can mark that message as failed.
pub fn refused_message_id(bytes: &[u8]) -> Option<String> {
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
