//! Every flag, default and limit in one place.
//!
//! Each flag can also come from a `PUSHLAB_*` environment variable; `--help`
//! explains them all. Tests build a [`Config`] with [`Config::default`] and
//! change the fields they care about.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::core::names::RoomName;

/// How often an idle SSE stream gets a comment line, to keep proxies from
/// closing it and to notice a vanished client.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);
/// How often the server pings each WebSocket.
pub const WS_PING_INTERVAL: Duration = Duration::from_secs(15);
/// A WebSocket that misses this many pings in a row is closed.
pub const WS_MISSED_PONGS: u32 = 2;
/// The long-poll timeout a client gets when it does not ask for one, in seconds.
pub const DEFAULT_LONGPOLL_SECS: f64 = 25.0;
/// The bytes one room's window keeps by default (`--room-bytes`), 8 MiB:
/// about 500 of the largest chat messages (2000 emoji), or every one of
/// `--history`'s 10,000 mousemoves (about 400 B each, overhead included).
pub const DEFAULT_ROOM_BYTES: u64 = 8 * 1024 * 1024;
/// The bytes every room's window on a node keeps together by default
/// (`--total-bytes`), 2 GiB: a twelfth of this 24 GiB machine, room for
/// 256 full rooms at once; with the 64 KiB of chat history each room keeps
/// besides, 1000 rooms stay under 2.1 GiB.
pub const DEFAULT_TOTAL_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The smallest `--room-bytes`, in bytes: one largest message fits.
pub const MIN_ROOM_BYTES: u64 = 64 * 1024;

