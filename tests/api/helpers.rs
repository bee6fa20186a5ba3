//! Test helpers: spawn pushlab in-process on port 0, with one method per
//! endpoint. The client per transport, behind one interface so every
//! scenario runs over all four, is `pushlab-testkit`'s [`Reader`], shared
//! with the criterion benches and re-exported here.

use std::net::SocketAddr;

use pushlab::{Config, Server};
use serde_json::{json, Value};

pub use pushlab_testkit::{pick, ws_join, From, Kind, Reader, RedisServer, Target, ALL, PATIENCE};

pub struct TestApp {
    pub server: Option<Server>,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    /// The room every request names, if not the lobby.
    pub room: Option<String>,
    /// Set when the app is two nodes sharing one Redis.
    cluster: Option<Cluster>,
}

/// Two nodes on one Redis. Every request and connection goes to one of them
/// at random, as through a round-robin proxy with no sticky sessions: a
/// session registered on one node is served by either.
struct Cluster {
    /// The second node; `TestApp::server` is the first.
    other: Option<Server>,
    nodes: Vec<SocketAddr>,
    /// Dropped last: the nodes need it until they stop.
    _redis: RedisServer,
}

tokio::task_local! {
    /// The room the apps spawned inside a scenario use: the conformance
    /// scenarios run once in the lobby and once in a named room.
    pub static IN_ROOM: Option<String>;

    /// Whether the apps spawned inside a scenario are two nodes sharing one
    /// Redis, with requests spread over them at random.
    pub static ON_TWO_NODES: bool;
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
    let two_nodes = ON_TWO_NODES.try_with(|yes| *yes).unwrap_or(false);
    let redis = two_nodes.then(|| {
        let redis = RedisServer::start();
        config.redis = Some(redis.url());
        redis
    });
    let start = |config: Config| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port 0 binds");
        pushlab::serve(listener, config).expect("the server starts")
    };
    let server = start(config.clone());
    let cluster = redis.map(|redis| {
        let other = start(config);
        Cluster {
            nodes: vec![server.addr(), other.addr()],
            other: Some(other),
            _redis: redis,
        }
    });
    TestApp {
        addr: server.addr(),
        server: Some(server),
        http: reqwest::Client::new(),
        room: IN_ROOM.try_with(Clone::clone).ok().flatten(),
        cluster,
    }
}

impl TestApp {
    /// A test app over a server started by hand, in the lobby.
    /// The same app seen from `room`: every request it makes names that
    /// room. It does not own the server.
    pub fn view_in(&self, room: &str) -> TestApp {
        TestApp {
            server: None,
            addr: self.addr,
            http: self.http.clone(),
            room: Some(room.to_owned()),
            cluster: None,
        }
    }

    pub fn over(server: Server) -> TestApp {
        TestApp {
            addr: server.addr(),
            server: Some(server),
            http: reqwest::Client::new(),
            room: None,
            cluster: None,
        }
    }

    /// The URL of `path`, in the app's room, on the node for it.
    pub fn url(&self, path: &str) -> String {
        self.url_on(self.node_for(path), path)
    }

    fn url_on(&self, node: SocketAddr, path: &str) -> String {
        format!("http://{}{}", node, self.in_room(path))
    }

    /// The only node, or on two nodes either at random, whatever `path`.
    fn node_for(&self, _path: &str) -> SocketAddr {
        match &self.cluster {
            Some(cluster) => cluster.nodes[pick(cluster.nodes.len())],
            None => self.addr,
        }
    }

    /// On two nodes: waits until `node` has every event either node has,
    /// so a read right after a write sees it wherever it goes. A node
    /// mirrors the other's appends within a millisecond or so; a real
    /// client simply gets them in its next read.
    async fn converge(&self, node: SocketAddr) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut heads = Vec::new();
        for &each in &cluster.nodes {
            heads.push(self.head_on(each).await);
        }
        let newest = heads.into_iter().max().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.head_on(node).await < newest {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{node} never caught up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    async fn head_on(&self, node: SocketAddr) -> u64 {
        let stats: Value = self
            .http
            .get(self.url_on(node, "/stats"))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("a JSON body");
        stats["head"].as_u64().unwrap()
    }

    /// The URL of `/ws` with `query` (empty, or starting with `?`), in the
    /// app's room.
    pub fn ws_url(&self, query: &str) -> String {
        let node = self.node_for("/ws");
        format!("ws://{}{}", node, self.in_room(&format!("/ws{query}")))
    }

    fn in_room(&self, path: &str) -> String {
        match &self.room {
            Some(room) if path.contains('?') => format!("{path}&room={room}"),
            Some(room) => format!("{path}?room={room}"),
            None => path.to_owned(),
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_json_on(self.node_for(path), path, body).await
    }

    async fn post_json_on(&self, node: SocketAddr, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url_on(node, path))
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
        let node = self.node_for(path);
        self.converge(node).await;
        self.http
            .get(self.url_on(node, path))
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
        if let Some(server) = self.cluster.as_mut().and_then(|c| c.other.take()) {
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

    fn nodes(&self) -> Vec<SocketAddr> {
        match &self.cluster {
            Some(cluster) => cluster.nodes.clone(),
            None => vec![self.addr],
        }
    }
}

/// Asserts that `response` is the JSON error `code` with `status`.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
}
