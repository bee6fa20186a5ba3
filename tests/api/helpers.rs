//! Test helpers: spawn pushlab on port 0, in this process or as the real
//! binary, with one method per endpoint. The client per transport, behind
//! one interface so every scenario runs over all four, is
//! `pushlab-testkit`'s [`Reader`], shared with the criterion benches and
//! re-exported here.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use pushlab::{Config, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

pub use pushlab_testkit::{
    pick, ws_join, From, Kind, Reader, RedisServer, Target, WtRefused, WtSession, ALL, EVERY,
    PATIENCE,
};

pub struct TestApp {
    /// The first node; on one node, the only one.
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// The room every request names, if not the lobby.
    pub room: Option<String>,
    /// Every node, `addr` first. On two nodes sharing one Redis, every
    /// request and connection goes to one of them at random, as through a
    /// round-robin proxy with no sticky sessions: a session registered on
    /// one node is served by either.
    nodes: Vec<SocketAddr>,
    /// What runs the nodes; `None` for a [`TestApp::handle`] or a
    /// [`TestApp::view_in`], which own nothing.
    running: Option<Running>,
    /// How WebSockets reach the nodes over TLS, trusting their certificates;
    /// `None` for plain HTTP, and for the binary (which makes its own).
    pub tls: Option<tokio_tungstenite::Connector>,
    /// Whether the nodes serve HTTPS.
    https: bool,
}

/// Which HTTP a client speaks to a server under `--tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1 only (ALPN `http/1.1`).
    One,
    /// HTTP/2, as ALPN picks when the client offers both, as browsers do.
    Two,
}

/// The clients of servers under `--tls` whose certificates are `certs`
/// (DER), trusting those and no others: an HTTP client speaking `http`,
/// which keeps each response's TLS details, and the WebSocket connector.
pub fn tls_clients(
    certs: &[Vec<u8>],
    http: Http,
) -> (reqwest::Client, tokio_tungstenite::Connector) {
    let mut client = reqwest::Client::builder().tls_info(true);
    let mut roots = rustls::RootCertStore::empty();
    for der in certs {
        client = client.add_root_certificate(reqwest::Certificate::from_der(der).unwrap());
        roots
            .add(rustls_pki_types::CertificateDer::from(der.clone()))
            .unwrap();
    }
    if http == Http::One {
        client = client.http1_only();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let ws = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        client.build().unwrap(),
        tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(ws)),
    )
}

/// What keeps an app's nodes running.
enum Running {
    /// Servers in this process: one, or two sharing one Redis.
    InProcess {
        servers: Vec<Server>,
        /// Dropped after the servers: they need it until they stop.
        redis: Option<RedisServer>,
    },
    /// The pushlab binary, run as an operator runs it.
    Binary(Box<Binary>),
}

/// A `pushlab` process of the test's own, killed when dropped.
struct Binary {
    child: Child,
    /// Its log, a line at a time, read as it comes so the pipe never fills.
    stderr: mpsc::UnboundedReceiver<String>,
    /// Kept open: it wrote its address there and may write more.
    stdout: Lines<BufReader<ChildStdout>>,
}

tokio::task_local! {
    /// The room the apps spawned inside a scenario use: the conformance
    /// scenarios run once in the lobby and once in a named room.
    pub static IN_ROOM: Option<String>;

    /// Whether the apps spawned inside a scenario are two nodes sharing one
    /// Redis, with requests spread over them at random.
    pub static ON_TWO_NODES: bool;

    /// Whether the apps spawned inside a scenario serve HTTPS (`--tls`),
    /// and which HTTP their clients speak.
    pub static OVER_TLS: Option<Http>;
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    // Every test client comes from 127.0.0.1, so the per-address limits are
    // off unless a test sets them. WebTransport is on, so that every
    // scenario can read over it too.
    let mut config = Config {
        workers: Some(2),
        webtransport: true,
        ip_registrations: 0,
        ip_sessions: 0,
        ip_connections: 0,
        ip_rate_limit: 0,
        ip_rooms: 0,
        ..Config::default()
    };
    let over_tls = OVER_TLS.try_with(|http| *http).ok().flatten();
    config.tls = over_tls.is_some();
    configure(&mut config);
    let two_nodes = ON_TWO_NODES.try_with(|yes| *yes).unwrap_or(false);
    let redis = two_nodes.then(|| {
        let redis = RedisServer::start();
        config.redis = Some(redis.url());
        redis
    });
    let start = |config: Config| {
        // WebTransport takes the same port number over UDP, which another
        // test's client may hold: then the next free TCP port is tried.
        let mut attempts = 0;
        loop {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port 0 binds");
            match pushlab::serve(listener, config.clone()) {
                Ok(server) => break server,
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempts < 5 => {
                    attempts += 1;
                }
                Err(err) => panic!("the server starts: {err}"),
            }
        }
    };
    let mut servers = vec![start(config.clone())];
    if redis.is_some() {
        servers.push(start(config));
    }
    let certs: Vec<Vec<u8>> = servers
        .iter()
        .filter_map(|server| server.certificate())
        .map(|certificate| certificate.chain[0].to_vec())
        .collect();
    let (http, tls) = match certs.is_empty() {
        true => (reqwest::Client::new(), None),
        false => {
            let (http, ws) = tls_clients(&certs, over_tls.unwrap_or(Http::Two));
            (http, Some(ws))
        }
    };
    TestApp {
        addr: servers[0].addr(),
        http,
        room: IN_ROOM.try_with(Clone::clone).ok().flatten(),
        nodes: servers.iter().map(Server::addr).collect(),
        running: Some(Running::InProcess { servers, redis }),
        https: tls.is_some(),
        tls,
    }
}

