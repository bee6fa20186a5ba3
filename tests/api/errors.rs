//! Every rejection is JSON with a machine `code`, from a real request, and
//! nothing stops the server serving.

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::*;

async fn raw_post(app: &TestApp, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    raw_post_with(app, path, &[], body).await
}

/// POSTs `body` as JSON, with more `headers`.
async fn raw_post_with(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json");
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.body(body).send().await.unwrap()
}

/// `bytes` as a gzip member (RFC 1952) whose one deflate block is stored
/// rather than compressed: a body any gzip decoder reads back, made without
/// a compression library.
fn gzip_stored(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("a stored block holds at most 65,535 bytes");
    // Magic, deflate, no flags, no time, no extra flags, unknown system.
    let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    // The final block, stored: its length, and the length's complement.
    gzip.push(1);
    gzip.extend(len.to_le_bytes());
    gzip.extend((!len).to_le_bytes());
    gzip.extend(bytes);
    gzip.extend(crc32fast::hash(bytes).to_le_bytes());
    gzip.extend((bytes.len() as u32).to_le_bytes());
    gzip
}

#[tokio::test]
async fn a_gzip_encoded_body_is_refused_with_a_code_and_nothing_is_stored() {
    // Arrange: pushlab decodes no content coding, so it refuses a coded
    // body rather than read its compressed bytes.
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let send = format!("/send?session={}", alice["session"].as_str().unwrap());
    let gzip = [("content-encoding", "gzip")];
    let message = json!({"type": "message", "text": "zipped"}).to_string();
    let name = json!({"name": "bob"}).to_string();
    let head = app.head().await;

    // Act
    let sent = raw_post_with(&app, &send, &gzip, gzip_stored(message.as_bytes())).await;
    let registered = raw_post_with(&app, "/register", &gzip, gzip_stored(name.as_bytes())).await;

    // Assert
    expect_error(sent, 415, "unsupported_encoding").await;
    expect_error(registered, 415, "unsupported_encoding").await;
    assert_eq!(app.head().await, head, "nothing was stored");
    expect_error(app.register("alice").await, 409, "name_taken").await;
    app.join("bob").await;
    // Plain JSON labelled with another coding is refused too; `identity`
    // is no coding at all.
    let labelled = |coding| [("content-encoding", coding)];
    let plain = || message.clone().into_bytes();
    expect_error(
        raw_post_with(&app, &send, &labelled("br"), plain()).await,
        415,
        "unsupported_encoding",
    )
    .await;
    let identity = raw_post_with(&app, &send, &labelled("identity"), plain()).await;
    assert_eq!(identity.status(), 200);
}

