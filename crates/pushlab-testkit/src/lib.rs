//! One client per pushlab transport, behind one interface: the [`Reader`]
//! that pushlab's API tests and its criterion benches both use.
//!
//! A reader follows the log over short polling, long polling, Server-Sent
//! Events or WebSocket and splits what it receives into log events (with a
//! `seq`) and control messages (without). It keeps the cursor, takes the
//! epoch from the first answer, and reconnects from its cursor, so a
//! scenario written once runs over all four transports.
//!
//! It knows the wire contract (`docs/protocol.md`) and nothing of the
//! server's code: it does not depend on `pushlab`, so whatever uses it
//! reaches the server only as any other client would. A failed request or
//! a broken contract panics, since its callers are tests and benches.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The QUIC library the WebTransport client is built on, for tests that
/// reach below [`WtSession`].
pub use wtransport;

/// How long a reader waits for something that should happen promptly. Only
/// a bound on hanging: nothing is asserted about how fast it happens.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a short-poll reader waits after an empty answer before it asks
/// again, unless it polls on a fixed interval ([`Reader::poll_every`]).
const POLL_PAUSE_WHEN_EMPTY: Duration = Duration::from_millis(20);

/// How long a long-poll asks to be held, in seconds, unless
/// [`Reader::long_poll_timeout`] says otherwise.
const LONG_POLL_TIMEOUT_SECS: u32 = 5;

/// A running pushlab server that readers connect to.
pub trait Target {
    /// Where it listens.
    fn addr(&self) -> SocketAddr;

    /// The HTTP client the readers use; a clone shares its connection pool.
    fn http(&self) -> reqwest::Client;

    /// The room the readers read; `None` for the server's default, the lobby.
    fn room(&self) -> Option<String> {
        None
    }

    /// `http`, or `https` for a server started with `--tls`.
    fn scheme(&self) -> &'static str {
        "http"
    }

    /// How WebSocket readers make TLS connections (`wss:`), for a server
    /// whose certificate the client must be told to trust; `None` for the
    /// default.
    fn ws_connector(&self) -> Option<tokio_tungstenite::Connector> {
        None
    }

    /// Every node that serves the same rooms. A reader sends each request,
    /// and opens each stream or socket, to one of them at random, as a
    /// round-robin proxy with no sticky sessions would.
    fn nodes(&self) -> Vec<SocketAddr> {
        vec![self.addr()]
    }
}

/// One of `0..n`, at random: for spreading requests over nodes.
pub fn pick(n: usize) -> usize {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Each `RandomState` is keyed afresh, so hashing nothing is random.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random % n.max(1) as u64) as usize
}

/// A server known only by its address, with a client of its own.
impl Target for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

/// The five transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Poll,
    LongPoll,
    Sse,
    Ws,
    /// WebTransport, on a server started with `--webtransport`.
    Wt,
}

/// Every transport, for scenarios that run over all of them.
pub const ALL: [Kind; 4] = [Kind::Poll, Kind::LongPoll, Kind::Sse, Kind::Ws];

/// Every transport, WebTransport included: for servers started with
/// `--webtransport`.
pub const EVERY: [Kind; 5] = [Kind::Poll, Kind::LongPoll, Kind::Sse, Kind::Ws, Kind::Wt];

/// Where a reader starts.
#[derive(Debug, Clone, Default)]
pub struct From {
    pub since: u64,
    pub epoch: Option<String>,
    pub session: Option<String>,
}

impl From {
    /// Starts after `since`, with no epoch and no session.
    pub fn since(since: u64) -> Self {
        From {
            since,
            ..Default::default()
        }
    }

    /// The same start, in `epoch`: a client that read this far before,
    /// perhaps before a restart.
    pub fn in_epoch(self, epoch: impl Into<String>) -> Self {
        From {
            epoch: Some(epoch.into()),
            ..self
        }
    }
}

