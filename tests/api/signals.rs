//! The signal relay: WebRTC offers, answers and candidates passed between
//! two sessions of one room over their WebSockets, never logged, bounded,
//! and refused with a clear code.

use futures::{SinkExt as _, StreamExt as _};
use pushlab_testkit::WsStream;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::{
    spawn_app, spawn_app_with, From, Reader, RedisServer, TestApp, ALL, PATIENCE,
};

/// A registered user with a WebSocket that takes signals (or not).
struct Peer {
    name: String,
    session: String,
    socket: WsStream,
    /// Signals received so far, in order.
    signals: Vec<Value>,
}

impl Peer {
    /// Registers `name` over HTTP and opens its socket, with
    /// `signals=true` when `listening`.
    async fn join(app: &TestApp, name: &str, listening: bool) -> Peer {
        let welcome = app.join(name).await;
        let session = welcome["session"].as_str().unwrap().to_owned();
        let since = welcome["cursor"].as_u64().unwrap();
        let mut query = format!("?session={session}&since={since}");
        if listening {
            query.push_str("&signals=true");
        }
        let (socket, _) = tokio_tungstenite::connect_async(app.ws_url(&query))
            .await
            .expect("the socket opens");
        let mut peer = Peer {
            name: name.to_owned(),
            session,
            socket,
            signals: Vec::new(),
        };
        peer.next_of("hello").await;
        peer
    }

    async fn send(&mut self, frame: &Value) {
        self.socket
            .send(WsMessage::Text(frame.to_string()))
            .await
            .unwrap();
    }

    async fn signal(&mut self, to: &str, kind: &str, data: Value) {
        self.send(&json!({"type": "signal", "to": to, "kind": kind, "data": data}))
            .await;
    }

    /// Reads frames until one of type `kind` arrives, keeping every signal
    /// seen on the way in `signals`.
    async fn next_of(&mut self, kind: &str) -> Value {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let frame = match self.socket.next().await.expect("the socket is open") {
                    Ok(WsMessage::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
                    Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => continue,
                    other => panic!("unexpected frame {other:?}"),
                };
                if frame["type"] == "signal" {
                    self.signals.push(frame.clone());
                }
                if frame["type"] == kind {
                    return frame;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} got no {kind} frame", self.name))
    }

    /// Every signal that reached this socket up to now: the socket answers
    /// a frame only after the signals already waiting for it, so an
    /// error in answer to a bad frame marks the end of them.
    async fn signals_so_far(&mut self) -> Vec<Value> {
        self.signal("nobody-here", "offer", json!("flush")).await;
        let error = self.next_of("error").await;
        assert_eq!(error["code"], "unknown_target");
        std::mem::take(&mut self.signals)
    }
}

#[tokio::test]
async fn a_signal_reaches_only_the_session_it_names() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", true).await;
    let mut cat = Peer::join(&app, "cat", true).await;

    ann.signal("BOB", "offer", json!({"type": "offer", "sdp": "v=0"}))
        .await;
    let received = bob.next_of("signal").await;

    assert_eq!(
        received,
        json!({"type": "signal", "from": "ann", "kind": "offer", "data": {"type": "offer", "sdp": "v=0"}})
    );
    assert!(received.get("seq").is_none(), "a signal is no log event");
    assert_eq!(cat.signals_so_far().await, Vec::<Value>::new());
    assert_eq!(ann.signals_so_far().await, Vec::<Value>::new());
}

#[tokio::test]
async fn an_answer_and_candidates_come_back_the_same_way() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", true).await;

    ann.signal("bob", "offer", json!("o")).await;
    bob.next_of("signal").await;
    bob.signal("ann", "answer", json!("a")).await;
    bob.signal("ann", "candidate", json!({"candidate": "c", "sdpMid": "0"}))
        .await;

    let answer = ann.next_of("signal").await;
    let candidate = ann.next_of("signal").await;
    assert_eq!(
        (answer["from"].clone(), answer["kind"].clone()),
        (json!("bob"), json!("answer"))
    );
    assert_eq!(candidate["data"], json!({"candidate": "c", "sdpMid": "0"}));
}

#[tokio::test]
async fn a_signal_to_someone_not_online_is_refused_with_unknown_target() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;

    ann.signal("ghost", "offer", json!("o")).await;
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "unknown_target");
    assert_eq!(error["to"], "ghost");
    assert!(error["error"].as_str().unwrap().contains("ghost"));
}

