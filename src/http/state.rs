//! What every handler shares, built once before the workers start so that
//! every worker serves the same log.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use std::net::IpAddr;

use crate::config::Config;
use crate::core::error::ApiError;
use crate::core::log::NodeBytes;
use crate::core::log_store::StoreMetrics;
use crate::core::names::RoomName;
use crate::core::presence::SessionId;
use crate::core::room::Room;
use crate::core::rooms::Rooms;
use crate::http::answers::SharedAnswers;
use crate::http::stats::{Counters, Stats};
use crate::net::limits::ConnectionLimit;
use crate::net::tls::ServerCertificate;
use crate::net::traffic::Clients;
use crate::net::traffic::Transport;

/// The server's shared state.
pub struct AppState {
    /// Every open room.
    pub rooms: Rooms,
    /// The settings the server started with.
    pub config: Arc<Config>,
    /// Counters per transport.
    pub stats: Arc<Stats>,
    /// Requests in flight, against `--max-connections`.
    pub limit: Arc<ConnectionLimit>,
    /// Scrapes of `/metrics` in flight, against their own small limit.
    pub scrapes: Arc<ConnectionLimit>,
    /// Cancelled when the server begins to shut down: held long-polls answer,
    /// streams end and sockets close with 1001.
    pub shutdown: CancellationToken,
    /// Every client's exact traffic, by the `client=` its requests name.
    pub clients: Arc<Clients>,
    /// The address the server is bound to, for the join URL.
    pub addr: std::net::SocketAddr,
    /// The bytes every room's window holds, against `--total-bytes`.
    pub log_bytes: Arc<NodeBytes>,
    /// The store's own counters, for `/metrics`; `None` when it keeps none.
    pub store_metrics: Option<Arc<dyn StoreMetrics>>,
    /// The certificate HTTPS is served with (`--tls`); `None` for plain
    /// HTTP.
    pub certificate: Option<Arc<ServerCertificate>>,
    /// Where pages find WebTransport, told by `GET /config`; `None`
    /// without `--webtransport`.
    pub webtransport: Option<WebTransportPage>,
    /// The plain HTTP/1.1 listener beside HTTPS (`--http1-addr`), told by
    /// `GET /config`; `None` without it.
    pub http1: Option<std::net::SocketAddr>,
    /// The `--demo` bot's room and publish rate; `None` without `--demo`.
    pub demo: Option<DemoRate>,
    /// The last poll answer made, shared by the held long-polls that read
    /// the same events.
    pub answers: SharedAnswers,
}

/// The `--demo` bot's publish rate, which `POST /demo` sets and the bot
/// follows at once.
#[derive(Debug, Clone)]
pub struct DemoRate {
    /// The room the bot publishes in.
    pub room: RoomName,
    /// Events a second; 0 while the bot is away.
    pub rate: Arc<watch::Sender<u32>>,
}

impl DemoRate {
    /// The bot in `room`, starting at `rate` events a second.
    pub fn new(room: RoomName, rate: u32) -> Self {
        DemoRate {
            room,
            rate: Arc::new(watch::channel(rate).0),
        }
    }

    /// The rate now, in events a second.
    pub fn now(&self) -> u32 {
        *self.rate.borrow()
    }
}

/// What a page needs to open a WebTransport session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebTransportPage {
    /// The host pages open their sessions on (`--wt-host`); `None`: the
    /// page's own host.
    pub host: Option<String>,
    /// The UDP port: the same number as the HTTP listener's.
    pub port: u16,
    /// The SHA-256 hash of the server's certificate, in lowercase hex, for
    /// `serverCertificateHashes` when it is pushlab's own self-signed one;
    /// `None` for a certificate browsers trust by themselves.
    pub certificate_hash: Option<String>,
}

impl AppState {
    /// The room a request or connection uses: `room` (the lobby when
    /// absent), opened for `ip` if need be; a `session` must belong to it.
    pub async fn enter(
        &self,
        room: Option<&str>,
        session: Option<SessionId>,
        ip: IpAddr,
    ) -> Result<Room, ApiError> {
        let name = match room {
            Some(room) => RoomName::parse(room)?,
            None => RoomName::lobby(),
        };
        self.rooms.enter(&name, session, Some(ip)).await
    }

    /// The counters of one transport.
    pub fn counters(&self, transport: Transport) -> &Counters {
        self.stats.of(transport)
    }
}