/// pushlab's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pushlab",
    version,
    about = "Serve one message log over short polling, long polling, Server-Sent Events and WebSocket, with a browser client that measures each.",
    long_about = None
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PUSHLAB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// How many recent events the log keeps. A reader whose cursor is older
    /// gets `gap: true`. The last 100 chat messages are kept regardless.
    #[arg(long, env = "PUSHLAB_HISTORY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub history: u64,

    /// The bytes one room's window of recent events may hold in memory: the
    /// events' JSON, their parsed text and a fixed per-event overhead. The
    /// oldest events are trimmed past it, as past `--history`, and a reader
    /// behind gets `gap: true`. A journal keeps at most about this plus two
    /// segments on disk per room, and Redis each room's stream within it.
    #[arg(long, env = "PUSHLAB_ROOM_BYTES", default_value_t = DEFAULT_ROOM_BYTES, value_parser = clap::value_parser!(u64).range(MIN_ROOM_BYTES..))]
    pub room_bytes: u64,

    /// The bytes every room's window on this node may hold together, in
    /// bytes. An append that would pass it trims its own room's oldest
    /// events first; if the room has none left, it is refused with 503
    /// `store_full` (and `Retry-After`).
    #[arg(long, alias = "log-bytes", env = "PUSHLAB_TOTAL_BYTES", default_value_t = DEFAULT_TOTAL_BYTES, value_parser = clap::value_parser!(u64).range(MIN_ROOM_BYTES..))]
    pub total_bytes: u64,

    /// Seconds a session may go with no open connection and no request before
    /// it is ended and its `leave` is sent.
    #[arg(long, env = "PUSHLAB_PRESENCE_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds)]
    pub presence_timeout: f64,

    /// The longest a long-poll is held, in seconds. A client's `timeout=` is
    /// capped at this; without one it gets 25 s or this, whichever is less.
    #[arg(long, env = "PUSHLAB_LONGPOLL_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub longpoll_timeout: f64,

    /// Events per second each session may send (mousemoves and messages),
    /// with bursts of twice that. 0 turns the limit off.
    #[arg(long, env = "PUSHLAB_RATE_LIMIT", default_value_t = 60)]
    pub rate_limit: u32,

    /// An origin (such as `https://example.org`) whose pages may use this
    /// server: WebSocket upgrades from it are accepted and HTTP answers carry
    /// CORS headers for it. Repeat for several; comma-separated in the
    /// environment variable.
    #[arg(
        long = "allowed-origin",
        env = "PUSHLAB_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Requests in flight at once, held long-polls and open streams and
    /// sockets included. Past it, HTTP answers 503 and upgrades are refused.
    #[arg(long, env = "PUSHLAB_MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Seconds a WebSocket may take nothing of what is queued for it before
    /// it is closed (1008, "too slow"): the socket's send timeout, run only
    /// while a write waits and restarted whenever the client takes some.
    /// With its queue full it simply stops being fed meanwhile, and resumes
    /// from its cursor when it reads again.
    #[arg(long, env = "PUSHLAB_SLOW_CLIENT_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub slow_client_timeout: f64,

    /// Keep the log in a durable journal in this directory: every event is
    /// synced to disk before it is acknowledged, and the log (with its epoch)
    /// survives restarts. Without it the log lives in memory only.
    #[arg(long, env = "PUSHLAB_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Start even though the journal is damaged before its end (a torn tail
    /// is cut without it): the damaged segment is moved aside as
    /// `*.damaged`, the chat history before the damage is kept, and a new
    /// epoch starts above every seq seen, so clients see a gap and no seq is
    /// handed out twice. Without it the server refuses to start.
    #[arg(long, env = "PUSHLAB_JOURNAL_RECOVER")]
    pub journal_recover: bool,

    /// Keep every room's log in this Redis (`redis://HOST:PORT/DB`), so
    /// several pushlab nodes behind one proxy serve the same rooms. Without
    /// it the log lives in this process (or in `--data-dir`).
    #[arg(long, env = "PUSHLAB_REDIS", conflicts_with = "data_dir")]
    pub redis: Option<String>,

    /// HTTP worker threads. Defaults to the number of CPU cores.
    #[arg(long, env = "PUSHLAB_WORKERS")]
    pub workers: Option<usize>,

    /// Run a demo bot that moves its cursor and chats, so the transports can
    /// be compared without a second person.
    #[arg(long, env = "PUSHLAB_DEMO")]
    pub demo: bool,

    /// Cursor moves per second the demo bot makes.
    #[arg(long, env = "PUSHLAB_DEMO_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub demo_rate: u32,

    /// The room the demo bot joins.
    #[arg(long, env = "PUSHLAB_DEMO_ROOM", default_value = "lobby", value_parser = parse_room)]
    pub demo_room: RoomName,

    /// Rooms open at once, the lobby included. Past it, opening another
    /// answers 503 `too_many_rooms`.
    #[arg(long, env = "PUSHLAB_MAX_ROOMS", default_value_t = 1000, value_parser = clap::value_parser!(usize))]
    pub max_rooms: usize,

    /// Rooms one client IP may have opened that are still open. 0 for no
    /// limit.
    #[arg(long, env = "PUSHLAB_IP_ROOMS", default_value_t = 50)]
    pub ip_rooms: u32,

    /// Seconds a room with no session and no reader stays open before it is
    /// closed and its memory comes back. Its log goes with it, unless
    /// `--data-dir` keeps it.
    #[arg(long, env = "PUSHLAB_ROOM_IDLE_TIMEOUT", default_value_t = 300.0, value_parser = positive_seconds)]
    pub room_idle_timeout: f64,

    /// Seconds a closed room's kept log (its journal under `--data-dir`)
    /// stays on disk unused before it is deleted; 0 keeps it forever. The
    /// lobby's is never deleted, nor an open room's. Default 7 days.
    #[arg(long, env = "PUSHLAB_ROOM_RETENTION", default_value_t = 604_800)]
    pub room_retention: u64,

    /// A host name (as in the `Host` header) this server answers to, besides
    /// IP addresses, `localhost` and `*.localhost`, which it always answers
    /// to. Any other `Host` gets 403 `forbidden_host` on every endpoint, so a
    /// page on a rebound DNS name cannot use the server. Repeat for several;
    /// `*` answers to any host.
    #[arg(
        long = "allowed-host",
        env = "PUSHLAB_ALLOWED_HOST",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// The address of a reverse proxy in front of pushlab. Only for requests
    /// from such an address is the client's IP taken from
    /// `X-Forwarded-For`. Repeat for several.
    #[arg(
        long = "trusted-proxy",
        env = "PUSHLAB_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Registrations each client IP may make per minute. 0 for no limit.
    #[arg(long, env = "PUSHLAB_IP_REGISTRATIONS", default_value_t = 300)]
    pub ip_registrations: u32,

    /// Live sessions each client IP may hold at once. 0 for no limit.
    #[arg(long, env = "PUSHLAB_IP_SESSIONS", default_value_t = 500)]
    pub ip_sessions: u32,

    /// Requests in flight from each client IP, held long-polls, streams and
    /// sockets included. 0 for no limit.
    #[arg(long, env = "PUSHLAB_IP_CONNECTIONS", default_value_t = 1000)]
    pub ip_connections: u32,

    /// Events per second all sessions of one client IP may send together,
    /// with bursts of twice that. 0 for no limit.
    #[arg(long, env = "PUSHLAB_IP_RATE_LIMIT", default_value_t = 3000)]
    pub ip_rate_limit: u32,

    /// Seconds an HTTP answer may wait for the client to take any of it
    /// before the connection is cut and its buffers freed. It runs between
    /// two successful writes, not over the whole answer: a slow client that
    /// keeps reading is never cut, nor one with nothing to receive (an idle
    /// connection, a held long-poll). WebSockets use --slow-client-timeout.
    #[arg(long, env = "PUSHLAB_SEND_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub send_timeout: f64,

    /// Seconds a request body may take to arrive in full. Past it the request
    /// is answered 408 (`body_timeout`) and the connection closes.
    #[arg(long, env = "PUSHLAB_BODY_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds)]
    pub body_timeout: f64,

    /// WebRTC signals (offers, answers, ICE candidates) per second each
    /// session may send, with bursts of twice that. 0 for no limit.
    #[arg(long, env = "PUSHLAB_SIGNAL_RATE", default_value_t = 20)]
    pub signal_rate: u32,

    /// A STUN or TURN server for the pages' WebRTC peer connections, told to
    /// every page by `GET /config`: `stun:host:3478`; `turn:host:3478` with
    /// `--turn-secret`, which mints each page credentials that expire; or
    /// `turn:host:3478?username=U&credential=P`, static credentials that
    /// every page is told as they are (any other query parameter, such as
    /// `transport=tcp`, stays in the URL). Repeat for several;
    /// comma-separated in the environment variable. None by default: peers
    /// on one machine or one LAN reach each other by their host candidates.
    #[arg(
        long = "ice-server",
        env = "PUSHLAB_ICE_SERVER",
        value_delimiter = ',',
        value_parser = IceServer::parse
    )]
    pub ice_servers: Vec<IceServer>,

    /// The secret shared with the TURN servers (coturn's
    /// `static-auth-secret`, with `use-auth-secret`). With it, `GET /config`
    /// gives each page TURN credentials that expire after `--turn-ttl`
    /// seconds (the TURN REST API scheme: the username is the expiry time,
    /// the password its HMAC-SHA1 under this secret), and no static
    /// password is ever handed out. Only for TURN servers given without
    /// `username` and `credential`.
    #[arg(long, env = "PUSHLAB_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// How long the TURN credentials minted with `--turn-secret` stay
    /// valid, in seconds (a day by default, as the TURN REST API suggests:
    /// a page keeps its credentials for as long as it stays open).
    #[arg(long, env = "PUSHLAB_TURN_TTL", default_value_t = DEFAULT_TURN_TTL_SECS, value_parser = clap::value_parser!(u64).range(60..=7 * 86_400))]
    pub turn_ttl: u64,

    /// Simulated network delay, in milliseconds each way: every byte from a
    /// client reaches the server this much later, and every byte to it
    /// reaches it this much later, on every TCP connection (see
    /// `src/net/delay.rs`); a WebTransport session holds its events and the
    /// client's messages as long.
    /// For showing in class what a round trip costs each transport. 0 (the
    /// default) adds nothing.
    #[arg(long, env = "PUSHLAB_DELAY_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub delay_ms: u64,

    /// The setting for following docs/protocol.md by hand: sessions live
    /// [`WALKTHROUGH_PRESENCE_SECS`] seconds without a request, so a person
    /// typing the examples one by one keeps them (unless
    /// `--presence-timeout` asks for longer still).
    #[arg(long, env = "PUSHLAB_WALKTHROUGH")]
    pub walkthrough: bool,

    /// Also serve WebTransport over HTTP/3, on UDP at the same port number
    /// as `--addr` (session path `/wt`), with the certificate HTTPS uses
    /// (`--tls-cert`, or pushlab's own self-signed one, whose SHA-256 hash
    /// pages get from `GET /config`). Off by default, as QUIC needs TLS and
    /// a UDP port; it works from plain-HTTP pages on `localhost` too.
    #[arg(long, env = "PUSHLAB_WEBTRANSPORT")]
    pub webtransport: bool,

    /// The largest datagram a WebTransport client may send, in bytes. A
    /// bigger one closes its session (1009, `too_large`).
    #[arg(long, env = "PUSHLAB_WT_DATAGRAM_BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(64..=65_536))]
    pub wt_datagram_bytes: u32,

    /// Streams a WebTransport client may have open at once in one session,
    /// for what it sends. Past it, opening another waits (QUIC's stream
    /// limit) until one is finished.
    #[arg(long, env = "PUSHLAB_WT_STREAMS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub wt_streams: u32,

    /// QUIC handshakes one client address may have in flight (connections
    /// that have not yet asked for a session). Past it, a new connection is
    /// refused at its first packet, before any cryptography is done. Open
    /// sessions count under `--ip-connections` instead.
    #[arg(long, env = "PUSHLAB_WT_IP_HANDSHAKES", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub wt_ip_handshakes: u32,

    /// Serve HTTPS on `--addr` instead of plain HTTP, offering HTTP/2 and
    /// HTTP/1.1 (ALPN). Without `--tls-cert`, pushlab makes its own
    /// self-signed certificate for this machine's names and addresses,
    /// valid for 14 days, and prints its SHA-256 fingerprint.
    #[arg(long, env = "PUSHLAB_TLS")]
    pub tls: bool,

    /// A PEM file with the certificate chain to serve HTTPS with (the
    /// server's certificate first), for example from mkcert or a real CA.
    /// Implies `--tls`; needs `--tls-key`.
    #[arg(long, env = "PUSHLAB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// A PEM file with the private key of `--tls-cert` (PKCS#8, PKCS#1 or
    /// SEC1).
    #[arg(long, env = "PUSHLAB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The host name (or address) pages reach this node's WebTransport at,
    /// which `GET /config` then gives them: for several nodes behind one
    /// proxy, where a page's own host is the proxy's, which cannot pass
    /// QUIC on. Each node names itself (`node-a.lab.example`), so a page
    /// opens its session on the node that answered its `/config`, whose
    /// certificate hash it holds. This node answers to the name (as to an
    /// `--allowed-host`) and its self-signed certificate includes it. The
    /// proxy's origin must be an `--allowed-origin`. Without it, pages use
    /// their own host.
    #[arg(long, env = "PUSHLAB_WT_HOST", value_parser = parse_public_host)]
    pub wt_host: Option<String>,

    /// With `--tls`: also serve plain HTTP/1.1 on this address, the same
    /// server (the same rooms, limits and checks) reached another way, so a
    /// page can send the same request over HTTP/2 and over HTTP/1.1 and the
    /// class can compare their bytes (the compare page's HTTP/1.1 against
    /// HTTP/2 card, which learns its port from `GET /config`). A page on
    /// `https://127.0.0.1` or `https://localhost` may call it; browsers
    /// block plain-HTTP requests from an `https://` page on any other host.
    #[arg(long = "http1-addr", env = "PUSHLAB_HTTP1_ADDR")]
    pub http1_addr: Option<SocketAddr>,
}

