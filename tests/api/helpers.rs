//! Test helpers: spawn pushlab in-process on port 0, and one small client per
//! transport behind a common interface, so every scenario runs over all four.

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{SinkExt as _, StreamExt as _};
use pushlab::{Config, Server};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a test waits for something that should happen promptly. Only a
/// bound on hanging: nothing is asserted about how fast it happens.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub server: Option<Server>,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    // Every test client comes from 127.0.0.1, so the per-address limits are
    // off unless a test sets them.
    let mut config = Config {
        workers: Some(2),
        ip_registrations: 0,
        ip_sessions: 0,
        ip_connections: 0,
        ip_rate_limit: 0,
        ip_rooms: 0,
        ..Config::default()
    };
    configure(&mut config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port 0 binds");
    let server = pushlab::serve(listener, config).expect("the server starts");
    TestApp {
        addr: server.addr(),
        server: Some(server),
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, name: &str) -> reqwest::Response {
        self.post_json("/register", &json!({ "name": name })).await
    }

    /// Registers and returns the welcome, panicking if refused.
    pub async fn join(&self, name: &str) -> Value {
        let response = self.register(name).await;
        assert_eq!(response.status(), 200, "register {name}");
        response.json().await.unwrap()
    }

    pub async fn send(&self, session: &str, message: &Value) -> reqwest::Response {
        self.post_json(&format!("/send?session={session}"), message)
            .await
    }

    /// Sends a chat message and returns its seq.
    pub async fn say(&self, session: &str, text: &str) -> u64 {
        let response = self
            .send(session, &json!({"type": "message", "text": text}))
            .await;
        assert_eq!(response.status(), 200, "send {text}");
        let body: Value = response.json().await.unwrap();
        body["seq"].as_u64().unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    pub async fn head(&self) -> u64 {
        self.get_json("/stats").await.1["head"].as_u64().unwrap()
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// The four transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Poll,
    LongPoll,
    Sse,
    Ws,
}

pub const ALL: [Kind; 4] = [Kind::Poll, Kind::LongPoll, Kind::Sse, Kind::Ws];

/// Where a reader starts.
#[derive(Debug, Clone, Default)]
pub struct From {
    pub since: u64,
    pub epoch: Option<String>,
    pub session: Option<String>,
}

impl From {
    pub fn since(since: u64) -> Self {
        From {
            since,
            ..Default::default()
        }
    }
}

type SseStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;
type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A reader on one transport. Everything it receives is split into log
/// events (with `seq`) and control messages (without).
pub struct Reader {
    pub kind: Kind,
    base: String,
    from: From,
    epoch: Option<String>,
    http: reqwest::Client,
    sse: Option<SseStream>,
    ws: Option<WsStream>,
    pub events: Vec<Value>,
    pub controls: Vec<Value>,
    /// Every `gap` flag a poll body carried.
    pub gaps: Vec<bool>,
}

impl Reader {
    pub async fn open(app: &TestApp, kind: Kind, from: From) -> Reader {
        let mut reader = Reader {
            kind,
            base: format!("http://{}", app.addr),
            epoch: from.epoch.clone(),
            from,
            http: app.http.clone(),
            sse: None,
            ws: None,
            events: Vec::new(),
            controls: Vec::new(),
            gaps: Vec::new(),
        };
        reader.connect().await;
        reader
    }

    /// (Re)opens the stream or socket from the current cursor, as a client
    /// does after its connection dropped.
    pub async fn connect(&mut self) {
        self.sse = None;
        self.ws = None;
        let mut query = format!("?since={}", self.cursor());
        if let Some(epoch) = &self.epoch {
            query.push_str(&format!("&epoch={epoch}"));
        }
        if let Some(session) = &self.from.session {
            query.push_str(&format!("&session={session}"));
        }
        match self.kind {
            Kind::Sse => {
                let response = self
                    .http
                    .get(format!("{}/sse{query}", self.base))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(response.headers()["content-type"], "text/event-stream");
                self.sse = Some(Box::pin(response.bytes_stream().eventsource()));
            }
            Kind::Ws => {
                let url = format!("{}/ws{query}", self.base.replacen("http", "ws", 1));
                let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                self.ws = Some(socket);
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
            Kind::Poll | Kind::LongPoll => {
                let path = if self.kind == Kind::Poll {
                    "poll"
                } else {
                    "longpoll"
                };
                let mut query = format!("?since={}", self.cursor());
                if let Some(epoch) = &self.epoch {
                    query.push_str(&format!("&epoch={epoch}"));
                }
                if let Some(session) = &self.from.session {
                    query.push_str(&format!("&session={session}"));
                }
                if self.kind == Kind::LongPoll {
                    query.push_str("&timeout=5");
                }
                let response = self
                    .http
                    .get(format!("{}/{path}{query}", self.base))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 200, "{path}{query}: {body}");
                self.gaps.push(body["gap"].as_bool().unwrap());
                self.epoch = body["epoch"].as_str().map(str::to_owned);
                for event in body["events"].as_array().unwrap() {
                    self.take(event.clone());
                }
                if self.kind == Kind::Poll && body["events"].as_array().unwrap().is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
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
        self.ws
            .as_mut()
            .expect("a WebSocket reader")
            .send(WsMessage::Text(value.to_string()))
            .await
            .unwrap();
    }

    /// For WebSocket readers: the socket itself.
    pub fn ws(&mut self) -> &mut WsStream {
        self.ws.as_mut().expect("a WebSocket reader")
    }
}

/// Opens a WebSocket and registers over it, returning the reader and the welcome.
pub async fn ws_join(app: &TestApp, name: &str) -> (Reader, Value) {
    let mut reader = Reader::open(app, Kind::Ws, From::default()).await;
    reader.control("hello").await;
    reader
        .ws_send(&json!({"type": "register", "name": name}))
        .await;
    let welcome = reader.control("welcome").await;
    (reader, welcome)
}
