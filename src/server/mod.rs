//! The top of the house: the server assembled. State is built once, every
//! accepted connection wrapped, and actix-http serves the router (built
//! from the endpoint table in [`routes`]) beside the WebSocket upgrade.
//! Only this layer imports every other one.

mod routes;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::BoxBody;
use actix_http::error::DispatchError;
use actix_http::{h1, HttpService, Request, Response};
use actix_server::ServerHandle;
use actix_service::{
    apply_fn_factory, fn_service, map_config, IntoServiceFactory as _, Service as _,
    ServiceFactory, ServiceFactoryExt as _,
};
use actix_web::dev::AppConfig;
use actix_web::web;
use futures_util::future::{Either, FutureExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::classroom::{self, demo};
use crate::config::Config;
use crate::core::log::EventLog;
use crate::core::log_store::LogStore;
use crate::core::{presence, rooms};
use crate::http::admission;
use crate::http::endpoints;
use crate::http::state::{AppState, DemoRate, WebTransportPage};
use crate::net::conn::{self, Conn, IntoSocket};
use crate::net::tls::{self, ServerCertificate, TlsConn};
use crate::net::traffic::StreamMeter;
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
    /// The plain HTTP/1.1 listener beside HTTPS, with `--http1-addr`.
    http1_addr: Option<SocketAddr>,
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate it serves HTTPS with; `None` for plain HTTP.
    pub fn certificate(&self) -> Option<&ServerCertificate> {
        self.state.certificate.as_deref()
    }

    /// The lobby's message log.
    pub fn log(&self) -> Arc<dyn EventLog> {
        self.state.rooms.lobby().log().clone()
    }

    /// Its rooms.
    pub fn rooms(&self) -> &rooms::Rooms {
        &self.state.rooms
    }

    /// The address plain HTTP/1.1 is also served on beside HTTPS, with
    /// `--http1-addr`.
    pub fn http1_addr(&self) -> Option<SocketAddr> {
        self.http1_addr
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
    // The demo bot's rate, which `POST /demo` changes.
    let demo_rate = config
        .demo
        .then(|| DemoRate::new(config.demo_room.clone(), config.demo_rate));
    if config.demo {
        // Opening a room may block (a journal replays, Redis answers), so
        // the bot opens its room on the blocking pool like any client.
        let (rooms, room, rate, stop) = (
            rooms.clone(),
            config.demo_room.clone(),
            demo_rate.as_ref().map(|demo| demo.rate.subscribe()),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            match rooms.open(&room, None).await {
                Ok(room) => drop(rate.map(|rate| demo::spawn(room, rate, stop))),
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
        open_files::files_per_connection(config.delay().is_some(), config.tls_enabled()),
    );
    let send_timeout = Duration::from_secs_f64(config.send_timeout);
    let delay = config.delay().map(delay::Delay::new).transpose()?;
    let max_connections = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    // One certificate for HTTPS and WebTransport, made before the state,
    // which tells pages its hash.
    let certificate = certificate(&config, addr)?;
    let https = config.tls_enabled();
    let tls_config = match &certificate {
        Some(certificate) if https => Some(Arc::new(certificate.server_config(tls::HTTP_ALPN)?)),
        _ => None,
    };
    let webtransport_tls = match &certificate {
        Some(certificate) if config.webtransport => {
            Some(certificate.quic_config(webtransport::ALPN)?)
        }
        _ => None,
    };
    // The plain listener beside HTTPS, bound before anything is served so
    // a port taken is refused at start.
    let http1_listener = match config.http1_addr.filter(|_| https) {
        Some(wanted) => Some(TcpListener::bind(wanted).map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("could not listen on {wanted} (--http1-addr): {err}"),
            )
        })?),
        None => None,
    };
    let http1_addr = http1_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let webtransport_page = webtransport_tls.as_ref().map(|_| WebTransportPage {
        host: config.wt_host.clone(),
        port: addr.port(),
        certificate_hash: certificate
            .as_ref()
            .filter(|certificate| certificate.self_signed)
            .map(|certificate| certificate.sha256_hex()),
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
        certificate: certificate.filter(|_| https),
        webtransport: webtransport_page,
        http1: http1_addr,
        demo: demo_rate,
        answers: Default::default(),
    });
    // On the same port number as the HTTP listener, over UDP, on this
    // runtime; it stops on the same shutdown token.
    let webtransport = webtransport_tls
        .map(|tls| webtransport::spawn(state.clone(), addr, tls))
        .transpose()?;
    let mut server = actix_server::Server::build()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        // main() handles signals, so the log and sockets shut down in order.
        .disable_signals();
    if let Some(workers) = workers {
        server = server.workers(workers.max(1));
    }
    // Every accepted socket is served as a `Conn` (counted, behind the send
    // timeout), through the delay if there is one.
    let accept = move |io: TcpStream| {
        let delay = delay.clone();
        async move {
            conn::no_delay(&io);
            let peer = io.peer_addr().ok();
            let io = match &delay {
                Some(delay) => delay.relay(io).await?,
                None => io,
            };
            Ok::<_, std::io::Error>((Conn::new(io, send_timeout), peer))
        }
    };
    // The factory runs once per worker; every worker shares `state`. A
    // plain listener speaks HTTP/1.1 alone: the connection's state has no
    // room for HTTP/2's.
    let plain = |local: SocketAddr| {
        let (accept, app_state) = (accept.clone(), state.clone());
        move || {
            let accept = accept.clone();
            fn_service(move |io: TcpStream| accept(io))
                .map_err(DispatchError::Io)
                .and_then(
                    http_builder!(Conn, app_state.clone(), local)
                        .h1(app::<Conn>(app_state.clone())),
                )
        }
    };
    let server = match tls_config {
        None => server.listen("pushlab", listener, plain(addr))?,
        // HTTPS: TLS goes between the counted connection and HTTP, so the
        // connection counts the TLS records on the socket.
        Some(tls_config) => {
            let (accept, app_state) = (accept.clone(), state.clone());
            let server = server.listen("pushlab", listener, move || {
                let accept = accept.clone();
                fn_service(move |io: TcpStream| accept(io))
                    .and_then(tls::handshake(tls_config.clone()).map_err(|err| {
                        tracing::debug!(?err, "a TLS handshake failed");
                        std::io::Error::other("TLS handshake")
                    }))
                    .map_err(DispatchError::Io)
                    .and_then(
                        http_builder!(TlsConn, app_state.clone(), addr)
                            .secure()
                            .finish(app::<TlsConn>(app_state.clone())),
                    )
            })?;
            // The same app on a second, plain socket: one state, so the
            // same rooms, limits, checks and byte counts.
            match (http1_listener, http1_addr) {
                (Some(listener), Some(local)) => {
                    server.listen("pushlab-http1", listener, plain(local))?
                }
                _ => server,
            }
        }
    }
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(Server {
        addr,
        handle,
        state,
        task,
        webtransport,
        http1_addr,
    })
}

