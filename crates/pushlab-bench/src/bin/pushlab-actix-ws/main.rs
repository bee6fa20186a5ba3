//! `pushlab-actix-ws`: pushlab's `GET /ws` contract served through
//! [actix-ws], over pushlab's own core, so that the WebSocket layer is the
//! only difference when it is measured against pushlab itself.
//!
//! pushlab owns each upgraded TCP stream and writes frames from the socket
//! task (`src/transport/ws.rs`, `ws_stream.rs`). This server does what the
//! actix-ws documentation and actix's examples do instead: an ordinary
//! actix-web handler answers the handshake with `actix_ws::handle` and
//! spawns one loop per socket, which `select!`s over the client's messages,
//! `wait_after(cursor)` on the log, the ping tick and shutdown. Frames go out
//! through actix-ws's `Session` (a channel to the response body that actix's
//! HTTP/1 dispatcher writes). The log, the room, presence, validation and
//! every message's JSON are pushlab's own ([`pushlab::room::Room`],
//! [`pushlab::log::MemoryLog`], [`pushlab::protocol`]).
//!
//! The contract kept: a `hello` control first; `register` answered with a
//! `welcome`, then events after the welcome's cursor; the log's events after
//! the cursor pushed as they come (a `gap` control first when the cursor is
//! too old); `message`, `mousemove` and `leave` from a registered session
//! handed to the room; refusals as `error` controls; a clean close ends the
//! session. Limits the product has and this server does not: the connection
//! limit, origin checks, the per-socket byte bound and slow-client cut-off.
//!
//! It also answers `GET /stats` with the two figures `pushlab-load` reads:
//! the log's `head` and the open sockets (`transports.ws.open`).
//!
//! ```text
//! pushlab-actix-ws [--addr 127.0.0.1:0] [--workers 1] [--history 10000]
//! ```
//!
//! Prints `pushlab-actix-ws listening on http://ADDR` once it is ready.
//!
//! [actix-ws]: https://docs.rs/actix-ws/0.3

/// jemalloc, as in pushlab's own binary, so the allocators match.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt as _;
use pushlab::config::{WS_MISSED_PONGS, WS_PING_INTERVAL};
use pushlab::log::{EventLog, MemoryLog, Seq};
use pushlab::protocol::{self, ClientMessage, Control, MAX_BODY_BYTES, MAX_ID_CHARS};
use pushlab::room::{Attachment, Room};
use pushlab::ApiError;
use pushlab::ReadQuery;
use tokio_util::sync::CancellationToken;

/// Ends the room's idle sessions until `stop`, as pushlab's own reaper does.
fn spawn_reaper(room: Room, timeout: Duration, stop: CancellationToken) {
    let period = pushlab::room::reaper_period(timeout);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => room.end_idle(timeout).await,
            }
        }
    });
}

/// The server's flags; the defaults are pushlab's.
#[derive(Debug, Parser)]
#[command(
    name = "pushlab-actix-ws",
    about = "pushlab's /ws contract over actix-ws, on pushlab's own log and room"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Events the log keeps.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Events per second per session; 0 for no limit.
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// Seconds without a connection before a session ends.
    #[arg(long, default_value_t = 10)]
    presence_timeout: u64,
}

/// What every worker shares, built once outside the worker factory.
struct Shared {
    room: Room,
    /// Sockets open now, for `/stats`.
    open: AtomicU64,
    /// Cancelled when the server stops; every socket closes with 1001.
    shutdown: CancellationToken,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.addr)
        .with_context(|| format!("could not listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(args.history));
    let shared = web::Data::new(Shared {
        room: Room::new(log, args.rate_limit),
        open: AtomicU64::new(0),
        shutdown: CancellationToken::new(),
    });
    spawn_reaper(
        shared.room.clone(),
        Duration::from_secs(args.presence_timeout),
        shared.shutdown.clone(),
    );
    let app_shared = shared.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_shared.clone())
            .route("/ws", web::get().to(websocket))
            .route("/stats", web::get().to(stats))
    })
    .workers(args.workers.max(1))
    // As pushlab: small pushes must go out at once, not wait on Nagle.
    .tcp_nodelay(true)
    .h1_allow_half_closed(false)
    .client_request_timeout(Duration::from_secs(5))
    .listen(listener)?
    .run();
    println!("pushlab-actix-ws listening on http://{addr}");
    let handle = server.handle();
    let stopping = shared.shutdown.clone();
    actix_web::rt::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopping.cancel();
        handle.stop(true).await;
    });
    server.await?;
    Ok(())
}

