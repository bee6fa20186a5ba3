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
//!   - [`conn`]: every accepted connection, HTTP or WebSocket: its bytes
//!     counted, and cut when its client stops taking what the server writes.
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
mod server;
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

pub use crate::config::Config;
pub use crate::core::error::ApiError;
pub use crate::core::log::{EventLog, MemoryLog};
pub use crate::core::names::RoomName;
pub use crate::server::{serve, serve_with_store, Server};
