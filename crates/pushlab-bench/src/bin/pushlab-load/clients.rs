//! The clients: one subscriber per transport and peer, and the publishers.
//!
//! Every client runs on its own counted socket (see `net`), so bytes are
//! measured on the wire. A subscriber reports what it receives to its
//! [`Seen`]; a publisher sends its share of the step's messages on schedule.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::engineio::{self, Packet};
use crate::http1::{Http1, SseEvents};
use crate::net::{self, Conn, Sources, Wire};
use crate::tally::{Seen, Tally};
use crate::tls::{Alpn, Tls};

/// What a subscriber speaks, to which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// pushlab `GET /ws`.
    Ws,
    /// pushlab `GET /ws`, registered as a session of its own.
    WsRegistered,
    /// pushlab `GET /ws?signals=true`, registered, taking its session's
    /// WebRTC signals, as the page's WebRTC transport keeps one.
    WsSignals,
    /// pushlab `GET /sse` over HTTP/1.1 (over TLS with an `https://` URL).
    Sse,
    /// pushlab `GET /sse` over HTTP/2 (TLS, ALPN `h2`).
    SseH2,
    /// pushlab WebTransport, every event on the server's stream.
    Wt,
    /// pushlab WebTransport with `cursors=datagrams`: `mousemove` events as
    /// datagrams, the rest on the stream.
    WtDatagrams,
    /// pushlab `GET /longpoll`, one held request after another.
    Longpoll,
    /// pushlab `GET /poll` every `--poll-interval-ms`.
    Poll,
    /// socket.io 4 over engine.io's websocket transport.
    SocketioWs,
    /// socket.io 4 over engine.io's HTTP long-polling transport.
    SocketioPolling,
    /// The bare broadcast floor, `pushlab-floor`.
    FloorWs,
    /// The floor's `GET /longpoll`, one held request after another.
    FloorLongpoll,
}

/// Which server the publishers talk to, always over WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    Pushlab,
    Floor,
    Socketio,
}

/// How long a long-poll asks to be held, in seconds (pushlab caps it at 30).
const LONGPOLL_HOLD_SECS: u32 = 25;

/// What every client of a step shares.
pub struct Step {
    /// The subscribers' server.
    pub server: SocketAddr,
    /// The publishers' server: the subscribers' one, or another node on the
    /// same Redis.
    pub publish_server: SocketAddr,
    pub sources: Sources,
    /// Subscriber sockets.
    pub wire: Arc<Wire>,
    /// Publisher sockets.
    pub publisher_wire: Arc<Wire>,
    pub tally: Arc<Tally>,
    /// pushlab only: the log head before the step, so readers start there.
    pub since: u64,
    pub poll_interval: Duration,
    /// TLS for every TCP connection, subscribers' and publishers', when the
    /// server speaks HTTPS.
    pub tls: Option<Tls>,
    /// The SHA-256 of the server's certificate, which WebTransport
    /// subscribers pin.
    pub wt_hash: Option<[u8; 32]>,
    /// What the pushlab publishers send.
    pub events: Events,
}

/// What the publishers send to pushlab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Events {
    /// Chat messages: `{"type":"message","text","id"}`.
    Messages,
    /// Cursor moves, `{"type":"mousemove","x","y"}`, with the message's
    /// index and step in `x` and `y` (see [`cursor_position`]).
    Cursors,
}

/// A cursor move's `x` is its message index over 2^20, its `y` the step
/// over 2^16: both exact in a float and its JSON, and both in [0, 1], as
/// pushlab requires.
pub const CURSOR_INDEX_SCALE: f64 = (1u64 << 20) as f64;
pub const CURSOR_STEP_SCALE: f64 = (1u64 << 16) as f64;

/// The position that carries message `index` of `step`.
pub fn cursor_position(step: u32, index: u64) -> (f64, f64) {
    (
        index as f64 / CURSOR_INDEX_SCALE,
        f64::from(step) / CURSOR_STEP_SCALE,
    )
}