#[tokio::test]
async fn a_signal_to_a_session_of_another_room_is_refused_with_unknown_target() {
    let app = spawn_app().await;
    let elsewhere = app.view_in("other");
    let mut far = Peer::join(&elsewhere, "far", true).await;
    let mut ann = Peer::join(&app, "ann", true).await;

    ann.signal("far", "offer", json!("o")).await;
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "unknown_target");
    assert_eq!(far.signals_so_far().await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_signal_to_someone_whose_socket_takes_no_signals_is_refused() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let _bob = Peer::join(&app, "bob", false).await;

    ann.signal("bob", "offer", json!("o")).await;
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "target_not_listening");
    assert_eq!(error["to"], "bob");
}

#[tokio::test]
async fn a_socket_that_takes_no_signals_cannot_send_them() {
    let app = spawn_app().await;
    let _ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", false).await;

    bob.signal("ann", "offer", json!("o")).await;
    let error = bob.next_of("error").await;

    assert_eq!(error["code"], "bad_request");
}

#[tokio::test]
async fn a_signal_to_oneself_is_refused() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;

    ann.signal("Ann", "offer", json!("o")).await;
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "bad_request");
    assert_eq!(ann.signals_so_far().await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_signal_over_the_size_limit_is_refused_with_too_large() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", true).await;

    ann.signal("bob", "offer", json!("v".repeat(17 * 1024)))
        .await;
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "too_large");
    assert_eq!(error["to"], "bob");
    assert_eq!(bob.signals_so_far().await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_signal_of_an_unknown_kind_is_refused_with_bad_request() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let _bob = Peer::join(&app, "bob", true).await;

    ann.signal("bob", "hug", json!("o")).await;
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "bad_request");
}

#[tokio::test]
async fn signals_past_the_rate_limit_are_refused_with_rate_limited() {
    // 2 a second, bursts of 4.
    let app = spawn_app_with(|config| config.signal_rate = 2).await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", true).await;

    for n in 0..5 {
        ann.signal("bob", "candidate", json!(n)).await;
    }
    let error = ann.next_of("error").await;

    assert_eq!(error["code"], "rate_limited");
    assert_eq!(error["to"], "bob");
    let delivered: Vec<Value> = bob
        .signals_so_far()
        .await
        .into_iter()
        .map(|s| s["data"].clone())
        .collect();
    assert_eq!(delivered, [json!(0), json!(1), json!(2), json!(3)]);
}

#[tokio::test]
async fn a_socket_without_a_session_cannot_signal() {
    let app = spawn_app().await;
    let _bob = Peer::join(&app, "bob", true).await;
    let mut observer = Reader::open(&app, crate::helpers::Kind::Ws, From::default()).await;
    observer.control("hello").await;

    observer
        .ws_send(&json!({"type": "signal", "to": "bob", "kind": "offer", "data": "o"}))
        .await;
    let error = observer.control("error").await;

    assert_eq!(error["code"], "unknown_session");
}

#[tokio::test]
async fn signals_over_http_are_refused() {
    let app = spawn_app().await;
    let ann = app.join("ann").await;
    let _bob = Peer::join(&app, "bob", true).await;

    let response = app
        .send(
            ann["session"].as_str().unwrap(),
            &json!({"type": "signal", "to": "bob", "kind": "offer", "data": "o"}),
        )
        .await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
}

#[tokio::test]
async fn signals_never_appear_in_any_transports_reads() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", true).await;
    let head_before = app.head().await;

    ann.signal("bob", "offer", json!("o")).await;
    bob.next_of("signal").await;
    bob.signal("ann", "answer", json!("a")).await;
    ann.next_of("signal").await;
    let marker = app.say(&ann.session, "after the signals").await;

    assert_eq!(marker, head_before + 1, "signals take no seq");
    for kind in ALL {
        let mut reader = Reader::open(&app, kind, From::since(0)).await;
        let events = reader.read_through(marker).await.to_vec();
        assert!(
            events.iter().all(|e| e["type"] != "signal"),
            "{kind:?}: {events:?}"
        );
        assert!(
            reader.controls.iter().all(|c| c["type"] != "signal"),
            "{kind:?}: {:?}",
            reader.controls
        );
    }
    // A socket of a session that opens later gets no replay either.
    let mut late = Peer::join(&app, "late", true).await;
    assert_eq!(late.signals_so_far().await, Vec::<Value>::new());
}