#[tokio::test]
async fn each_error_code_comes_from_a_real_http_request() {
    let app = spawn_app_with(|c| c.rate_limit = 1).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let send = format!("/send?session={session}");

    expect_error(
        raw_post(&app, "/register", "{\"name\":").await,
        400,
        "bad_json",
    )
    .await;
    expect_error(raw_post(&app, &send, "not json").await, 400, "bad_json").await;
    expect_error(
        app.send(session, &json!({"type": "dance"})).await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        app.send(session, &json!({"type": "message"})).await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        app.send(session, &json!({"type": "message", "text": "   "}))
            .await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        app.send(session, &json!({"type": "mousemove", "x": 2, "y": 0}))
            .await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        app.send(session, &json!({"type": "register", "name": "again"}))
            .await,
        400,
        "bad_request",
    )
    .await;
    expect_error(app.get("/poll?since=-1").await, 400, "bad_request").await;
    expect_error(
        app.get("/longpoll?since=0&timeout=soon").await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        app.get("/poll?session=not-a-uuid").await,
        400,
        "bad_request",
    )
    .await;
    expect_error(
        raw_post(&app, "/send", "{\"type\":\"leave\"}").await,
        400,
        "bad_request",
    )
    .await;
    expect_error(app.register("1st").await, 400, "invalid_name").await;
    expect_error(app.register("<script>").await, 400, "invalid_name").await;
    expect_error(app.register(&"a".repeat(25)).await, 400, "invalid_name").await;
    let long_text = json!({"type": "message", "text": "x".repeat(2001)});
    expect_error(app.send(session, &long_text).await, 413, "too_large").await;
    expect_error(
        raw_post(&app, &send, vec![b' '; 65 * 1024]).await,
        413,
        "too_large",
    )
    .await;
    expect_error(app.register("ALICE").await, 409, "name_taken").await;
    let stranger = uuid::Uuid::new_v4();
    expect_error(
        app.send(&stranger.to_string(), &json!({"type": "leave"}))
            .await,
        401,
        "unknown_session",
    )
    .await;
    expect_error(
        app.get(&format!("/poll?session={stranger}")).await,
        401,
        "unknown_session",
    )
    .await;
    expect_error(
        app.get(&format!("/sse?session={stranger}")).await,
        401,
        "unknown_session",
    )
    .await;
    expect_error(
        app.get(&format!("/longpoll?session={stranger}")).await,
        401,
        "unknown_session",
    )
    .await;
    let form = app
        .http
        .post(app.url(&send))
        .header("content-type", "text/plain")
        .body("{\"type\":\"leave\"}")
        .send()
        .await
        .unwrap();
    expect_error(form, 415, "unsupported_media_type").await;
    // Rate limit 1/s allows a burst of 2.
    let move_to = json!({"type": "mousemove", "x": 0.1, "y": 0.1});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.send(session, &move_to).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    expect_error(app.send(session, &move_to).await, 429, "rate_limited").await;
    // The origin check needs a real upgrade request.
    let mut request = app.ws_url("").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "forbidden_origin");
        }
        other => panic!("the upgrade was not refused: {other:?}"),
    }
    expect_error(app.get("/no/such/thing").await, 404, "not_found").await;
    expect_error(
        app.http.delete(app.url("/poll")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(app.get("/ws").await, 400, "bad_request").await;
    // And after all that, the server still serves.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let carol = app.join("carol").await;
    assert_eq!(
        app.say(carol["session"].as_str().unwrap(), "still fine")
            .await,
        5
    );
}

/// An upgrade request reaches the WebSocket handshake before any route, so
/// it must be refused as the router would refuse it.
#[tokio::test]
async fn upgrade_requests_for_anything_but_get_ws_get_the_routers_json_errors() {
    let app = spawn_app().await;
    let upgrade = |method: reqwest::Method, path: &str| {
        app.http
            .request(method, app.url(path))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };

    let elsewhere = upgrade(reqwest::Method::GET, "/no/such/thing")
        .await
        .unwrap();
    let wrong_method = upgrade(reqwest::Method::POST, "/ws").await.unwrap();
    let bad_query = upgrade(reqwest::Method::GET, "/ws?since=abc")
        .await
        .unwrap();

    expect_error(elsewhere, 404, "not_found").await;
    expect_error(wrong_method, 405, "method_not_allowed").await;
    expect_error(bad_query, 400, "bad_request").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn websocket_upgrades_from_the_servers_own_origin_or_an_allowed_one_are_accepted() {
    let app = spawn_app_with(|c| c.allowed_origins = vec!["http://friend.example".into()]).await;
    for origin in [
        format!("http://{}", app.addr),
        "http://friend.example".to_string(),
    ] {
        let mut request = app.ws_url("").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        assert!(
            tokio_tungstenite::connect_async(request).await.is_ok(),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn websocket_errors_arrive_as_error_frames_and_the_socket_stays_open() {
    let app = spawn_app_with(|c| c.rate_limit = 1).await;
    app.join("taken").await;
    let mut socket = Reader::open(&app, Kind::Ws, From::default()).await;
    let cases = [
        ("{oops", "bad_json"),
        (r#"{"type":"message","text":"hi"}"#, "unknown_session"),
        (r#"{"type":"register","name":"9"}"#, "invalid_name"),
        (r#"{"type":"register","name":"TAKEN"}"#, "name_taken"),
        (r#"{"type":"fly"}"#, "bad_request"),
    ];
    for (frame, code) in cases {
        socket.ws().send_text(frame).await;
        let error = socket.control("error").await;
        assert_eq!(error["code"], code, "{frame}");
        assert!(error.get("seq").is_none());
    }
    socket
        .ws_send(&json!({"type": "register", "name": "bob"}))
        .await;
    let welcome = socket.control("welcome").await;
    assert_eq!(welcome["name"], "bob");
    let long = json!({"type": "message", "text": "y".repeat(2001), "id": "too-long"});
    socket.ws_send(&long).await;
    let error = socket.control("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("too_large"), Some("too-long"))
    );
    for _ in 0..2 {
        socket
            .ws_send(&json!({"type": "mousemove", "x": 0, "y": 0}))
            .await;
    }
    socket
        .ws_send(&json!({"type": "message", "text": "fast", "id": "m9"}))
        .await;
    let error = socket.control("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("rate_limited"), Some("m9"))
    );
    // Still open, still delivering.
    let head = app.head().await;
    socket.read_through(head).await;
}

#[tokio::test]
async fn a_websocket_frame_over_64_kib_closes_the_socket_with_1009() {
    let app = spawn_app().await;
    let mut socket = Reader::open(&app, Kind::Ws, From::default()).await;
    socket.control("hello").await;
    let huge = format!(r#"{{"type":"message","text":"{}"}}"#, "z".repeat(70 * 1024));
    socket.ws().send_text(&huge).await;
    let close = tokio::time::timeout(PATIENCE, async {
        use futures::StreamExt as _;
        loop {
            match socket.ws().next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed");
    assert_eq!(u16::from(close.unwrap().code), 1009);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

trait SendText {
    async fn send_text(&mut self, text: &str);
}

impl SendText
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_text(&mut self, text: &str) {
        use futures::SinkExt as _;
        self.send(tokio_tungstenite::tungstenite::Message::Text(
            text.to_owned(),
        ))
        .await
        .unwrap();
    }
}