/// The message index and step a cursor position carries; `None` for a
/// position no publisher of ours sent. A last-digit difference is allowed:
/// serde_json's default float parsing (the server's) may land one unit in
/// the last place away from the exact value.
pub fn cursor_message(x: f64, y: f64) -> Option<(u32, u64)> {
    let whole = |v: f64| {
        let rounded = v.round();
        (rounded >= 0.0 && (v - rounded).abs() < 1e-6).then_some(rounded)
    };
    let index = whole(x * CURSOR_INDEX_SCALE)?;
    let step = whole(y * CURSOR_STEP_SCALE)?;
    Some((step as u32, index as u64))
}

/// Tells the controller a client is connected and set up. Dropping it
/// unfired tells it the client failed.
pub struct Ready(Option<oneshot::Sender<()>>);

impl Ready {
    pub fn new() -> (Ready, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Ready(Some(tx)), rx)
    }

    pub fn fire(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs one subscriber until it fails or is aborted. A failure after it was
/// ready is kept in `seen.failure`, so it is reported and not lost.
pub async fn subscribe(
    step: Arc<Step>,
    kind: Kind,
    index: usize,
    seen: Arc<Mutex<Seen>>,
    mut ready: Ready,
) {
    let result = match kind {
        Kind::Ws => pushlab_ws(&step, index, None, false, &seen, &mut ready).await,
        Kind::WsRegistered | Kind::WsSignals => {
            // A name of at most 24 characters, unique to this subscriber.
            let name = format!("s{}x{index}", std::process::id() % 100_000);
            let signals = kind == Kind::WsSignals;
            pushlab_ws(&step, index, Some(&name), signals, &seen, &mut ready).await
        }
        Kind::Sse => pushlab_sse(&step, index, &seen, &mut ready).await,
        Kind::SseH2 => pushlab_sse_h2(&step, index, &seen, &mut ready).await,
        Kind::Wt => crate::wt::subscribe(&step, index, false, &seen, &mut ready).await,
        Kind::WtDatagrams => crate::wt::subscribe(&step, index, true, &seen, &mut ready).await,
        Kind::Longpoll | Kind::Poll => pushlab_poll(&step, kind, index, &seen, &mut ready).await,
        Kind::SocketioWs => socketio_ws(&step, index, &seen, &mut ready).await,
        Kind::SocketioPolling => socketio_polling(&step, index, &seen, &mut ready).await,
        Kind::FloorWs => floor_ws(&step, index, &seen, &mut ready).await,
        Kind::FloorLongpoll => floor_longpoll(&step, index, &seen, &mut ready).await,
    };
    let failure = match result {
        Ok(()) => "the server ended the connection".to_string(),
        Err(err) => format!("{err:#}"),
    };
    seen.lock().failure.get_or_insert(failure);
}

/// A pushlab event or control message, reduced to what is checked.
#[derive(Deserialize)]
struct PushlabItem<'a> {
    seq: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(borrow)]
    text: Option<&'a str>,
    x: Option<f64>,
    y: Option<f64>,
}

/// The message object the peers fan out: `{"id","text"}`.
#[derive(Deserialize)]
struct PeerPayload<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow)]
    text: &'a str,
}

/// Reads the fields of a flat JSON object without escapes straight off its
/// text; `None` sends the caller to serde.
///
/// At a million deliveries a second, parsing each event with serde took a
/// fifth of the load generator's core. Without a backslash anywhere, every
/// `"` in the text delimits a string, so a `"key":` pattern can only be a
/// key; without a second `{`, it can only be a top-level one.
struct FlatJson<'a>(&'a str);

/// A `"name":` pattern, its searcher built once.
type Key = memchr::memmem::Finder<'static>;