type SseStream = Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// A WebSocket reader's socket.
pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A reader on one transport. Everything it receives is split into log
/// events (with `seq`) and control messages (without).
pub struct Reader {
    pub kind: Kind,
    /// `http://ADDR` (or `https://`) of each node it may use.
    bases: Vec<String>,
    /// How a WebSocket reader makes a `wss:` connection.
    ws_connector: Option<tokio_tungstenite::Connector>,
    /// The room it reads, if not the lobby.
    room: Option<String>,
    from: From,
    epoch: Option<String>,
    http: reqwest::Client,
    sse: Option<SseStream>,
    ws: Option<WsStream>,
    wt: Option<WtSession>,
    /// Short polling on a fixed interval instead of a pause after an empty
    /// answer.
    poll_every: Option<tokio::time::Interval>,
    long_poll_timeout_secs: u32,
    pub events: Vec<Value>,
    pub controls: Vec<Value>,
    /// Every `gap` flag a poll body carried.
    pub gaps: Vec<bool>,
}

impl Reader {
    /// Opens a reader: connects a stream or socket at once; a poll reader
    /// asks only when told to receive.
    pub async fn open(target: &impl Target, kind: Kind, from: From) -> Reader {
        let mut reader = Reader {
            kind,
            bases: target
                .nodes()
                .iter()
                .map(|addr| format!("{}://{addr}", target.scheme()))
                .collect(),
            ws_connector: target.ws_connector(),
            room: target.room(),
            epoch: from.epoch.clone(),
            from,
            http: target.http(),
            sse: None,
            ws: None,
            wt: None,
            poll_every: None,
            long_poll_timeout_secs: LONG_POLL_TIMEOUT_SECS,
            events: Vec::new(),
            controls: Vec::new(),
            gaps: Vec::new(),
        };
        reader.connect().await;
        reader
    }

    /// For short polling: asks every `interval`, whatever the answers, as a
    /// browser polling on a timer does. The first poll goes at once.
    pub fn poll_every(mut self, interval: Duration) -> Self {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.poll_every = Some(tick);
        self
    }

    /// For long polling: how long each request asks to be held, in seconds.
    pub fn long_poll_timeout(mut self, secs: u32) -> Self {
        self.long_poll_timeout_secs = secs;
        self
    }

    /// The node for the next request or connection, at random.
    fn base(&self) -> &str {
        &self.bases[pick(self.bases.len())]
    }

    /// The query every read sends: `?since=` the cursor, with the epoch,
    /// session and room the reader has.
    fn query(&self) -> String {
        let mut query = format!("?since={}", self.cursor());
        if let Some(epoch) = &self.epoch {
            query.push_str(&format!("&epoch={epoch}"));
        }
        if let Some(session) = &self.from.session {
            query.push_str(&format!("&session={session}"));
        }
        if let Some(room) = &self.room {
            query.push_str(&format!("&room={room}"));
        }
        query
    }

    /// (Re)opens the stream or socket from the current cursor, as a client
    /// does after its connection dropped.
    pub async fn connect(&mut self) {
        self.sse = None;
        self.ws = None;
        self.wt = None;
        let query = self.query();
        match self.kind {
            Kind::Sse => {
                let response = self
                    .http
                    .get(format!("{}/sse{query}", self.base()))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(response.headers()["content-type"], "text/event-stream");
                self.sse = Some(Box::pin(response.bytes_stream().eventsource()));
            }
            Kind::Ws => {
                let url = format!("{}/ws{query}", self.base().replacen("http", "ws", 1));
                let connector = self.ws_connector.clone();
                let (socket, _) =
                    tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
                        .await
                        .unwrap();
                self.ws = Some(socket);
            }
            Kind::Wt => {
                let base = self.base();
                let addr = base.split_once("://").map_or(base, |(_, host)| host);
                let addr = addr.parse().unwrap();
                let session = WtSession::connect(addr, &format!("/wt{query}"), None)
                    .await
                    .expect("the session opens");
                self.wt = Some(session);
            }
            Kind::Poll | Kind::LongPoll => {}
        }
    }

    /// The seq of the last event received, or where the reader started.
    pub fn cursor(&self) -> u64 {
        self.events
            .last()
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or(self.from.since)
    }

    /// The seqs of the events received, in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }

    fn take(&mut self, value: Value) {
        if value.get("seq").is_some() {
            self.events.push(value);
        } else {
            if let Some(epoch) = value["epoch"].as_str() {
                self.epoch = Some(epoch.to_owned());
            }
            self.controls.push(value);
        }
    }

