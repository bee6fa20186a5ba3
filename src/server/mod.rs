//! The top of the house: the server assembled. State is built once, every
//! accepted connection wrapped, and actix-http serves the router (built
//! from the endpoint table in [`routes`]) beside the WebSocket upgrade.
//! Only this layer imports every other one.

mod routes;

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

use crate::classroom::demo;
use crate::config::Config;
use crate::core::log::EventLog;
use crate::core::log_store::LogStore;
use crate::core::{presence, rooms};
use crate::http::endpoints;
use crate::http::state::{AppState, WebTransportPage};
use crate::net::conn::{self, Conn};
use crate::net::{delay, limits, open_files};
use crate::transport::webtransport::{self, WebTransport};
use crate::{store, transport};

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
    /// The WebTransport endpoint, with `--webtransport`.
    webtransport: Option<WebTransport>,
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

    /// The UDP address WebTransport is served on, with `--webtransport`.
    pub fn webtransport_addr(&self) -> Option<SocketAddr> {
        self.webtransport.as_ref().map(WebTransport::addr)
    }

    /// The SHA-256 hash of the WebTransport certificate, in hex, when it is
    /// pushlab's own self-signed one.
    pub fn certificate_hash(&self) -> Option<&str> {
        self.state
            .webtransport
            .as_ref()?
            .certificate_hash
            .as_deref()
    }

    /// Stops gracefully: held long-polls are answered, streams end, sockets
    /// and WebTransport sessions close with 1001 (going away), then
    /// connections are drained.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.handle.stop(true).await;
        let _ = self.task.await;
        if let Some(webtransport) = self.webtransport {
            webtransport.stopped().await;
        }
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
/// Each room's log is in the store the config names (see
/// [`store::from_config`]): a durable journal with `config.data_dir`, that
/// Redis with `config.redis`, memory otherwise.
pub fn serve(listener: TcpListener, config: Config) -> std::io::Result<Server> {
    check(&config)?;
    let store = store::from_config(&config)?;
    serve_with_store(listener, config, store)
}

/// Refuses a config whose flags contradict each other (see
/// [`Config::check`]), before anything is opened.
fn check(config: &Config) -> std::io::Result<()> {
    config
        .check()
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))
}

/// Serves pushlab on `listener`, keeping each room's log in `store`, and
/// serving the store's own counters, if it keeps any, at `/metrics`.
///
/// Raises the process's open-file limit first, and lowers
/// `config.max_connections` if it still does not fit (see [`open_files`]).
pub fn serve_with_store(
    listener: TcpListener,
    mut config: Config,
    store: Box<dyn LogStore>,
) -> std::io::Result<Server> {
    check(&config)?;
    let store_metrics = store.metrics();
    let log_bytes = store.budget().node.clone();
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let rooms = rooms::Rooms::new(
        store,
        rooms::RoomLimits {
            max_rooms: config.max_rooms,
            ip_rooms: config.ip_rooms,
            idle: config.room_idle_timeout(),
            retention: config.room_retention(),
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
        // Opening a room may block (a journal replays, Redis answers), so
        // the bot opens its room on the blocking pool like any client.
        let (rooms, room, rate, stop) = (
            rooms.clone(),
            config.demo_room.clone(),
            config.demo_rate,
            shutdown.clone(),
        );
        tokio::spawn(async move {
            match rooms.open(&room, None).await {
                Ok(room) => drop(demo::spawn(room, rate, stop)),
                Err(err) => tracing::error!(%err, %room, "the demo bot could not open its room"),
            }
        });
    }
    let workers = config.workers;
    let ip_connections = config.ip_connections;
    // actix-server's own default: one worker per core.
    let worker_count = workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
        .max(1);
    config.max_connections = open_files::max_connections_within_limit(
        config.max_connections,
        worker_count,
        open_files::files_per_connection(config.delay().is_some()),
    );
    let send_timeout = Duration::from_secs_f64(config.send_timeout);
    let delay = config.delay().map(delay::Delay::new).transpose()?;
    let max_connections = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    // Made before the state, which tells pages its hash.
    let identity = config
        .webtransport
        .then(webtransport::self_signed_identity)
        .transpose()?;
    let webtransport_page = identity.as_ref().map(|identity| WebTransportPage {
        port: addr.port(),
        certificate_hash: Some(webtransport::certificate_hash(identity)),
    });
    // Built once, outside the factory: every worker must share one log.
    let state = web::Data::new(AppState {
        rooms,
        config: Arc::new(config),
        stats: Default::default(),
        limit: limits::ConnectionLimit::new(
            max_connections,
            ip_connections,
            "requests and connections",
        ),
        scrapes: limits::ConnectionLimit::new(
            endpoints::SCRAPES,
            endpoints::SCRAPES_PER_ADDRESS,
            "scrapes of /metrics",
        ),
        shutdown,
        clients: Default::default(),
        addr,
        log_bytes,
        store_metrics,
        webtransport: webtransport_page,
    });
    // On the same port number as the HTTP listener, over UDP, on this
    // runtime; it stops on the same shutdown token.
    let webtransport = identity
        .map(|identity| webtransport::spawn(state.clone(), addr, identity))
        .transpose()?;
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
                .on_connect_ext(|io: &Conn, ext: &mut actix_http::Extensions| {
                    ext.insert(io.meter().clone());
                })
                // WebSocket upgrades skip the router: the socket task takes
                // the same connection (see `transport::ws`), still counted
                // and under a send timeout. The handshake future is boxed
                // because every connection's HTTP/1 state has room for it
                // inline otherwise: 2 KiB more per held long-poll or stream.
                .upgrade(fn_service(
                    move |(req, framed): (Request, Framed<Conn, h1::Codec>)| {
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
            // Every accepted socket is served as a `Conn` (counted, behind
            // the send timeout), through the delay if there is one.
            fn_service(move |io: TcpStream| {
                let delay = delay.clone();
                async move {
                    conn::no_delay(&io);
                    let peer = io.peer_addr().ok();
                    let io = match &delay {
                        Some(delay) => delay.relay(io).await.map_err(DispatchError::Io)?,
                        None => io,
                    };
                    Ok(conn::accept(io, peer, send_timeout))
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
        webtransport,
    })
}
