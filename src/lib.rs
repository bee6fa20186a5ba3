//! pushlab: one message log, served to browsers over short polling, long
//! polling, Server-Sent Events and WebSocket, so the four can be compared.
//!
//! # Layout
//!
//! The core knows nothing of HTTP; each layer imports only from below it.
//!
//! - Core, no actix:
//!   - [`error`]: one error type with a machine `code` for every refusal.
//!   - [`names`]: [`names::Name`] and [`names::MessageText`], with their rules.
//!   - [`log`]: the append-only message log, the [`log::EventLog`] trait
//!     (append, read since a cursor, wait for newer) and the one
//!     [`log::Reader`] every transport reads through.
//!   - [`journal`]: the durable journal behind `--data-dir`.
//!   - [`redis_store`]: every room's log and sessions in Redis behind
//!     `--redis`, shared by several nodes, each log mirrored into each node.
//!   - [`presence`]: sessions, names, cursors, rate limits, idle expiry.
//!   - [`directory`]: the contract for sessions shared across nodes: names
//!     unique everywhere, leases, and a `leave` written once.
//!   - [`protocol`]: client and server messages, and input validation.
//!   - [`signals`]: the signal hub that passes WebRTC offers, answers and
//!     ICE candidates between two sessions of a room, outside the log.
//!   - [`room`]: the rules that tie presence to the log (join, send, leave,
//!     attach a connection) and to the signal hub.
//!   - [`rooms`]: the room registry above the log and presence: opens a
//!     room on first use within its caps, lists them, reclaims idle ones,
//!     and keeps each room's log in a `LogStore` (memory, journal or Redis).
//!   - [`demo`]: the `--demo` bot, a client of a room like any other.
//! - HTTP:
//!   - [`config`]: every flag and limit.
//!   - [`log_throttle`]: the frameworks' per-connection errors, logged at
//!     most once per kind per 10 s.
//!   - [`http_error`]: each error's HTTP status and JSON body.
//!   - [`state`]: what every handler shares, built once.
//!   - [`stats`]: counters per transport, served at `/stats`.
//!   - [`limits`]: the places under `--max-connections`.
//!   - [`open_files`]: the open-file limit raised, and
//!     `--max-connections` fitted under it.
//!   - [`send_timeout`]: every accepted socket, cut when its client stops
//!     taking what the server writes.
//!   - [`traffic`]: every byte each connection reads and writes, charged to
//!     the node and the client (`client=ID`), on the channel of the request
//!     it served.
//!   - [`delay`]: `--delay-ms`, the simulated network delay, as a relay
//!     under every connection.
//!   - [`endpoints`]: the table of paths and methods, shared by the router
//!     and the WebSocket upgrade path.
//!   - [`middleware`]: admission for every request: the connection limit,
//!     the origin check and CORS grants.
//!   - [`body_timeout`]: request bodies read within `--body-timeout`.
//!   - [`routes`]: the router built from the table, and the app.
//!   - [`api`]: `/register`, `/send`, `/stats`, `/config`, `/healthz`, and the shared
//!     query and body shapes.
//!   - [`metrics`]: `/metrics`, the node's counters (transports, traffic,
//!     rooms, Redis) in Prometheus text, read when scraped.
//!   - [`classroom`]: `/traffic`, `/time`, `/join`, `/qr.svg`, and the
//!     middleware that charges each request to its client.
//!   - [`assets`]: the browser client in `web/`, embedded in the binary.
//!   - [`transport`]: `poll`, `longpoll`, `sse`, `ws` (with `ws_stream`, the
//!     socket's frames and bytes): thin adapters from a reader to each wire
//!     shape.
//!
//! The benchmark tools (load generator, WebSocket floor, socket.io peer) are
//! the workspace member `crates/pushlab-bench`, outside the product.
//!
//! [`serve`] starts a server on a listener that is already bound, so tests
//! and benches bind port 0 and run it in-process:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let server = pushlab::serve(listener, pushlab::Config::default())?;
//! println!("serving at http://{}", server.addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod classroom;
pub mod config;
mod core;
mod http;
mod net;
mod store;
mod transport;