/// A node in this process that shares `redis`, which the test holds so that
/// it can kill, restart or pause it.
pub async fn spawn_app_on(redis: &RedisServer, configure: impl FnOnce(&mut Config)) -> TestApp {
    let url = redis.url();
    spawn_app_with(|c| {
        c.redis = Some(url);
        configure(c);
    })
    .await
}

/// What became of a start of the real binary.
pub enum Started {
    /// It listens, and the app talks to it.
    Running(TestApp),
    /// It exited before it listened, having written `stderr`.
    Refused { status: ExitStatus, stderr: String },
}

/// Starts the pushlab binary on port 0 with `flags`, and with `env` besides
/// an environment that has no `RUST_LOG` or `RUST_BACKTRACE` of the
/// caller's and asks for no colour.
pub async fn start_binary(flags: &[&str], env: &[(&str, &str)]) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushlab"))
        .args(["--addr", "127.0.0.1:0"])
        .args(flags)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the pushlab binary runs");
    let (lines, mut stderr) = mpsc::unbounded_channel();
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err_lines.next_line().await {
            let _ = lines.send(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, stdout.next_line())
        .await
        .expect("it announced its address or exited")
        .unwrap();
    let Some(line) = first else {
        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("it exited")
            .unwrap();
        let mut text = String::new();
        // The channel closes once the child's stderr does.
        while let Some(line) = tokio::time::timeout(PATIENCE, stderr.recv())
            .await
            .expect("stderr closed")
        {
            text.push_str(&line);
            text.push('\n');
        }
        return Started::Refused {
            status,
            stderr: text,
        };
    };
    // The one stable line on its stdout (src/main.rs). Under `--tls` the
    // client trusts any certificate: a test that cares checks the one it
    // was served (see `tls.rs`).
    let (addr, tls): (SocketAddr, bool) = line
        .strip_prefix("pushlab listening on http://")
        .map(|addr| (addr, false))
        .or_else(|| {
            line.strip_prefix("pushlab listening on https://")
                .map(|addr| (addr, true))
        })
        .and_then(|(addr, tls)| Some((addr.parse().ok()?, tls)))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let http = match tls {
        true => reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .tls_info(true)
            .build()
            .unwrap(),
        false => reqwest::Client::new(),
    };
    Started::Running(TestApp {
        addr,
        http,
        room: None,
        nodes: vec![addr],
        running: Some(Running::Binary(Box::new(Binary {
            child,
            stderr,
            stdout,
        }))),
        tls: None,
        https: tls,
    })
}

/// Starts the pushlab binary on port 0 with `flags`, panicking with its log
/// if it exits instead of listening.
pub async fn spawn_binary(flags: &[&str]) -> TestApp {
    match start_binary(flags, &[]).await {
        Started::Running(app) => app,
        Started::Refused { status, stderr } => {
            panic!("pushlab exited ({status}) instead of listening:\n{stderr}")
        }
    }
}

impl TestApp {
    /// A test app over a server started by hand, in the lobby.
    pub fn over(server: Server) -> TestApp {
        TestApp {
            addr: server.addr(),
            http: reqwest::Client::new(),
            room: None,
            nodes: vec![server.addr()],
            running: Some(Running::InProcess {
                servers: vec![server],
                redis: None,
            }),
            tls: None,
            https: false,
        }
    }

    /// Another client of the same nodes, in the same room and sharing the
    /// connection pool, for a task of its own. It owns nothing: the nodes
    /// run as long as this app does.
    pub fn handle(&self) -> TestApp {
        TestApp {
            addr: self.addr,
            http: self.http.clone(),
            room: self.room.clone(),
            nodes: self.nodes.clone(),
            running: None,
            tls: self.tls.clone(),
            https: self.https,
        }
    }