/// `GET /stats`: the log's head and the sockets open now.
async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "head": shared.room.log().head(),
        "transports": { "ws": { "open": shared.open.load(Ordering::Relaxed) } },
    }))
}

/// `GET /ws`: the query and the session it attaches to, the handshake, then
/// a task for the socket's life.
async fn websocket(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let query = web::Query::<ReadQuery>::from_query(req.query_string())
        .map_err(|err| ApiError::BadRequest(format!("bad query string: {err}")))?
        .into_inner();
    let attached = query.session.map(|s| shared.room.attach(s)).transpose()?;
    let (response, session, incoming) = actix_ws::handle(&req, body)?;
    let incoming = incoming
        .max_frame_size(MAX_BODY_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_BODY_BYTES);
    let socket = Socket {
        room: shared.room.clone(),
        session,
        cursor: query.since,
        epoch: query.epoch.clone().filter(|e| !e.is_empty()),
        attached,
    };
    actix_web::rt::spawn(socket.run(incoming, shared.into_inner()));
    Ok(response)
}

/// Why a socket's loop ended.
enum Stop {
    /// Close with this reason.
    Close(Option<CloseReason>),
    /// The connection is gone: nothing more can be sent.
    Gone,
}

/// One socket's state, owned by its task.
struct Socket {
    room: Room,
    session: Session,
    /// The last seq sent on this socket.
    cursor: Seq,
    /// The client's epoch, checked on the first read only.
    epoch: Option<String>,
    /// The session this socket speaks for, once it has one.
    attached: Option<Attachment>,
}

impl Socket {
    async fn run(mut self, mut incoming: AggregatedMessageStream, shared: Arc<Shared>) {
        shared.open.fetch_add(1, Ordering::Relaxed);
        let stop = self.serve(&mut incoming, &shared.shutdown).await;
        shared.open.fetch_sub(1, Ordering::Relaxed);
        if let Stop::Close(reason) = stop {
            // Closing drops the sender; the dispatcher then ends the response.
            let _ = self.session.close(reason).await;
        }
    }