/// A STUN or TURN server, as a page's `RTCPeerConnection` takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URL, without the credentials.
    pub urls: String,
    /// The TURN username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// Parses `scheme:host[:port][?query]`, taking `username` and
    /// `credential` out of the query. A TURN server needs both.
    pub fn parse(raw: &str) -> Result<IceServer, String> {
        let (base, query) = match raw.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (raw, None),
        };
        let (scheme, host) = base
            .split_once(':')
            .ok_or_else(|| format!("{raw:?} is not a stun: or turn: URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
            return Err(format!(
                "{raw:?} is not a stun:, stuns:, turn: or turns: URL"
            ));
        }
        if host.is_empty() || host.contains(['/', ' ', ',']) {
            return Err(format!("{raw:?} has no valid host"));
        }
        let (mut username, mut credential, mut kept) = (None, None, Vec::new());
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("username", value)) => username = Some(value.to_owned()),
                Some(("credential", value)) => credential = Some(value.to_owned()),
                _ if pair.is_empty() => {}
                _ => kept.push(pair),
            }
        }
        let is_turn = scheme.starts_with("turn");
        if is_turn && (username.is_none() != credential.is_none()) {
            return Err(format!(
                "{base:?}: a TURN server takes both ?username=U&credential=P, or neither (with --turn-secret)"
            ));
        }
        if !is_turn && (username.is_some() || credential.is_some()) {
            return Err(format!("{base:?}: a STUN server takes no credentials"));
        }
        let mut urls = format!("{scheme}:{host}");
        if !kept.is_empty() {
            urls.push('?');
            urls.push_str(&kept.join("&"));
        }
        Ok(IceServer {
            urls,
            username,
            credential,
        })
    }

    /// Whether it is a TURN server (`turn:` or `turns:`).
    pub fn is_turn(&self) -> bool {
        self.urls.starts_with("turn")
    }
}