static SEQ_KEY: LazyLock<Key> = LazyLock::new(|| Key::new(r#""seq":"#));
static TYPE_KEY: LazyLock<Key> = LazyLock::new(|| Key::new(r#""type":"#));
static ID_KEY: LazyLock<Key> = LazyLock::new(|| Key::new(r#""id":"#));
static TEXT_KEY: LazyLock<Key> = LazyLock::new(|| Key::new(r#""text":"#));
static X_KEY: LazyLock<Key> = LazyLock::new(|| Key::new(r#""x":"#));
static Y_KEY: LazyLock<Key> = LazyLock::new(|| Key::new(r#""y":"#));

impl<'a> FlatJson<'a> {
    fn new(json: &'a str) -> Option<Self> {
        let bytes = json.as_bytes();
        let flat = bytes.first() == Some(&b'{')
            && memchr::memchr(b'{', &bytes[1..]).is_none()
            && memchr::memchr(b'\\', bytes).is_none();
        flat.then_some(FlatJson(json))
    }

    /// Where the value after `key` starts.
    fn value_at(&self, key: &Key) -> Option<usize> {
        key.find(self.0.as_bytes())
            .map(|at| at + key.needle().len())
    }

    /// A string value: `Some(None)` when the key is absent, `None` when it is
    /// there but not a string.
    fn string(&self, key: &Key) -> Option<Option<&'a str>> {
        let Some(at) = self.value_at(key) else {
            return Some(None);
        };
        let rest = self.0[at..].strip_prefix('"')?;
        let end = memchr::memchr(b'"', rest.as_bytes())?;
        Some(Some(&rest[..end]))
    }

    /// An unsigned number value, with the same convention as [`Self::string`].
    fn number(&self, key: &Key) -> Option<Option<u64>> {
        let Some(at) = self.value_at(key) else {
            return Some(None);
        };
        let rest = &self.0[at..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok().map(Some)
    }

    /// A number value with a fraction or exponent, with the same
    /// convention as [`Self::string`].
    fn float(&self, key: &Key) -> Option<Option<f64>> {
        let Some(at) = self.value_at(key) else {
            return Some(None);
        };
        let rest = &self.0[at..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().parse().ok().map(Some)
    }

    fn pushlab_item(&self) -> Option<PushlabItem<'a>> {
        let kind = self.string(&TYPE_KEY)?;
        let (x, y) = if kind == Some("mousemove") {
            (self.float(&X_KEY)?, self.float(&Y_KEY)?)
        } else {
            (None, None)
        };
        Some(PushlabItem {
            seq: self.number(&SEQ_KEY)?,
            kind,
            id: self.string(&ID_KEY)?,
            text: self.string(&TEXT_KEY)?,
            x,
            y,
        })
    }

    fn peer_payload(&self) -> Option<PeerPayload<'a>> {
        Some(PeerPayload {
            id: self.string(&ID_KEY)??,
            text: self.string(&TEXT_KEY)??,
        })
    }
}

/// Reads one pushlab JSON item; returns its `type` when it is a control.
pub fn pushlab_item<'a>(
    seen: &Mutex<Seen>,
    tally: &Tally,
    json: &'a str,
) -> anyhow::Result<&'a str> {
    pushlab_item_in(seen, tally, json, true)
}

/// [`pushlab_item`], checking that seqs follow one another only if
/// `in_order`: datagrams may be lost or overtake the stream, and the
/// stream of a session whose cursors go as datagrams skips their seqs.
pub fn pushlab_item_in<'a>(
    seen: &Mutex<Seen>,
    tally: &Tally,
    json: &'a str,
    in_order: bool,
) -> anyhow::Result<&'a str> {
    let item = match FlatJson::new(json).and_then(|flat| flat.pushlab_item()) {
        Some(item) => item,
        None => serde_json::from_str(json).context("a pushlab frame is JSON")?,
    };
    let mut seen = seen.lock();
    match item.seq {
        Some(seq) => {
            if in_order {
                seen.seq(seq);
            }
            match (item.kind, item.id, item.text, item.x, item.y) {
                (Some("message"), Some(id), Some(text), _, _) => {
                    seen.message(tally, id, text, json.len());
                }
                (Some("mousemove"), _, _, Some(x), Some(y)) => {
                    if let Some((step, index)) = cursor_message(x, y) {
                        seen.cursor(tally, step, index, json.len());
                    }
                }
                _ => {}
            }
            Ok("event")
        }
        None => match item.kind {
            Some("gap") => {
                seen.gap();
                Ok("gap")
            }
            Some("error") => bail!("the server sent an error: {json}"),
            Some(kind) => Ok(kind),
            None => bail!("a frame without seq or type: {json}"),
        },
    }
}

fn peer_payload(seen: &Mutex<Seen>, tally: &Tally, json: &str) -> anyhow::Result<()> {
    let payload = match FlatJson::new(json).and_then(|flat| flat.peer_payload()) {
        Some(payload) => payload,
        None => serde_json::from_str(json).context("a peer payload is JSON")?,
    };
    seen.lock()
        .message(tally, payload.id, payload.text, json.len());
    Ok(())
}

/// Connects a client, over TLS (ALPN `http/1.1`) if the server speaks
/// HTTPS.
async fn connect(
    step: &Step,
    server: SocketAddr,
    index: usize,
    wire: &Arc<Wire>,
) -> anyhow::Result<Conn> {
    let tls = step.tls.as_ref().map(|tls| (tls, Alpn::Http1));
    let stream = net::connect_over(server, step.sources.pick(index), wire.clone(), tls)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    wire.request();
    Ok(stream)
}

async fn websocket(
    step: &Step,
    server: SocketAddr,
    index: usize,
    wire: &Arc<Wire>,
    path: &str,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<Conn>> {
    let stream = connect(step, server, index, wire).await?;
    let url = format!("ws://{server}{path}");
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .context("the WebSocket handshake")?;
    Ok(socket)
}

/// A pushlab WebSocket subscriber: ready at `hello`, or with a `register`
/// name at its `welcome`; with `signals`, it takes its session's WebRTC
/// signals.
async fn pushlab_ws(
    step: &Step,
    index: usize,
    register: Option<&str>,
    signals: bool,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let signals = if signals { "&signals=true" } else { "" };
    let path = format!("/ws?since={}{signals}", step.since);
    let mut socket = websocket(step, step.server, index, &step.wire, &path).await?;
    while let Some(frame) = socket.next().await {
        let text = match frame? {
            Message::Text(text) => text,
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => continue,
        };
        match (pushlab_item(seen, &step.tally, &text)?, register) {
            ("hello", None) | ("welcome", Some(_)) => ready.fire(),
            ("hello", Some(name)) => {
                let register = serde_json::json!({"type": "register", "name": name});
                socket.send(Message::Text(register.to_string())).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Opens an HTTP/1.1 keep-alive connection for a subscriber.
/// A refusal as it came: the status and the start of the body, which names
/// the reason (socket.io's `{"code":1,"message":"Session ID unknown"}`,
/// pushlab's `{"error","code"}`). No ids in it, so equal refusals count
/// together in [`crate::StepResult::errors`].
fn refusal(status: u16, body: &[u8]) -> String {
    /// Enough for either server's JSON error.
    const SHOWN: usize = 160;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    format!("{status} {}", text.trim())
}

async fn http(step: &Step, index: usize) -> anyhow::Result<Http1> {
    let stream = connect(step, step.server, index, &step.wire).await?;
    // The connection itself counts once; each request counts below.
    step.wire
        .requests
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Http1::new(stream, step.server.to_string()))
}

/// Sends one request on `http` and reads the whole answer, counting it.
async fn send(
    http: &mut Http1,
    wire: &Wire,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, Bytes)> {
    wire.request();
    http.send(method, path, body).await
}

async fn pushlab_sse(
    step: &Step,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let mut http = http(step, index).await?;
    step.wire.request();
    let path = format!("/sse?since={}", step.since);
    let head = http.request("GET", &path, "").await?;
    ensure!(head.status == 200, "GET /sse answered {}", head.status);
    let mut events = SseEvents::default();
    while let Some(chunk) = http.next_chunk().await? {
        events.push(&chunk);
        while let Some(data) = events.next_data()? {
            if pushlab_item(seen, &step.tally, &data)? == "hello" {
                ready.fire();
            }
        }
    }
    Ok(())
}

/// pushlab `GET /sse` over HTTP/2: one TLS connection (ALPN `h2`) and one
/// stream on it, with h2 driving the connection in the same task.
async fn pushlab_sse_h2(
    step: &Step,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let tls = step
        .tls
        .as_ref()
        .context("SSE over HTTP/2 needs an https:// --url")?;
    let stream = net::connect_over(
        step.server,
        step.sources.pick(index),
        step.wire.clone(),
        Some((tls, Alpn::H2)),
    )
    .await
    .with_context(|| format!("connecting to {}", step.server))?;
    step.wire.request();
    let (mut client, connection) = h2::client::handshake(stream)
        .await
        .context("the HTTP/2 handshake")?;
    let request = http::Request::get(format!("https://{}/sse?since={}", step.server, step.since))
        .body(())
        .context("an HTTP/2 request")?;
    let read = async {
        let (answer, _) = client.send_request(request, true)?;
        let answer = answer.await.context("GET /sse over HTTP/2")?;
        ensure!(
            answer.status() == 200,
            "GET /sse answered {}",
            answer.status()
        );
        let mut body = answer.into_body();
        let mut events = SseEvents::default();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            // What was read makes room in the stream's window again.
            body.flow_control().release_capacity(chunk.len())?;
            events.push(&chunk);
            while let Some(data) = events.next_data()? {
                if pushlab_item(seen, &step.tally, &data)? == "hello" {
                    ready.fire();
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        ended = connection => ended.context("the HTTP/2 connection"),
        read = read => read,
    }
}

/// A poll or long-poll answer, with each event kept as its own JSON text.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    cursor: u64,
    epoch: String,
    gap: bool,
}

/// Reads a poll or long-poll answer from `endpoint` and tallies its
/// events, each read by `item` (pushlab's events, or the floor's payloads).
fn take_batch<'a>(
    endpoint: &str,
    status: u16,
    body: &'a [u8],
    seen: &Mutex<Seen>,
    mut item: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<BatchBody<'a>> {
    ensure!(
        status == 200,
        "GET {endpoint} answered {}",
        refusal(status, body)
    );
    let batch: BatchBody = serde_json::from_slice(body).context("a batch is JSON")?;
    if batch.gap {
        seen.lock().gap();
    }
    for event in &batch.events {
        item(event.get())?;
    }
    Ok(batch)
}

async fn pushlab_poll(
    step: &Step,
    kind: Kind,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let mut http = http(step, index).await?;
    let mut cursor = step.since;
    let mut epoch = String::new();
    // The path without its query, which names no cursor, for errors.
    let endpoint = if kind == Kind::Poll {
        "/poll"
    } else {
        "/longpoll"
    };
    let mut tick = tokio::time::interval(step.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let path = match kind {
            Kind::Poll => {
                tick.tick().await;
                format!("/poll?since={cursor}&epoch={epoch}")
            }
            _ => format!("/longpoll?since={cursor}&epoch={epoch}&timeout={LONGPOLL_HOLD_SECS}"),
        };
        let sent = Instant::now();
        let answer = send(&mut http, &step.wire, "GET", &path, "");
        // A long-poll is held from here on; the controller waits a moment
        // after everyone is ready before it starts publishing.
        ready.fire();
        let (status, body) = answer.await?;
        if kind == Kind::Poll {
            step.tally.record_poll_rtt(sent.elapsed());
        }
        let batch = take_batch(endpoint, status, &body, seen, |event| {
            pushlab_item(seen, &step.tally, event).map(drop)
        })?;
        cursor = batch.cursor;
        epoch = batch.epoch;
    }
}

async fn floor_ws(
    step: &Step,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let mut socket = websocket(step, step.server, index, &step.wire, "/").await?;
    ready.fire();
    while let Some(frame) = socket.next().await {
        match frame? {
            Message::Text(text) => peer_payload(seen, &step.tally, &text)?,
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => {}
        }
    }
    Ok(())
}

/// A long-poll subscriber of the floor: pushlab's loop, but the floor's
/// events are the payloads its publishers sent, read by payload id. The
/// first request names no cursor, so the floor holds it for the next event.
async fn floor_longpoll(
    step: &Step,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let mut http = http(step, index).await?;
    let mut path = format!("/longpoll?timeout={LONGPOLL_HOLD_SECS}");
    loop {
        let answer = send(&mut http, &step.wire, "GET", &path, "");
        ready.fire();
        let (status, body) = answer.await?;
        let batch = take_batch("/longpoll", status, &body, seen, |event| {
            peer_payload(seen, &step.tally, event)
        })?;
        path = format!(
            "/longpoll?since={}&timeout={LONGPOLL_HOLD_SECS}",
            batch.cursor
        );
    }
}

/// Takes the payload out of a socket.io event `["msg",{...}]`.
fn socketio_event(seen: &Mutex<Seen>, tally: &Tally, array: &str) -> anyhow::Result<()> {
    let (_name, payload): (&str, &RawValue) =
        serde_json::from_str(array).context("a socket.io event is a JSON array")?;
    peer_payload(seen, tally, payload.get())
}

async fn socketio_ws(
    step: &Step,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let path = engineio::query("websocket", None);
    let mut socket = websocket(step, step.server, index, &step.wire, &path).await?;
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        match engineio::parse(&text) {
            Packet::Open(_) => socket.send(Message::Text(engineio::CONNECT.into())).await?,
            Packet::Connected => ready.fire(),
            Packet::Ping => socket.send(Message::Text(engineio::PONG.into())).await?,
            Packet::Event(array) => socketio_event(seen, &step.tally, array)?,
            Packet::Close | Packet::Disconnected => bail!("socket.io closed the session"),
            Packet::Other => {}
        }
    }
    Ok(())
}

async fn socketio_polling(
    step: &Step,
    index: usize,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let mut http = http(step, index).await?;
    let (status, body) = send(
        &mut http,
        &step.wire,
        "GET",
        &engineio::query("polling", None),
        "",
    )
    .await?;
    ensure!(
        status == 200,
        "the handshake answered {}",
        refusal(status, &body)
    );
    let body = std::str::from_utf8(&body)?;
    let Some(Packet::Open(open)) = engineio::packets(body).next() else {
        bail!("no open packet in {body:?}");
    };
    let sid = serde_json::from_str::<engineio::Open>(open)?.sid;
    let path = engineio::query("polling", Some(&sid));
    let (status, body) = send(&mut http, &step.wire, "POST", &path, engineio::CONNECT).await?;
    ensure!(
        status == 200,
        "the connect answered {}",
        refusal(status, &body)
    );
    loop {
        let (status, body) = send(&mut http, &step.wire, "GET", &path, "").await?;
        ensure!(status == 200, "a poll answered {}", refusal(status, &body));
        let mut pinged = false;
        for packet in engineio::packets(std::str::from_utf8(&body)?) {
            match packet {
                Packet::Connected => ready.fire(),
                Packet::Ping => pinged = true,
                Packet::Event(array) => socketio_event(seen, &step.tally, array)?,
                Packet::Close | Packet::Disconnected => bail!("socket.io closed the session"),
                Packet::Open(_) | Packet::Other => {}
            }
        }
        if pinged {
            let (status, body) = send(&mut http, &step.wire, "POST", &path, engineio::PONG).await?;
            ensure!(status == 200, "a pong answered {}", refusal(status, &body));
        }
    }
}

/// One publisher's share of the step: messages `index`, `index + of`, ….
#[derive(Debug, Clone, Copy)]
pub struct Share {
    pub index: usize,
    pub of: usize,
    /// The aggregate rate, messages per second.
    pub rate: f64,
}

/// How a publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub sent: u64,
    /// The latest a message went out after its scheduled time.
    pub worst_lateness: Duration,
}

/// A message for the peers, shaped and sized like the event pushlab makes of
/// the same message: `seq`, `ts`, `type`, `name`, `text`, `id`.
fn peer_event(step: &Step, name: &str, index: u64, id: &str, text: &str) -> String {
    let seq = step.since + index + 1;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        r#"{{"seq":{seq},"ts":{ts},"type":"message","name":"{name}","text":"{text}","id":"{id}"}}"#
    )
}

/// Below this gap between two of its sends, a publisher trusts tokio's
/// millisecond timer; above it, it sleeps to two milliseconds before the slot
/// and then sleeps its thread (the publisher has one of its own) to the slot,
/// so a low-rate latency run does not charge up to a millisecond of timer
/// slack to the server. The thread sleeps rather than spins: it runs at a
/// higher priority than the subscribers, and spinning would take their CPU.
const PRECISE_BELOW_RATE: f64 = 500.0;

/// When a publisher starts, and when it may close.
pub struct Cues {
    /// The start time, once the controller sets it.
    pub start: watch::Receiver<Option<Instant>>,
    /// Set once every subscriber has what it will get, so the publisher's
    /// `leave` falls outside the measurement.
    pub close: watch::Receiver<bool>,
}

/// Runs on a thread of its own (see `on_publisher_thread`).
///
/// Connects, sets up, signals `ready`, waits for the start time, then sends
/// its share of the messages on schedule over one WebSocket. Reports through
/// `sent` when it has sent them, and closes when cued.
pub async fn publish(
    step: Arc<Step>,
    peer: Peer,
    share: Share,
    mut ready: Ready,
    mut cues: Cues,
    sent: oneshot::Sender<Published>,
) -> anyhow::Result<()> {
    let wire = &step.publisher_wire;
    let index = share.index;
    let name = format!("l{}s{}p{index}", std::process::id(), step.tally.step);
    let socket = match peer {
        Peer::Pushlab => {
            let path = format!("/ws?since={}", step.since);
            let mut socket = websocket(&step, step.publish_server, index, wire, &path).await?;
            let register = serde_json::json!({"type": "register", "name": name});
            socket.send(Message::Text(register.to_string())).await?;
            while let Some(frame) = socket.next().await {
                if let Message::Text(text) = frame? {
                    if text.contains("\"type\":\"welcome\"") {
                        break;
                    }
                    ensure!(!text.contains("\"type\":\"error\""), "register: {text}");
                }
            }
            socket
        }
        Peer::Floor => websocket(&step, step.publish_server, index, wire, "/").await?,
        Peer::Socketio => {
            let path = engineio::query("websocket", None);
            let mut socket = websocket(&step, step.publish_server, index, wire, &path).await?;
            while let Some(frame) = socket.next().await {
                let Message::Text(text) = frame? else {
                    continue;
                };
                match engineio::parse(&text) {
                    Packet::Open(_) => socket.send(Message::Text(engineio::CONNECT.into())).await?,
                    Packet::Connected => break,
                    _ => {}
                }
            }
            socket
        }
    };
    // Everything the server sends back (every publisher gets the fan-out
    // too) is read and dropped, answering engine.io pings on the way.
    let (mut sink, mut incoming) = socket.split();
    let (pings, mut to_answer) = mpsc::unbounded_channel::<()>();
    let drain = tokio::spawn(async move {
        while let Some(Ok(frame)) = incoming.next().await {
            if peer == Peer::Socketio && matches!(&frame, Message::Text(t) if t == "2") {
                let _ = pings.send(());
            }
        }
    });
    ready.fire();
    let t0 = *cues
        .start
        .wait_for(|start| start.is_some())
        .await
        .context("the controller went away")?;
    let t0 = t0.expect("waited for Some");
    let tally = step.tally.clone();
    let slot = Duration::from_secs_f64(1.0 / share.rate);
    let precise = share.rate / (share.of as f64) < PRECISE_BELOW_RATE;
    let mut report = Published::default();
    let mut next = share.index as u64;
    while next < tally.count {
        let at = t0 + slot.mul_f64(next as f64);
        if precise {
            // tokio's timer fires on whole milliseconds, up to one late: two
            // early is never after the slot.
            tokio::time::sleep_until((at - Duration::from_millis(2)).into()).await;
            // Blocks this publisher's own thread for up to two milliseconds;
            // nothing else waits on it meanwhile but its drain of echoes.
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        } else {
            tokio::time::sleep_until(at.into()).await;
        }
        // Send every message that is due, then flush once.
        loop {
            let at = t0 + slot.mul_f64(next as f64);
            let (id, text) = tally.payload(next, at);
            let frame = match peer {
                Peer::Pushlab if step.events == Events::Cursors => {
                    let (x, y) = cursor_position(tally.step, next);
                    format!(r#"{{"type":"mousemove","x":{x},"y":{y}}}"#)
                }
                Peer::Pushlab => {
                    format!(r#"{{"type":"message","text":"{text}","id":"{id}"}}"#)
                }
                // The peers relay what they are sent, so they are sent what
                // pushlab delivers: an event of the same fields and size.
                // Every client then reads the same bytes, and the servers
                // are compared on equal work.
                Peer::Floor => peer_event(&step, &name, next, &id, &text),
                Peer::Socketio => {
                    engineio::event("msg", &peer_event(&step, &name, next, &id, &text))
                }
            };
            sink.feed(Message::Text(frame)).await?;
            report.sent += 1;
            report.worst_lateness = report.worst_lateness.max(at.elapsed());
            next += share.of as u64;
            if next >= tally.count || t0 + slot.mul_f64(next as f64) > Instant::now() {
                break;
            }
        }
        while to_answer.try_recv().is_ok() {
            sink.feed(Message::Text(engineio::PONG.into())).await?;
        }
        sink.flush().await?;
    }
    let _ = sent.send(report);
    // Until the cue, keep answering engine.io pings.
    while !*cues.close.borrow_and_update() {
        tokio::select! {
            changed = cues.close.changed() => if changed.is_err() { break },
            ping = to_answer.recv() => match ping {
                Some(()) => sink.send(Message::Text(engineio::PONG.into())).await?,
                None => break,
            },
        }
    }
    // A clean close ends a pushlab session at once, so no `leave` turns up
    // in a later step. Then wait for the server's close: dropping a socket
    // with unread data makes the kernel send a reset, which can discard the
    // last frames.
    let _ = sink.send(Message::Close(None)).await;
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        eprintln!("note: a publisher's socket did not close within 2 s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path reads what serde reads, and steps aside where it can't.
    #[test]
    fn flat_json_reads_the_same_fields_as_serde() {
        let event = r#"{"seq":42,"ts":1764170000000,"type":"message","name":"ann","text":"123456","id":"3.7"}"#;
        let fast = FlatJson::new(event).and_then(|f| f.pushlab_item()).unwrap();
        let slow: PushlabItem = serde_json::from_str(event).unwrap();
        assert_eq!(
            (fast.seq, fast.kind, fast.id, fast.text),
            (slow.seq, slow.kind, slow.id, slow.text)
        );
        assert_eq!(fast.seq, Some(42));

        let join = r#"{"seq":7,"ts":1,"type":"join","name":"id"}"#;
        let fast = FlatJson::new(join).and_then(|f| f.pushlab_item()).unwrap();
        assert_eq!(
            (fast.seq, fast.kind, fast.id),
            (Some(7), Some("join"), None)
        );

        let peer = r#"{"id":"1.2","text":"99"}"#;
        let fast = FlatJson::new(peer).and_then(|f| f.peer_payload()).unwrap();
        assert_eq!((fast.id, fast.text), ("1.2", "99"));

        // Escapes, nesting or a mistyped value: serde's job.
        assert!(FlatJson::new(r#"{"seq":1,"text":"a\"b"}"#).is_none());
        assert!(FlatJson::new(r#"{"type":"welcome","history":[{"seq":1}]}"#).is_none());
        assert!(FlatJson::new(r#"{"seq":"x"}"#)
            .and_then(|f| f.pushlab_item())
            .is_none());
    }

    #[test]
    fn a_cursor_move_carries_its_index_and_step_through_the_server_s_json() {
        let (x, y) = cursor_position(7, 95);
        // What the server sent back for 95 / 2^20: one unit in the last
        // place above the exact value.
        let event = r#"{"seq":97,"ts":1,"type":"mousemove","name":"p","x":9.059906005859376e-05,"y":1.068115234375e-4}"#;

        let item = FlatJson::new(event).and_then(|f| f.pushlab_item()).unwrap();

        assert_eq!((x, y), (95.0 / 1048576.0, 7.0 / 65536.0));
        assert_eq!(
            cursor_message(item.x.unwrap(), item.y.unwrap()),
            Some((7, 95))
        );
        assert_eq!(cursor_message(x, y), Some((7, 95)));
        assert_eq!(cursor_message(0.5, 0.123456789), None);
    }
}
