//! pushlab: one message log, served to browsers over short polling, long
//! polling, Server-Sent Events and WebSocket, so the four can be compared.
//!
//! # Layout
//!
//! - [`journal`]: the durable journal behind `--data-dir`.
//! - [`log`]: the append-only message log and the [`log::EventLog`] trait
//!   every transport uses (append, read since a cursor, wait for newer).
//! - [`presence`]: sessions, names, cursors, rate limits, idle expiry.
//! - [`room`]: the rules that tie presence to the log (join, leave, send).
//! - [`protocol`]: the wire contract and input validation.
//! - [`error`]: one error type with a status and a machine `code`.
//! - [`transport`]: thin adapters from the log to each wire shape.
//! - [`config`]: every flag and limit.
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

pub mod assets;
pub mod config;
pub mod demo;
pub mod error;
pub mod journal;
pub mod log;
pub mod middleware;
pub mod presence;
pub mod protocol;
pub mod room;
pub mod stats;
pub mod transport;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_server::ServerHandle;
use actix_service::{fn_service, map_config, IntoServiceFactory as _, ServiceFactoryExt as _};
use actix_web::dev::AppConfig;
use actix_web::{web, App, HttpResponse};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::ApiError;
pub use log::{EventLog, MemoryLog};

use transport::AppState;

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

    /// The message log it serves.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        self.state.log()
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
/// With `config.data_dir` set, the log is a durable journal there.
pub fn serve(listener: TcpListener, config: Config) -> std::io::Result<Server> {
    let history = config.history as usize;
    let log: Arc<dyn EventLog> = match &config.data_dir {
        Some(dir) => Arc::new(journal::JournalLog::open(journal::JournalOptions {
            recover: config.journal_recover,
            ..journal::JournalOptions::new(dir, history)
        })?),
        None => Arc::new(MemoryLog::new(history)),
    };
    serve_with_log(listener, config, log)
}

/// Serves pushlab on `listener` over a given event store.
pub fn serve_with_log(
    listener: TcpListener,
    config: Config,
    log: Arc<dyn EventLog>,
) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let room = room::Room::new(log, config.rate_limit);
    room.spawn_reaper(config.presence_timeout(), shutdown.clone());
    if config.demo {
        demo::spawn(room.clone(), config.demo_rate, shutdown.clone());
    }
    let workers = config.workers;
    let max_connections = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    // Built once, outside the factory: every worker must share one log.
    let state = web::Data::new(AppState {
        room,
        config: Arc::new(config),
        stats: Default::default(),
        limit: middleware::ConnectionLimit::new(max_connections),
        shutdown,
    });
    let app_state = state.clone();
    let mut server = actix_server::Server::build()
        .shutdown_timeout(5)
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
            HttpService::build()
                // Notice promptly when a client holding a long-poll or
                // stream goes away.
                .h1_allow_half_closed(false)
                .client_request_timeout(Duration::from_secs(5))
                // A push server writes small messages that must go out now:
                // with Nagle, a write waits for the previous one's ACK, which
                // the client may delay by up to 40 ms.
                .tcp_nodelay(true)
                .local_addr(addr)
                // WebSocket upgrades skip the router: the socket task takes
                // the connection itself (see `transport::ws`). The handshake
                // future is boxed because every connection's HTTP/1 state
                // has room for it inline otherwise: 2 KiB more per held
                // long-poll or stream.
                .upgrade(fn_service(move |(req, framed)| {
                    Box::pin(transport::ws::upgrade(upgrade_state.clone(), req, framed))
                        as futures_util::future::LocalBoxFuture<'static, _>
                }))
                .finish(map_config(
                    app(state)
                        .into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    |_| AppConfig::default(),
                ))
                .tcp()
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

/// The application for one worker: every endpoint, behind the connection
/// limit and CORS grants.
fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = state.limit.clone();
    let config = state.config.clone();
    App::new()
        .app_data(state)
        .configure(routes)
        .wrap_fn(move |req, srv| {
            use actix_web::dev::Service as _;
            let origin = middleware::granted_origin(&req, &config);
            let outcome = match &origin {
                Some(origin) if middleware::is_preflight(&req) => {
                    Err(req.into_response(middleware::preflight_response(origin.clone())))
                }
                _ => match limit.acquire() {
                    Some(permit) => Ok((srv.call(req), permit)),
                    None => Err(req.into_response(middleware::at_capacity())),
                },
            };
            async move {
                let (call, permit) = match outcome {
                    Ok(admitted) => admitted,
                    Err(refused) => return Ok(refused),
                };
                let response = call.await?.map_into_boxed_body();
                let mut response = middleware::hold_permit(response, permit);
                if let Some(origin) = origin {
                    middleware::grant(&mut response, origin);
                }
                Ok(response)
            }
        })
}

/// Every endpoint. A known path with the wrong method answers 405, an
/// unknown one 404, both as JSON.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use transport::{longpoll, poll, sse, ws};
    cfg.app_data(web::QueryConfig::default().error_handler(transport::query_error))
        .service(endpoint("/healthz").route(web::get().to(transport::healthz)))
        .service(endpoint("/stats").route(web::get().to(transport::stats)))
        .service(endpoint("/register").route(web::post().to(transport::register)))
        .service(endpoint("/send").route(web::post().to(transport::send)))
        .service(endpoint("/poll").route(web::get().to(poll::poll)))
        .service(endpoint("/longpoll").route(web::get().to(longpoll::long_poll)))
        .service(endpoint("/sse").route(web::get().to(sse::sse_stream)))
        .service(endpoint("/ws").route(web::get().to(ws::websocket)))
        .service(endpoint("/").route(web::get().to(assets::index)))
        .service(endpoint("/{path:.*}").route(web::get().to(assets::file)))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::NotFound("this path".into()))
        }));
}

fn endpoint(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async { method_not_allowed() }))
}

/// The 405 answer for a known path asked with the wrong method.
pub(crate) fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(serde_json::json!({
        "error": "this endpoint does not take that method",
        "code": "method_not_allowed",
    }))
}