/// How long minted TURN credentials stay valid by default, in seconds.
pub const DEFAULT_TURN_TTL_SECS: u64 = 86_400;

/// The longest `--delay-ms`, in milliseconds.
pub const MAX_DELAY_MS: u64 = 5000;

/// The presence timeout under `--walkthrough`, in seconds.
pub const WALKTHROUGH_PRESENCE_SECS: f64 = 600.0;

/// The name in a `Host` value: without its port, and without the brackets
/// of an IPv6 address.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The longest DNS name, in bytes.
const MAX_HOST_NAME: usize = 253;

/// A host as a URL names it: a DNS name, or an IP address (IPv6 in
/// brackets), with no scheme, port or path.
fn parse_public_host(raw: &str) -> Result<String, String> {
    let bare = raw.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        });
    }
    let labels_fit = raw.trim_end_matches('.').split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if raw.is_empty() || raw.len() > MAX_HOST_NAME || !labels_fit {
        return Err(format!(
            "{raw:?} is not a host name or IP address (no scheme, port or path: node-a.lab.example)"
        ));
    }
    Ok(raw.trim_end_matches('.').to_ascii_lowercase())
}

fn parse_room(raw: &str) -> Result<RoomName, String> {
    RoomName::parse(raw).map_err(|err| err.to_string())
}