    /// Runs until the socket should close.
    async fn serve(
        &mut self,
        incoming: &mut AggregatedMessageStream,
        shutdown: &CancellationToken,
    ) -> Stop {
        let log = self.room.log().clone();
        let hello = Control::Hello {
            epoch: log.epoch().clone(),
            cursor: self.cursor,
        };
        if self.send_control(&hello).await.is_err() {
            return Stop::Gone;
        }
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + WS_PING_INTERVAL,
            WS_PING_INTERVAL,
        );
        let mut missed_pongs = 0;
        loop {
            if self.send_newer(&*log).await.is_err() {
                return Stop::Gone;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Stop::Close(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("server shutting down".into()),
                    }));
                }
                message = incoming.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(err)) => return Stop::Close(Some(protocol_close(&err))),
                        None => return Stop::Gone,
                    };
                    if let Some(stop) = self.on_message(message, &mut missed_pongs).await {
                        return stop;
                    }
                }
                _ = log.wait_after(self.cursor) => {}
                _ = ping.tick() => {
                    if missed_pongs >= WS_MISSED_PONGS {
                        return Stop::Close(Some(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("no pong".into()),
                        }));
                    }
                    missed_pongs += 1;
                    if self.session.ping(b"").await.is_err() {
                        return Stop::Gone;
                    }
                }
            }
        }
    }

    /// Sends every event after the cursor (a `gap` first if it is too old).
    async fn send_newer(&mut self, log: &dyn EventLog) -> Result<(), actix_ws::Closed> {
        loop {
            let batch = log.read_since(self.cursor, self.epoch.take().as_deref());
            if batch.gap {
                let cursor = batch.events.first().map_or(batch.cursor, |e| e.seq - 1);
                let epoch = log.epoch().clone();
                self.send_control(&Control::Gap { epoch, cursor }).await?;
            }
            if batch.events.is_empty() {
                self.cursor = batch.cursor;
                return Ok(());
            }
            for event in &batch.events {
                self.session.text(event.json_shared()).await?;
                self.cursor = event.seq;
            }
        }
    }

    /// Handles one client message; `Some` ends the loop.
    async fn on_message(
        &mut self,
        message: AggregatedMessage,
        missed_pongs: &mut u32,
    ) -> Option<Stop> {
        let sent = match message {
            AggregatedMessage::Text(text) => return self.on_text(text.as_bytes()).await,
            AggregatedMessage::Binary(_) => {
                let err = ApiError::BadRequest("send JSON in text frames".into());
                self.send_control(&Control::from(&err)).await
            }
            AggregatedMessage::Ping(payload) => self.session.pong(&payload).await,
            AggregatedMessage::Pong(_) => {
                *missed_pongs = 0;
                Ok(())
            }
            AggregatedMessage::Close(_) => {
                // A clean close ends the session at once.
                if let Some(guard) = self.attached.take() {
                    self.room.end(guard.session()).await;
                }
                return Some(Stop::Close(None));
            }
        };
        sent.err().map(|_| Stop::Gone)
    }

    async fn on_text(&mut self, bytes: &[u8]) -> Option<Stop> {
        let message = match protocol::parse_client_message(bytes) {
            Ok(message) => message,
            Err(err) => {
                let control = Control::Error {
                    code: err.code(),
                    error: err.to_string(),
                    id: refused_message_id(bytes),
                    to: None,
                };
                return self.reply(&control).await;
            }
        };
        let room = self.room.clone();
        match (message, &self.attached) {
            (ClientMessage::Register(registration), None) => {
                match room.register(registration.name).await {
                    Ok(welcome) => match room.attach(welcome.session) {
                        Ok(guard) => {
                            self.attached = Some(guard);
                            // Events resume after the welcome's cursor.
                            self.cursor = self.cursor.max(welcome.cursor);
                            self.reply(&Control::Welcome(welcome)).await
                        }
                        Err(err) => self.reply(&Control::from(&err)).await,
                    },
                    Err(err) => self.reply(&Control::from(&err)).await,
                }
            }
            (ClientMessage::Leave, Some(guard)) => {
                room.end(guard.session()).await;
                self.attached = None;
                Some(Stop::Close(Some(CloseReason {
                    code: CloseCode::Normal,
                    description: Some("left".into()),
                })))
            }
            (_, None) => self.reply(&Control::from(&ApiError::UnknownSession)).await,
            (message, Some(guard)) => {
                let id = match &message {
                    ClientMessage::Message { id, .. } => id.clone(),
                    _ => None,
                };
                match room.submit(guard.session(), message).await {
                    Ok(_) => None,
                    Err(err) => {
                        let control = Control::Error {
                            code: err.code(),
                            error: err.to_string(),
                            id,
                            to: None,
                        };
                        self.reply(&control).await
                    }
                }
            }
        }
    }

    /// Sends a control in answer to a client message; `Some` if the socket
    /// is gone.
    async fn reply(&mut self, control: &Control) -> Option<Stop> {
        self.send_control(control).await.err().map(|_| Stop::Gone)
    }

    async fn send_control(&mut self, control: &Control) -> Result<(), actix_ws::Closed> {
        self.session.text(control.to_json()).await
    }
}

/// The `id` of a refused chat message, when it can still be read.
fn refused_message_id(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: String,
    }
    serde_json::from_slice::<WithId>(bytes)
        .ok()
        .map(|m| m.id)
        .filter(|id| id.chars().count() <= MAX_ID_CHARS)
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