// The public API: what the binary, the tests, the benches and the tool
// crates use. Everything else is private to the crate.
pub use crate::classroom::{join_urls, local_addresses};
pub use crate::core::{error, log, names, presence, protocol, room, rooms, signals};
pub use crate::http::api::ReadQuery;
pub use crate::http::log_throttle;
pub use crate::store::journal;
pub use crate::transport::poll::batch_body;
/// The WebSocket read path, for the fuzz target.
pub use crate::transport::ws::stream as ws_stream;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::error::DispatchError;
use actix_http::{h1, HttpService, Request};
use actix_server::ServerHandle;
use actix_service::{fn_service, map_config, IntoServiceFactory as _, ServiceFactoryExt as _};
use actix_web::dev::AppConfig;
use actix_web::web;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::ApiError;
pub use log::{EventLog, MemoryLog};
pub use names::RoomName;

use crate::classroom::demo;

use crate::http::routes;
use crate::http::state::AppState;
use crate::net::send_timeout::{self, SendTimeout};
use crate::net::traffic::Wire;
use crate::net::{delay, limits, open_files};
use crate::store::redis as redis_store;

/// Every accepted connection as HTTP serves it: counted, behind the send
/// timeout.
type Connection = SendTimeout<Wire<TcpStream>>;

/// Seconds a graceful shutdown waits for connections to finish.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// How long a client may take to send a request's head before the
/// connection is closed.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A running pushlab server.
pub struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    state: web::Data<AppState>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The lobby's message log.
    pub fn log(&self) -> Arc<dyn EventLog> {
        self.state.rooms.lobby().log().clone()
    }

    /// Its rooms.
    pub fn rooms(&self) -> &rooms::Rooms {
        &self.state.rooms
    }

    /// Stops gracefully: held long-polls are answered, streams end, sockets
    /// close with 1001 (going away), then connections are drained.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Resolves when the server stops by itself (it does not, unless it fails).
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

/// Serves pushlab on `listener`.
///
/// Must be called inside a Tokio runtime; the server runs on its own worker
/// threads until [`Server::shutdown`].
///
/// With `config.data_dir` set, the log is a durable journal there; with
/// `config.redis`, every room's log is in that Redis.
pub fn serve(listener: TcpListener, config: Config) -> std::io::Result<Server> {
    let history = config.history as usize;
    let mut redis = None;
    let store: Box<dyn rooms::LogStore> = match (&config.redis, &config.data_dir) {
        (Some(url), _) => {
            let store = redis_store::RedisStore::connect(url, history)?;
            redis = Some(store.stats());
            Box::new(store)
        }
        (None, Some(dir)) => Box::new(rooms::JournalStore {
            dir: dir.clone(),
            history,
            recover: config.journal_recover,
        }),
        (None, None) => Box::new(rooms::MemoryStore { history }),
    };
    serve_on(listener, config, store, redis)
}

/// Serves pushlab on `listener`, keeping each room's log in `store`.
///
/// Raises the process's open-file limit first, and lowers
/// `config.max_connections` if it still does not fit (see [`open_files`]).
pub fn serve_with_store(
    listener: TcpListener,
    config: Config,
    store: Box<dyn rooms::LogStore>,
) -> std::io::Result<Server> {
    serve_on(listener, config, store, None)
}

