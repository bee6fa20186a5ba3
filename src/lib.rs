//! pushlab: one message log, served to browsers over short polling, long
//! polling, Server-Sent Events and WebSocket, so the four can be compared.
//!
//! # Layout
//!
//! `src/` is a house of layers, one folder each; a layer imports only from
//! the layers below it (`tests/api/layers.rs` checks it from the source,
//! and `python3 ../shared/tools/modgraph.py src` finds no import circle):
//!
//! ```text
//! server/     the assembly: state built once, the router, actix-http
//! transport/  classroom/      the wire shapes; the lecture's endpoints
//! http/       endpoints, admission, state, the small handlers
//! net/        the connection, its bytes, limits, delay
//! store/      memory, journal/, redis/: the backends
//! config      every flag and limit
//! core/       rooms, logs, sessions: no actix, no store, no socket
//! ```
//!
//! - `core` knows nothing of HTTP, sockets or a particular
//!   store:
//!   - [`error`]: the core's refusals, each with its machine `code`.
//!   - [`names`]: session ids, [`names::Name`], [`names::RoomName`] and
//!     [`names::MessageText`], with their rules.
//!   - [`log`]: the append-only message log, the [`log::EventLog`] trait
//!     (append, read since a cursor, wait for newer), [`log::MemoryLog`]
//!     and the one [`log::Reader`] every transport reads through.
//!   - [`directory`]: who is in a room: names unique, each session's own
//!     rate limit, a `join` and a `leave` written once. A room always
//!     holds one: the local directory on one node, the Redis store's on
//!     several.
//!   - [`presence`]: this node's view of the sessions: connections,
//!     cursors, idle time, per-address accounting.
//!   - [`log_store`]: the trait every backend implements, opening a room's
//!     log with its directory, and the counters a store may keep.
//!   - [`protocol`]: client and server messages, and input validation.
//!   - [`signals`]: the hub that passes WebRTC offers, answers and ICE
//!     candidates between two sessions of a room, outside the log.
//!   - [`room`]: join, send, leave and attach: the rules between the log,
//!     the directory, presence and the signal hub.
//!   - [`rooms`]: the registry: opens a room on first use within its caps,
//!     lists them, reclaims idle ones.
//! - `store`, chosen once from the config by `store::from_config`, each
//!   backend implementing the core's traits and importing nothing above
//!   them: `memory` (the default), [`journal`] (`--data-dir`, a durable
//!   journal per room) and `redis` (`--redis`, every room's log and
//!   sessions shared by several nodes, each log mirrored into each node).
//! - [`config`]: every flag, default and limit.
//! - `net`, under every connection and knowing nothing of routes or rooms:
//!   `conn` (the one connection type: bytes counted, the send timeout),
//!   `traffic` (the tallies per transport and per `client=`, and the one
//!   `Transport` enum), `limits` (places under `--max-connections`, what
//!   counts as one client address), `delay` (`--delay-ms`), `open_files`.
//! - `http`: `endpoints` (the table of paths, methods, transports and
//!   exemptions), `admission` (the one function where every request and
//!   upgrade enters: charge, `Host`, preflight, client IP, limits, route),
//!   `state`, `stats`, `http_error`, `body_timeout`, `api` (`/register`,
//!   `/send`, `/rooms`, `/stats`, `/config`, `/healthz`), `ice` (TURN
//!   credentials), `metrics` (`/metrics`), `assets` (`web/`, embedded),
//!   [`log_throttle`].
//! - `transport`: `poll`, `longpoll`, `sse`, `ws` (with [`ws_stream`], a
//!   socket's frames), `webtransport` (the QUIC endpoint and its sessions,
//!   with `--webtransport`), thin adapters from a reader to each wire shape
//!   over one shared opening (count, enter the room, attach).
//! - `classroom`: `/traffic`, `/time`, `/join`, `/qr.svg`, `/lecture.md`
//!   and `/lecture.html`, and the `--demo` bot, a client of a room like any other.
//! - `server`: [`serve`], the router built from the endpoint table, and the
//!   WebSocket upgrade beside it.
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
mod server;
mod store;
mod transport;

// The public API: what the binary, the tests, the benches and the tool
// crates use. Everything else is private to the crate.
pub use crate::classroom::{join_urls, local_addresses};
pub use crate::core::{
    directory, error, log, log_store, names, presence, protocol, room, rooms, signals,
};
pub use crate::http::api::ReadQuery;
pub use crate::http::log_throttle;
pub use crate::store::journal;
pub use crate::transport::poll::batch_body;
/// The WebSocket read path, for the fuzz target.
pub use crate::transport::ws::stream as ws_stream;

pub use crate::config::Config;
pub use crate::core::error::ApiError;
pub use crate::core::log::{EventLog, MemoryLog};
pub use crate::core::names::RoomName;
pub use crate::server::{serve, serve_with_store, Server};