/// The certificate `--tls` and `--webtransport` serve: the one
/// `--tls-cert` names, or one made for this machine's names and addresses;
/// `None` with neither.
fn certificate(
    config: &Config,
    addr: SocketAddr,
) -> std::io::Result<Option<Arc<ServerCertificate>>> {
    if !config.tls_enabled() && !config.webtransport {
        return Ok(None);
    }
    let mut names = tls::own_names(addr.ip(), &classroom::local_addresses());
    // The name pages open WebTransport sessions on, if this node has one.
    if let Some(host) = config.wt_host.as_deref() {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !names.iter().any(|name| name == bare) {
            names.push(bare.to_owned());
        }
    }
    let certificate = ServerCertificate::from_files_or_generate(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        &names,
    )?;
    Ok(Some(Arc::new(certificate)))
}

/// What the HTTP service needs of the connection it serves, plain or TLS.
trait Served: IntoSocket {
    /// Puts the connection's byte counter where each request finds it.
    fn on_connect(&self, ext: &mut actix_http::Extensions);
    /// Runs as each request is handed to the service, in the order the
    /// connection carried them, before anything else about it runs.
    fn on_request(_state: &AppState, _req: &Request) {}
}

impl Served for Conn {
    fn on_connect(&self, ext: &mut actix_http::Extensions) {
        ext.insert(self.meter().clone());
    }
}

impl Served for TlsConn {
    fn on_connect(&self, ext: &mut actix_http::Extensions) {
        match self.streams() {
            Some(streams) => drop(ext.insert(streams.clone())),
            None => drop(ext.insert(self.meter().clone())),
        }
    }

    /// An HTTP/2 request's stream is charged to it here: the HTTP/2 layer
    /// hands requests over in the order their streams opened, so this is
    /// the one place that knows which stream a request is.
    fn on_request(state: &AppState, req: &Request) {
        if let Some(streams) = req.conn_data::<Arc<StreamMeter>>() {
            streams.bind_next(admission::charge_for(state, req.head()));
        }
    }
}

/// The application for connections of type `T`: the router, behind
/// [`Served::on_request`], beside the long-polls that admission answers
/// without it ([`admission::served_directly`]).
fn app<T: Served>(
    state: web::Data<AppState>,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = Response<BoxBody>,
    Error = actix_web::HttpResponse,
    InitError = (),
> {
    let request_state = state.clone();
    let app = map_config(
        routes::app(state)
            .into_factory()
            .map(Response::from)
            .map_err(|err: actix_web::Error| err.error_response()),
        |_| AppConfig::default(),
    );
    apply_fn_factory(app, move |req: Request, service| {
        T::on_request(&request_state, &req);
        if admission::served_directly(req.head()) {
            // Boxed like the router's own future, so the connection's
            // state keeps room for neither inline.
            let direct = admission::admit_directly(
                request_state.clone(),
                req,
                transport::longpoll::answer_query,
            );
            Either::Left(Box::pin(direct.map(Ok)))
        } else {
            Either::Right(service.call(req))
        }
    })
}

/// The HTTP settings and the WebSocket upgrade for connections of type
/// `$io`, served by `$state` on `$addr`: a builder that `.h1(app)` finishes
/// as HTTP/1.1 alone, and `.finish(app)` as HTTP/1.1 or HTTP/2, as the
/// connection says. A macro because the builder's type names the upgrade
/// service's, which has no name.
macro_rules! http_builder {
    ($io:ty, $state:expr, $addr:expr) => {{
        let upgrade_state: web::Data<AppState> = $state;
        HttpService::build()
            // Notice promptly when a client holding a long-poll or
            // stream goes away.
            .h1_allow_half_closed(false)
            .client_request_timeout(REQUEST_HEAD_TIMEOUT)
            .local_addr($addr)
            // Each request finds its connection's byte counter here.
            .on_connect_ext(|io: &$io, ext: &mut actix_http::Extensions| io.on_connect(ext))
            // WebSocket upgrades skip the router: the socket task takes
            // the same connection (see `transport::ws`), still counted
            // and under a send timeout. The handshake future is boxed
            // because every connection's HTTP/1 state has room for it
            // inline otherwise: 2 KiB more per held long-poll or stream.
            .upgrade(fn_service(
                move |(req, framed): (Request, Framed<$io, h1::Codec>)| {
                    Box::pin(transport::ws::upgrade(upgrade_state.clone(), req, framed))
                        as futures_util::future::LocalBoxFuture<'static, _>
                },
            ))
    }};
}
use http_builder;