/// [`serve_with_store`], with the Redis store's counters when `store` is
/// one, for `/metrics`.
fn serve_on(
    listener: TcpListener,
    mut config: Config,
    store: Box<dyn rooms::LogStore>,
    redis: Option<Arc<redis_store::RedisStats>>,
) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let rooms = rooms::Rooms::new(
        store,
        rooms::RoomLimits {
            max_rooms: config.max_rooms,
            ip_rooms: config.ip_rooms,
            idle: config.room_idle_timeout(),
        },
        presence::SessionLimits {
            rate: config.rate_limit,
            ip_rate: config.ip_rate_limit,
            ip_sessions: config.ip_sessions,
            ip_registrations: config.ip_registrations,
            signal_rate: config.signal_rate,
            timeout: config.presence_timeout(),
        },
    )?;
    rooms.spawn_reaper(config.presence_timeout(), shutdown.clone());
    if config.demo {
        let room = rooms
            .open(&config.demo_room, None)
            .map_err(std::io::Error::other)?;
        demo::spawn(room, config.demo_rate, shutdown.clone());
    }
    let workers = config.workers;
    let ip_connections = config.ip_connections;
    // actix-server's own default: one worker per core.
    let worker_count = workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
        .max(1);
    config.max_connections =
        open_files::max_connections_within_limit(config.max_connections, worker_count);
    let send_timeout = Duration::from_secs_f64(config.send_timeout);
    let delay = config.delay().map(delay::Delay::new).transpose()?;
    let max_connections = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    // Built once, outside the factory: every worker must share one log.
    let state = web::Data::new(AppState {
        rooms,
        config: Arc::new(config),
        stats: Default::default(),
        limit: limits::ConnectionLimit::new(max_connections, ip_connections),
        shutdown,
        clients: Default::default(),
        addr,
        redis,
    });
    let app_state = state.clone();
    let mut server = actix_server::Server::build()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        // main() handles signals, so the log and sockets shut down in order.
        .disable_signals();
    if let Some(workers) = workers {
        server = server.workers(workers.max(1));
    }
    // The factory runs once per worker; every worker shares `app_state`.
    let server = server
        .listen("pushlab", listener, move || {
            let state = app_state.clone();
            let upgrade_state = app_state.clone();
            let delay = delay.clone();
            let http = HttpService::build()
                // Notice promptly when a client holding a long-poll or
                // stream goes away.
                .h1_allow_half_closed(false)
                .client_request_timeout(REQUEST_HEAD_TIMEOUT)
                .local_addr(addr)
                // Each request finds its connection's byte counter here.
                .on_connect_ext(|io: &Connection, ext: &mut actix_http::Extensions| {
                    ext.insert(io.get_ref().meter().clone());
                })
                // WebSocket upgrades skip the router: the socket task takes
                // the connection itself (see `transport::ws`), unwrapped
                // from the send timeout, since it bounds slow clients its
                // own way. The handshake future is boxed because every
                // connection's HTTP/1 state has room for it inline
                // otherwise: 2 KiB more per held long-poll or stream.
                .upgrade(fn_service(
                    move |(req, framed): (Request, Framed<Connection, h1::Codec>)| {
                        let framed = framed.into_map_io(SendTimeout::into_inner);
                        classroom::charge_upgrade(&upgrade_state, &req, framed.io_ref().meter());
                        Box::pin(transport::ws::upgrade(upgrade_state.clone(), req, framed))
                            as futures_util::future::LocalBoxFuture<'static, _>
                    },
                ))
                .finish(map_config(
                    routes::app(state)
                        .into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    |_| AppConfig::default(),
                ));
            // Every accepted socket is served counted, behind the send
            // timeout, and through the delay if there is one.
            fn_service(move |io: TcpStream| {
                let delay = delay.clone();
                async move {
                    send_timeout::no_delay(&io);
                    let peer = io.peer_addr().ok();
                    let io = match &delay {
                        Some(delay) => delay.relay(io).await.map_err(DispatchError::Io)?,
                        None => io,
                    };
                    Ok(send_timeout::accept(Wire::new(io), peer, send_timeout))
                }
            })
            .and_then(http)
        })?
        .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(Server {
        addr,
        handle,
        state,
        task,
    })
}