    /// The same app seen from `room`: every request it makes names that
    /// room. It owns nothing, as a [`TestApp::handle`].
    pub fn view_in(&self, room: &str) -> TestApp {
        TestApp {
            room: Some(room.to_owned()),
            ..self.handle()
        }
    }

    /// The URL of `path`, in the app's room, on the node for it.
    pub fn url(&self, path: &str) -> String {
        self.url_on(self.node_for(path), path)
    }

    fn url_on(&self, node: SocketAddr, path: &str) -> String {
        format!("{}://{}{}", self.scheme(), node, self.in_room(path))
    }

    /// The only node, or on two nodes either at random, whatever `path`.
    fn node_for(&self, _path: &str) -> SocketAddr {
        self.nodes[pick(self.nodes.len())]
    }

    /// On two nodes: waits until `node` has every event either node has,
    /// so a read right after a write sees it wherever it goes. A node
    /// mirrors the other's appends within a millisecond or so; a real
    /// client simply gets them in its next read.
    async fn converge(&self, node: SocketAddr) {
        if self.nodes.len() < 2 {
            return;
        }
        let mut heads = Vec::new();
        for &each in &self.nodes {
            heads.push(self.head_on(each).await);
        }
        let newest = heads.into_iter().max().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.head_on(node).await < newest {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{node} never caught up"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
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
        let scheme = match self.https {
            true => "wss",
            false => "ws",
        };
        format!(
            "{scheme}://{}{}",
            node,
            self.in_room(&format!("/ws{query}"))
        )
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

    /// Registers `name` and sends `count` chat messages of about `len`
    /// characters, `at_once` requests at a time; each must be stored.
    pub async fn fill(&self, name: &str, count: usize, len: usize, at_once: usize) {
        let session = self.join(name).await["session"]
            .as_str()
            .unwrap()
            .to_owned();
        let text = "f".repeat(len);
        let mut senders = Vec::new();
        for part in 0..at_once {
            let (app, session, text) = (self.handle(), session.clone(), text.clone());
            senders.push(tokio::spawn(async move {
                for i in (part..count).step_by(at_once) {
                    app.say(&session, &format!("{i} {text}")).await;
                }
            }));
        }
        for sender in senders {
            sender.await.unwrap();
        }
    }

    /// Waits until the server reports `n` held long-polls.
    pub async fn until_long_polls_held(&self, n: i64) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let (_, stats) = self.get_json("/stats").await;
                if stats["transports"]["longpoll"]["open"].as_i64() == Some(n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the long-poll was held");
    }

    /// Stops the nodes as an operator would, answering what they hold: in
    /// this process through [`Server::shutdown`], the binary by SIGTERM.
    pub async fn shutdown(&mut self) {
        if let Some(Running::Binary(_)) = self.running {
            self.terminate();
            self.exited().await;
        } else if let Some(Running::InProcess { servers, redis }) = self.running.take() {
            for server in servers {
                server.shutdown().await;
            }
            drop(redis);
        }
    }

    /// For the binary: kills it at once (SIGKILL), as a crash would, and
    /// reaps it.
    pub async fn kill(&mut self) {
        let child = &mut self.binary().child;
        child.kill().await.expect("the child is ours to kill");
    }

    /// For the binary: asks it to stop (SIGTERM), as a service manager does.
    pub fn terminate(&mut self) {
        let pid = self.binary().child.id().expect("it has not been reaped");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// For the binary: waits for it to exit, and returns how it did.
    pub async fn exited(&mut self) -> ExitStatus {
        let child = &mut self.binary().child;
        tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("it exited")
            .unwrap()
    }

    /// For the binary: waits for a log line that contains every one of
    /// `needles`, passing over the lines before it.
    pub async fn log_line_with(&mut self, needles: &[&str]) -> String {
        let stderr = &mut self.binary().stderr;
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = stderr.recv().await {
                if needles.iter().all(|needle| line.contains(needle)) {
                    return line;
                }
            }
            panic!("no log line contains {needles:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line contains {needles:?} in time"))
    }

    /// For the binary: the next line it writes on its stdout, after the
    /// one that gave its address.
    pub async fn stdout_line(&mut self) -> String {
        let stdout = &mut self.binary().stdout;
        tokio::time::timeout(PATIENCE, stdout.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("stdout still open")
    }

    fn binary(&mut self) -> &mut Binary {
        match &mut self.running {
            Some(Running::Binary(binary)) => binary,
            _ => panic!("not an app over the pushlab binary"),
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
        self.nodes.clone()
    }

    fn scheme(&self) -> &'static str {
        match self.https {
            true => "https",
            false => "http",
        }
    }

    fn ws_connector(&self) -> Option<tokio_tungstenite::Connector> {
        self.tls.clone()
    }
}

/// Asserts that `response` is the JSON error `code` with `status`, with a
/// message for people beside the code.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a message for humans: {body}"
    );
}