fn positive_seconds(raw: &str) -> Result<f64, String> {
    let secs: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(secs)
    } else {
        Err("expected seconds greater than 0 and at most 86400".into())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            history: 10_000,
            room_bytes: DEFAULT_ROOM_BYTES,
            total_bytes: DEFAULT_TOTAL_BYTES,
            presence_timeout: 10.0,
            longpoll_timeout: 30.0,
            rate_limit: 60,
            allowed_origins: Vec::new(),
            max_connections: 20_000,
            slow_client_timeout: 30.0,
            data_dir: None,
            journal_recover: false,
            redis: None,
            workers: None,
            demo: false,
            demo_rate: 20,
            demo_room: RoomName::lobby(),
            max_rooms: 1000,
            ip_rooms: 50,
            room_idle_timeout: 300.0,
            room_retention: 604_800,
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            ip_registrations: 300,
            ip_sessions: 500,
            ip_connections: 1000,
            ip_rate_limit: 3000,
            send_timeout: 30.0,
            body_timeout: 10.0,
            signal_rate: 20,
            ice_servers: Vec::new(),
            turn_secret: None,
            turn_ttl: DEFAULT_TURN_TTL_SECS,
            delay_ms: 0,
            walkthrough: false,
            webtransport: false,
            wt_datagram_bytes: 1024,
            wt_streams: 4,
            wt_ip_handshakes: 16,
            tls: false,
            tls_cert: None,
            tls_key: None,
            http1_addr: None,
            wt_host: None,
        }
    }
}

impl Config {
    /// Checks what no single flag can: every TURN server has credentials,
    /// static or minted with `--turn-secret`. Says what to change if not.
    pub fn check(&self) -> Result<(), String> {
        for server in self.ice_servers.iter().filter(|s| s.is_turn()) {
            match (&server.username, &self.turn_secret) {
                (None, None) => {
                    return Err(format!(
                        "--ice-server {}: a TURN server needs --turn-secret (the secret shared with it), or ?username=U&credential=P",
                        server.urls
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "--ice-server {}: give its static credentials or --turn-secret, not both",
                        server.urls
                    ))
                }
                _ => {}
            }
        }
        if self.http1_addr.is_some() && !self.tls_enabled() {
            return Err(
                "--http1-addr adds a plain HTTP/1.1 listener beside HTTPS: it needs --tls (without it, --addr already serves plain HTTP/1.1)".into(),
            );
        }
        Ok(())
    }