#[tokio::test]
async fn stats_count_the_signals_relayed_and_refused() {
    let app = spawn_app().await;
    let mut ann = Peer::join(&app, "ann", true).await;
    let mut bob = Peer::join(&app, "bob", true).await;

    ann.signal("bob", "offer", json!("o")).await;
    bob.next_of("signal").await;
    ann.signal("ghost", "offer", json!("o")).await;
    ann.next_of("error").await;
    let (status, stats) = app.get_json("/stats").await;

    assert_eq!(status, 200);
    assert_eq!(stats["signals"], json!({"relayed": 1, "refused": 1}));
}

#[tokio::test]
async fn config_tells_the_page_its_ice_servers() {
    let app = spawn_app_with(|config| {
        config.ice_servers = vec![
            pushlab::config::IceServer::parse("stun:stun.example:3478").unwrap(),
            pushlab::config::IceServer::parse("turn:turn.example:3478?username=u&credential=p")
                .unwrap(),
        ];
    })
    .await;

    let (status, config) = app.get_json("/config").await;

    assert_eq!(status, 200);
    assert_eq!(
        config["ice_servers"],
        json!([
            {"urls": "stun:stun.example:3478"},
            {"urls": "turn:turn.example:3478", "username": "u", "credential": "p"},
        ])
    );
    assert_eq!(config["signals"]["max_bytes"], 16 * 1024);
    assert_eq!(config["signals"]["per_second"], 20);
}

#[tokio::test]
async fn with_a_turn_secret_config_gives_each_page_turn_credentials_that_expire() {
    // Arrange: a TURN server given without credentials, and the secret
    // shared with it.
    let app = spawn_app_with(|config| {
        config.ice_servers =
            vec![pushlab::config::IceServer::parse("turn:turn.example:3478").unwrap()];
        config.turn_secret = Some("north".into());
        config.turn_ttl = 3600;
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // Act
    let (status, config) = app.get_json("/config").await;

    // Assert: the username is the expiry an hour from now, the password is
    // not the secret, and the secret is nowhere in the answer.
    assert_eq!(status, 200);
    let server = &config["ice_servers"][0];
    assert_eq!(server["urls"], "turn:turn.example:3478");
    let username = server["username"].as_str().expect("a minted username");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    let expiry: u64 = expiry.parse().expect("the expiry in Unix seconds");
    assert!(
        (now + 3600..=now + 3600 + 60).contains(&expiry),
        "expiry {expiry} is not an hour after {now}"
    );
    assert_eq!(user, "pushlab");
    let credential = server["credential"].as_str().expect("a minted password");
    assert_eq!(
        credential.len(),
        28,
        "base64 of a 20-byte HMAC-SHA1: {credential}"
    );
    assert!(!config.to_string().contains("north"));
}

#[tokio::test]
async fn a_turn_server_with_neither_credentials_nor_a_secret_is_refused_at_start() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = pushlab::Config {
        ice_servers: vec![pushlab::config::IceServer::parse("turn:turn.example:3478").unwrap()],
        ..pushlab::Config::default()
    };

    let refused = pushlab::serve(listener, config).err().expect("a refusal");

    assert!(refused.to_string().contains("--turn-secret"), "{refused}");
}

#[tokio::test]
async fn peers_on_two_nodes_sharing_redis_signal_each_other() {
    // Arrange: ann's socket on node A; bob's and cat's on node B.
    let redis = RedisServer::start();
    let url = redis.url();
    let a = spawn_app_with(|c| c.redis = Some(url.clone())).await;
    let b = spawn_app_with(|c| c.redis = Some(url)).await;
    let mut ann = Peer::join(&a, "ann", true).await;
    let mut bob = Peer::join(&b, "bob", true).await;
    let mut cat = Peer::join(&b, "cat", true).await;

    // Act
    ann.signal("BOB", "offer", json!({"sdp": "v=0"})).await;
    let offer = bob.next_of("signal").await;
    bob.signal("ann", "answer", json!("a")).await;
    let answer = ann.next_of("signal").await;
    ann.signal("ghost", "offer", json!("o")).await;
    let refused = ann.next_of("error").await;

    // Assert
    assert_eq!(
        offer,
        json!({"type": "signal", "from": "ann", "kind": "offer", "data": {"sdp": "v=0"}})
    );
    assert_eq!(
        (answer["from"].clone(), answer["data"].clone()),
        (json!("bob"), json!("a"))
    );
    assert_eq!(refused["code"], "unknown_target");
    assert_eq!(cat.signals_so_far().await, Vec::<Value>::new());
}