    /// Receives once: one poll, one long-poll, or one SSE event or WS frame.
    pub async fn receive_once(&mut self) {
        match self.kind {
            Kind::Poll | Kind::LongPoll => self.poll_once().await,
            Kind::Sse => {
                let event = self
                    .sse
                    .as_mut()
                    .unwrap()
                    .next()
                    .await
                    .expect("the stream is open")
                    .unwrap();
                let value: Value = serde_json::from_str(&event.data).unwrap();
                if value.get("seq").is_some() {
                    assert_eq!(
                        event.id,
                        value["seq"].to_string(),
                        "an SSE event's id is its seq"
                    );
                } else {
                    assert!(
                        event.id.is_empty() || self.events.last().is_some(),
                        "controls carry no id"
                    );
                }
                self.take(value);
            }
            Kind::Ws => loop {
                match self
                    .ws
                    .as_mut()
                    .unwrap()
                    .next()
                    .await
                    .expect("the socket is open")
                    .unwrap()
                {
                    WsMessage::Text(text) => {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        self.take(value);
                        break;
                    }
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                    other => panic!("unexpected frame {other:?}"),
                }
            },
            Kind::Wt => {
                let value = self
                    .wt
                    .as_mut()
                    .unwrap()
                    .next()
                    .await
                    .expect("the session's stream is open");
                self.take(value);
            }
        }
    }

    /// One short or long poll from the cursor.
    async fn poll_once(&mut self) {
        let path = if self.kind == Kind::Poll {
            "poll"
        } else {
            "longpoll"
        };
        let mut query = self.query();
        if self.kind == Kind::LongPoll {
            query.push_str(&format!("&timeout={}", self.long_poll_timeout_secs));
        }
        if self.kind == Kind::Poll {
            if let Some(tick) = self.poll_every.as_mut() {
                tick.tick().await;
            }
        }
        let response = self
            .http
            .get(format!("{}/{path}{query}", self.base()))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}{query}: {body}");
        self.gaps.push(body["gap"].as_bool().unwrap());
        self.epoch = body["epoch"].as_str().map(str::to_owned);
        let events = body["events"].as_array().unwrap();
        for event in events {
            self.take(event.clone());
        }
        if self.kind == Kind::Poll && self.poll_every.is_none() && events.is_empty() {
            tokio::time::sleep(POLL_PAUSE_WHEN_EMPTY).await;
        }
    }

    /// Receives until the event with `seq` has arrived.
    pub async fn read_through(&mut self, seq: u64) -> &[Value] {
        self.read_through_within(seq, PATIENCE).await
    }

    /// Receives until the event with `seq` has arrived, for at most `patience`.
    pub async fn read_through_within(&mut self, seq: u64, patience: Duration) -> &[Value] {
        let kind = self.kind;
        tokio::time::timeout(patience, async {
            while self.cursor() < seq {
                self.receive_once().await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{kind:?} reader never reached seq {seq}; has {:?}",
                self.seqs()
            )
        });
        &self.events
    }

    /// Receives until a control message of type `control` has arrived, and
    /// takes it out of [`Reader::controls`].
    pub async fn control(&mut self, control: &str) -> Value {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(at) = self.controls.iter().position(|c| c["type"] == control) {
                    return self.controls.remove(at);
                }
                if self.kind == Kind::Poll || self.kind == Kind::LongPoll {
                    panic!("poll readers get no control messages");
                }
                self.receive_once().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {control} control arrived"))
    }

    /// For WebSocket readers: sends a frame.
    pub async fn ws_send(&mut self, value: &Value) {
        self.ws()
            .send(WsMessage::Text(value.to_string()))
            .await
            .unwrap();
    }

    /// For WebSocket readers: the socket itself.
    pub fn ws(&mut self) -> &mut WsStream {
        self.ws.as_mut().expect("a WebSocket reader")
    }

    /// For WebTransport readers: the session itself.
    pub fn wt(&mut self) -> &mut WtSession {
        self.wt.as_mut().expect("a WebTransport reader")
    }

    /// For WebSocket readers: gives up the reader and keeps the socket, for
    /// a client that goes on with frames of its own (a publisher).
    pub fn into_ws(self) -> WsStream {
        self.ws.expect("a WebSocket reader")
    }
}

/// Opens a WebSocket and registers over it, returning the reader and the welcome.
pub async fn ws_join(target: &impl Target, name: &str) -> (Reader, Value) {
    let mut reader = Reader::open(target, Kind::Ws, From::default()).await;
    reader.control("hello").await;
    reader
        .ws_send(&json!({"type": "register", "name": name}))
        .await;
    let welcome = reader.control("welcome").await;
    (reader, welcome)
}

