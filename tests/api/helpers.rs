//! Test helpers: spawn pushlab in-process on port 0, with one method per
//! endpoint. The client per transport, behind one interface so every
//! scenario runs over all four, is `pushlab-testkit`'s [`Reader`], shared
//! with the criterion benches and re-exported here.

use pushlab::{Config, Server};
use serde_json::{json, Value};

pub use pushlab_testkit::{ws_join, From, Kind, Reader, RedisServer, Target, ALL, PATIENCE};

pub struct TestApp {
    pub server: Option<Server>,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    /// The room every request names, if not the lobby.
    pub room: Option<String>,
}

tokio::task_local! {
    /// The room the apps spawned inside a scenario use: the conformance
    /// scenarios run once in the lobby and once in a named room.
    pub static IN_ROOM: Option<String>;
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
        room: IN_ROOM.try_with(Clone::clone).ok().flatten(),
    }
}

impl TestApp {
    /// The URL of `path`, in the app's room.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, self.in_room(path))
    }

    /// The URL of `/ws` with `query` (empty, or starting with `?`), in the
    /// app's room.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}{}", self.addr, self.in_room(&format!("/ws{query}")))
    }

    fn in_room(&self, path: &str) -> String {
        match &self.room {
            Some(room) if path.contains('?') => format!("{path}&room={room}"),
            Some(room) => format!("{path}?room={room}"),
            None => path.to_owned(),
        }
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

/// Readers connect to the app by its address, with its HTTP client.
impl Target for TestApp {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    fn room(&self) -> Option<String> {
        self.room.clone()
    }
}