    /// `--presence-timeout` as a duration, at least
    /// [`WALKTHROUGH_PRESENCE_SECS`] under `--walkthrough`.
    pub fn presence_timeout(&self) -> Duration {
        let secs = if self.walkthrough {
            self.presence_timeout.max(WALKTHROUGH_PRESENCE_SECS)
        } else {
            self.presence_timeout
        };
        Duration::from_secs_f64(secs)
    }

    /// Whether the server speaks HTTPS: `--tls`, or a certificate given.
    pub fn tls_enabled(&self) -> bool {
        self.tls || self.tls_cert.is_some()
    }

    /// `--delay-ms` as a duration, or `None` when there is no delay.
    pub fn delay(&self) -> Option<Duration> {
        (self.delay_ms > 0).then(|| Duration::from_millis(self.delay_ms))
    }

    /// `--room-bytes` and `--total-bytes` as the budget every window of
    /// this node shares.
    pub fn log_budget(&self) -> crate::core::log::LogBudget {
        let bytes = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
        crate::core::log::LogBudget::new(bytes(self.room_bytes), bytes(self.total_bytes))
    }

    /// `--room-idle-timeout` as a duration.
    pub fn room_idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.room_idle_timeout)
    }

    /// `--room-retention` as a duration; `None` (0) keeps kept logs forever.
    pub fn room_retention(&self) -> Option<Duration> {
        (self.room_retention > 0).then(|| Duration::from_secs(self.room_retention))
    }

    /// `--slow-client-timeout` as a duration.
    pub fn slow_client_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.slow_client_timeout)
    }

    /// `--longpoll-timeout` as a duration.
    pub fn longpoll_cap(&self) -> Duration {
        Duration::from_secs_f64(self.longpoll_timeout)
    }

    /// Whether this server answers to a `Host` header naming `host` (with or
    /// without a port): any IP address, `localhost` and `*.localhost`, and
    /// each `--allowed-host`.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<std::net::IpAddr>().is_ok() {
            // An IP address cannot be rebound to another server.
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost"
            || name.ends_with(".localhost")
            || self.wt_host.as_deref() == Some(name.as_str())
            || self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed == "*" || host_name(allowed).eq_ignore_ascii_case(&name))
    }

    /// Whether a page from `origin` may use this server across origins.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let parsed = Config::try_parse_from(["pushlab"]).unwrap();
        let default = Config::default();
        assert_eq!(parsed.addr, default.addr);
        assert_eq!(parsed.history, default.history);
        assert_eq!(parsed.room_bytes, default.room_bytes);
        assert_eq!(parsed.total_bytes, default.total_bytes);
        assert_eq!(parsed.presence_timeout, default.presence_timeout);
        assert_eq!(parsed.longpoll_timeout, default.longpoll_timeout);
        assert_eq!(parsed.rate_limit, default.rate_limit);
        assert_eq!(parsed.ip_registrations, default.ip_registrations);
        assert_eq!(parsed.ip_sessions, default.ip_sessions);
        assert_eq!(parsed.ip_connections, default.ip_connections);
        assert_eq!(parsed.ip_rate_limit, default.ip_rate_limit);
        assert_eq!(parsed.demo_room, default.demo_room);
        assert_eq!(parsed.max_rooms, default.max_rooms);
        assert_eq!(parsed.ip_rooms, default.ip_rooms);
        assert_eq!(parsed.room_idle_timeout, default.room_idle_timeout);
        assert_eq!(parsed.room_retention, default.room_retention);
        assert_eq!(parsed.signal_rate, default.signal_rate);
        assert_eq!(parsed.ice_servers, default.ice_servers);
        assert_eq!(parsed.delay_ms, default.delay_ms);
        assert_eq!(parsed.walkthrough, default.walkthrough);
    }

    #[test]
    fn ice_servers_take_turn_credentials_from_the_query() {
        let cfg = Config::try_parse_from([
            "pushlab",
            "--ice-server",
            "stun:stun.example:3478",
            "--ice-server",
            "turn:turn.example:3478?transport=tcp&username=u&credential=p",
        ])
        .unwrap();
        assert_eq!(
            cfg.ice_servers,
            [
                IceServer {
                    urls: "stun:stun.example:3478".into(),
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: "turn:turn.example:3478?transport=tcp".into(),
                    username: Some("u".into()),
                    credential: Some("p".into()),
                },
            ]
        );
        for bad in [
            "http://stun.example",
            "turn:turn.example:3478?username=u",
            "stun:stun.example?username=u&credential=p",
            "stun:",
        ] {
            assert!(IceServer::parse(bad).is_err(), "{bad}");
        }
        // A TURN server with no credentials at all parses, for
        // --turn-secret, but a config without the secret is refused.
        let bare = Config::try_parse_from(["pushlab", "--ice-server", "turn:turn.example:3478"]);
        assert!(bare.unwrap().check().is_err());
    }

    #[test]
    fn wt_host_takes_a_name_or_an_address_and_nothing_else() {
        for (raw, kept) in [
            ("node-a.lab.example", "node-a.lab.example"),
            ("NODE-A.lab.example.", "node-a.lab.example"),
            ("192.168.1.20", "192.168.1.20"),
            ("::1", "[::1]"),
            ("[fe80::1]", "[fe80::1]"),
        ] {
            assert_eq!(parse_public_host(raw).as_deref(), Ok(kept), "{raw}");
        }
        for bad in [
            "",
            "https://node-a",
            "node-a:4433",
            "node-a/wt",
            "-node",
            "a..b",
            "node a",
        ] {
            assert!(parse_public_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_walkthrough_setting_keeps_sessions_for_ten_minutes() {
        let walk = Config::try_parse_from(["pushlab", "--walkthrough"]).unwrap();
        assert_eq!(walk.presence_timeout(), Duration::from_secs(600));
        let longer =
            Config::try_parse_from(["pushlab", "--walkthrough", "--presence-timeout", "900"])
                .unwrap();
        assert_eq!(longer.presence_timeout(), Duration::from_secs(900));
        let delayed = Config::try_parse_from(["pushlab", "--delay-ms", "100"]).unwrap();
        assert_eq!(delayed.delay(), Some(Duration::from_millis(100)));
        assert_eq!(Config::default().delay(), None);
        assert!(Config::try_parse_from(["pushlab", "--delay-ms", "5001"]).is_err());
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let cfg = Config::try_parse_from([
            "pushlab",
            "--addr",
            "127.0.0.2:9000",
            "--allowed-origin",
            "http://a.test",
            "--allowed-origin",
            "http://b.test",
            "--presence-timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(cfg.addr.port(), 9000);
        assert!(cfg.origin_allowed("http://b.test"));
        assert!(!cfg.origin_allowed("http://c.test"));
        assert_eq!(cfg.presence_timeout(), Duration::from_millis(500));
        assert!(Config::try_parse_from(["pushlab", "--history", "0"]).is_err());
        assert!(Config::try_parse_from(["pushlab", "--room-bytes", "1000"]).is_err());
        let budget = Config::try_parse_from(["pushlab", "--log-bytes", "1048576"])
            .unwrap()
            .log_budget();
        assert_eq!(budget.node.total(), 1 << 20);
        assert_eq!(budget.room_bytes, DEFAULT_ROOM_BYTES as usize);
        assert!(Config::try_parse_from(["pushlab", "--longpoll-timeout", "-1"]).is_err());
    }

    #[test]
    fn the_server_answers_to_ip_addresses_localhost_and_listed_hosts_only() {
        let config = Config::try_parse_from(["pushlab", "--allowed-host", "pushlab.test"]).unwrap();
        for host in [
            "127.0.0.1:8080",
            "192.168.1.20:8080",
            "[::1]:8080",
            "[fe80::1]",
            "localhost",
            "LOCALHOST:3000",
            "app.localhost:8080",
            "pushlab.test:8080",
            "PushLab.Test",
        ] {
            assert!(config.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "pushlab.test.evil",
        ] {
            assert!(!config.host_allowed(host), "{host}");
        }
        let node = Config::try_parse_from(["pushlab", "--wt-host", "Node-A.Lab.Test"]).unwrap();
        assert_eq!(node.wt_host.as_deref(), Some("node-a.lab.test"));
        assert!(node.host_allowed("node-a.lab.test:4433"));
        assert!(!node.host_allowed("node-b.lab.test"));
        let open = Config::try_parse_from(["pushlab", "--allowed-host", "*"]).unwrap();
        assert!(open.host_allowed("anything.example"));
    }
}