/// A `redis-server` of a test's own, on a free port, killed when dropped.
/// Never the system's service: each test gets an empty one.
pub struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
    /// Where it keeps its data, when it persists.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one that keeps nothing on disk.
    pub fn start() -> RedisServer {
        Self::start_on(free_port(), None)
    }

    /// Starts one that logs every write to an append-only file in `dir`,
    /// synced before each answer, so a restart loses nothing.
    pub fn start_persistent(dir: &std::path::Path) -> RedisServer {
        Self::start_on(free_port(), Some(dir.to_owned()))
    }

    fn start_on(port: u16, dir: Option<std::path::PathBuf>) -> RedisServer {
        let mut command = std::process::Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--loglevel", "warning"])
            .stdout(std::process::Stdio::null());
        match &dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(dir),
            None => command
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(std::env::temp_dir()),
        };
        let child = command
            .spawn()
            .expect("redis-server runs (tests/run.sh installs it)");
        let server = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it at once (SIGKILL): what it had not persisted is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_on(self.port, self.dir.clone());
        *self = again;
    }

    /// Sends one inline command and returns the first line of the answer.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command).expect("redis-server answers")
    }

    fn try_command(&self, command: &str) -> std::io::Result<String> {
        use std::io::{BufRead as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let ready = self.try_command("PING").is_ok_and(|pong| pong == "+PONG");
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now: bound and released at once.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("port 0 binds")
}

/// A WebTransport session to pushlab, as a client sees it: the server's
/// stream read as lines of JSON, lines sent on a stream of the client's
/// own, datagrams both ways, and the close code the session ended with.
pub struct WtSession {
    pub connection: wtransport::Connection,
    lines: tokio::io::Lines<tokio::io::BufReader<wtransport::RecvStream>>,
    out: Option<wtransport::SendStream>,
}

/// Why a WebTransport session could not be opened.
#[derive(Debug)]
pub enum WtRefused {
    /// The QUIC connection was refused or failed (a flood refused at its
    /// first packet, for one).
    Connecting(wtransport::error::ConnectingError),
    /// The session opened, but the server's stream never came.
    NoStream(String),
}

impl WtSession {
    /// Opens a session to the server at `addr` (HTTP and UDP share the
    /// port) on `path_and_query` (such as `/wt?since=0`), trusting the
    /// certificate whose hash `GET /config` gives, and sending `origin` as
    /// a browser would.
    pub async fn connect(
        addr: SocketAddr,
        path_and_query: &str,
        origin: Option<&str>,
    ) -> Result<WtSession, WtRefused> {
        let hash = certificate_hash(addr).await;
        Self::connect_trusting(addr, hash, path_and_query, origin).await
    }

    /// [`WtSession::connect`] with the certificate's hash already known,
    /// so that nothing but the session is asked of the server.
    pub async fn connect_trusting(
        addr: SocketAddr,
        hash: wtransport::tls::Sha256Digest,
        path_and_query: &str,
        origin: Option<&str>,
    ) -> Result<WtSession, WtRefused> {
        let bind = SocketAddr::new(
            if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            0,
        );
        let config = wtransport::ClientConfig::builder()
            .with_bind_address(bind)
            .with_server_certificate_hashes([hash])
            .build();
        let endpoint = wtransport::Endpoint::client(config).expect("a client endpoint binds");
        let mut options = wtransport::endpoint::ConnectOptions::builder(format!(
            "https://{addr}{path_and_query}"
        ));
        if let Some(origin) = origin {
            options = options.add_header("origin", origin);
        }
        let connection = tokio::time::timeout(PATIENCE, endpoint.connect(options.build()))
            .await
            .expect("the session opens or fails promptly")
            .map_err(WtRefused::Connecting)?;
        let stream = tokio::time::timeout(PATIENCE, connection.accept_uni())
            .await
            .map_err(|_| WtRefused::NoStream("no stream in time".into()))?
            .map_err(|err| WtRefused::NoStream(err.to_string()))?;
        use tokio::io::AsyncBufReadExt as _;
        Ok(WtSession {
            connection,
            lines: tokio::io::BufReader::new(stream).lines(),
            out: None,
        })
    }

    /// The next line of the server's stream as JSON; `None` once the
    /// stream has ended (or the session closed).
    pub async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a line or the end arrives promptly")
            .ok()??;
        Some(serde_json::from_str(&line).expect("every line is JSON"))
    }

    /// Reads lines until one of type `kind` arrives, and returns it.
    pub async fn until(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Some(value) if value["type"] == kind => return value,
                Some(_) => continue,
                None => panic!("the stream ended before a {kind} line"),
            }
        }
    }

    /// Sends bytes on the client's stream (opened on first use).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        if self.out.is_none() {
            let opening = self.connection.open_uni().await.expect("a stream opens");
            self.out = Some(opening.await.expect("a stream opens"));
        }
        let out = self.out.as_mut().expect("opened above");
        out.write_all(bytes).await.expect("the stream takes bytes");
        out.flush().await.expect("the stream takes bytes");
    }

    /// Sends one client message as a line on the client's stream.
    pub async fn send(&mut self, value: &Value) {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// Sends one datagram.
    pub fn send_datagram(&self, bytes: &[u8]) {
        self.connection
            .send_datagram(bytes)
            .expect("the datagram fits the path");
    }

    /// The next datagram, as JSON.
    pub async fn datagram(&self) -> Value {
        let datagram = tokio::time::timeout(PATIENCE, self.connection.receive_datagram())
            .await
            .expect("a datagram arrives promptly")
            .expect("the session is open");
        serde_json::from_slice(&datagram.payload()).expect("a datagram is JSON")
    }

    /// Waits for the session to close; the server's close code and reason.
    pub async fn closed(&self) -> (u32, String) {
        let err = tokio::time::timeout(PATIENCE, self.connection.closed())
            .await
            .expect("the session closes promptly");
        match err {
            wtransport::error::ConnectionError::ApplicationClosed(close) => (
                u32::try_from(close.code().into_inner()).unwrap_or(u32::MAX),
                String::from_utf8_lossy(close.reason()).into_owned(),
            ),
            other => panic!("closed without an application code: {other}"),
        }
    }
}

/// The hash of the server's certificate, from `GET /config`, over plain
/// HTTP or, from a server under `--tls`, HTTPS. The HTTPS request trusts
/// any certificate: the hash it reads is what the QUIC handshake then pins.
pub async fn certificate_hash(addr: SocketAddr) -> wtransport::tls::Sha256Digest {
    let any = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("a client builds");
    let answer = match any.get(format!("http://{addr}/config")).send().await {
        Ok(answer) => answer,
        Err(_) => any
            .get(format!("https://{addr}/config"))
            .send()
            .await
            .expect("GET /config answers"),
    };
    let config: Value = answer.json().await.expect("GET /config is JSON");
    let hex = config["webtransport"]["certificate_hash"]
        .as_str()
        .expect("the server serves WebTransport with its own certificate");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("the hash is hex"))
        .collect();
    wtransport::tls::Sha256Digest::new(bytes.try_into().expect("the hash is 32 bytes"))
}

/// A QUIC connection to pushlab's WebTransport port that completes its
/// handshake and then asks for nothing: what a flood of connections from
/// one address looks like. The endpoint comes with it, to keep it open.
pub async fn quic_handshake_only(
    addr: SocketAddr,
) -> Result<
    (wtransport::quinn::Endpoint, wtransport::quinn::Connection),
    wtransport::quinn::ConnectionError,
> {
    let hash = certificate_hash(addr).await;
    let bind = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0);
    let config = wtransport::ClientConfig::builder()
        .with_bind_address(bind)
        .with_server_certificate_hashes([hash])
        .build();
    let mut endpoint = wtransport::quinn::Endpoint::client(bind).expect("a client endpoint binds");
    endpoint.set_default_client_config(config.quic_config().clone());
    let connecting = endpoint
        .connect(addr, "127.0.0.1")
        .expect("the address is valid");
    let connection = tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("the handshake ends promptly")?;
    Ok((endpoint, connection))
}

/// Whether a QUIC connection was refused by the server at its first packet
/// (`CONNECTION_REFUSED`).
pub fn is_connection_refused(err: &wtransport::quinn::ConnectionError) -> bool {
    matches!(
        err,
        wtransport::quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == wtransport::quinn::TransportErrorCode::CONNECTION_REFUSED
    )
}
