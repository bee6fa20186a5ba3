//! The classroom figures: each client's bytes counted exactly on the socket,
//! both ways, heads included; the simulated delay; the clock and join URL.

use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Sends `request` on a fresh connection and reads the whole answer (the
/// request asks the server to close after it).
pub async fn exchange(app: &TestApp, request: &str) -> Vec<u8> {
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    answer
}

async fn traffic(app: &TestApp, client: &str) -> Value {
    let (status, body) = app.get_json(&format!("/traffic?client={client}")).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn a_clients_poll_is_counted_to_the_byte_both_ways_heads_included() {
    // Arrange
    let app = spawn_app().await;
    let request = "GET /poll?since=0&client=exact-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                   User-Agent: a-browser-sized-user-agent/1.0 (with some words)\r\n\
                   Accept: */*\r\nConnection: close\r\n\r\n";

    // Act
    let answer = exchange(&app, request).await;

    // Assert: the server's count is exactly what crossed the socket.
    let poll = &traffic(&app, "exact-1").await["poll"];
    assert_eq!(poll["requests"], 1);
    assert_eq!(poll["bytes_in"], request.len());
    assert_eq!(poll["bytes_out"], answer.len());
}

#[tokio::test]
async fn requests_on_one_keep_alive_connection_are_charged_each_to_its_own_client() {
    // Arrange: two clients' requests, one after the other on one connection.
    let app = spawn_app().await;
    let first = "GET /poll?client=one HTTP/1.1\r\nHost: x\r\n\r\n";
    let second = "GET /stats?client=two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut socket = TcpStream::connect(app.addr).await.unwrap();

    // Act
    socket.write_all(first.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let first_len = read_one_response(&mut socket, &mut answer).await;
    socket.write_all(second.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).await.unwrap();

    // Assert
    let one = traffic(&app, "one").await;
    assert_eq!(one["poll"]["bytes_in"], first.len());
    assert_eq!(one["poll"]["bytes_out"], first_len);
    assert_eq!(one["other"]["requests"], 0);
    let two = traffic(&app, "two").await;
    assert_eq!(two["other"]["requests"], 1);
    assert_eq!(two["other"]["bytes_in"], second.len());
    assert_eq!(two["other"]["bytes_out"], rest.len());
}

/// Reads one response with a Content-Length body; returns its size.
async fn read_one_response(socket: &mut TcpStream, buf: &mut [u8]) -> usize {
    let mut got = 0;
    loop {
        got += socket.read(&mut buf[got..]).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..got]);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            if got >= head_end + 4 + length {
                return got;
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_is_charged_its_handshake_and_every_frame() {
    // Arrange
    let app = spawn_app().await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?client=sock-1", app.addr))
            .await
            .unwrap();
    let hello = socket.next().await.unwrap().unwrap();

    // Act: one frame up, and its error frame down.
    socket
        .send(Message::text(r#"{"type":"message","text":""}"#))
        .await
        .unwrap();
    let error = socket.next().await.unwrap().unwrap();

    // Assert: the handshake (at least its request line and 101) plus the
    // frames: 2 header bytes and a 4-byte mask on the way up.
    let ws = &traffic(&app, "sock-1").await["ws"];
    assert_eq!(ws["requests"], 1);
    let up_frame = 2 + 4 + r#"{"type":"message","text":""}"#.len() as u64;
    let down_frames = (2 + hello.len() + 2 + error.len()) as u64;
    assert!(ws["bytes_in"].as_u64().unwrap() > up_frame + 100, "{ws}");
    assert!(
        ws["bytes_out"].as_u64().unwrap() > down_frames + 100,
        "{ws}"
    );
}

#[tokio::test]
async fn traffic_asks_for_a_plain_client_id() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/traffic?client=not%20ok").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let unknown = traffic(&app, "never-seen").await;
    assert_eq!(unknown["poll"]["requests"], 0);
}

#[tokio::test]
async fn the_simulated_delay_holds_each_direction_of_every_connection() {
    // Arrange
    let app = spawn_app_with(|config| config.delay_ms = 100).await;
    let plain = spawn_app().await;

    // Act: a request and answer on a fresh connection: one way up, one down.
    let started = Instant::now();
    exchange(
        &app,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let delayed = started.elapsed();
    let started = Instant::now();
    exchange(
        &plain,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let direct = started.elapsed();

    // Assert
    assert!(delayed >= Duration::from_millis(200), "{delayed:?}");
    assert!(delayed < Duration::from_millis(200) + direct + Duration::from_millis(150));
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["server"]["delay_ms"], 100);
}

#[tokio::test]
async fn a_websocket_through_the_delay_still_says_hello_and_echoes() {
    let app = spawn_app_with(|config| config.delay_ms = 50).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
        .await
        .unwrap();
    let hello: Value =
        serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    let started = Instant::now();
    socket
        .send(Message::text(r#"{"type":"message","text":""}"#))
        .await
        .unwrap();
    socket.next().await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn the_server_tells_its_clock_its_join_url_and_draws_it_as_a_qr_code() {
    let app = spawn_app().await;
    let before = pushlab::log::now_millis();
    let (_, time) = app.get_json("/time").await;
    assert!(time["now"].as_u64().unwrap() >= before);
    let (_, join) = app.get_json("/join").await;
    assert_eq!(join["reachable"], false);
    assert_eq!(join["urls"][0], format!("http://{}/", app.addr));
    let qr = app
        .get("/qr.svg?text=http%3A%2F%2F10.0.0.7%3A8080%2F")
        .await;
    assert_eq!(qr.status(), 200);
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");
    assert!(qr.text().await.unwrap().contains("<svg"));
    let (status, _) = app
        .get_json(&format!("/qr.svg?text={}", "x".repeat(600)))
        .await;
    assert_eq!(status, 400);
}

/// How many of `clients`' connections to the server on `port` are still
/// established at the server's end (with the delay, the relay's end).
fn established_from(port: u16, clients: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    // The table is read while it changes, so a socket may be listed twice:
    // count each client once.
    let established: std::collections::BTreeSet<u16> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() > 3 && port_of(fields[1]) == Some(port) && fields[3] == "01")
        .filter_map(|fields| port_of(fields[2]))
        .filter(|p| clients.contains(p))
        .collect();
    established.len()
}

/// Waits up to `patience` for `ok` to hold of [`established_from`], and
/// returns the last count.
async fn wait_established(
    port: u16,
    clients: &[u16],
    patience: Duration,
    ok: impl Fn(usize) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let now = established_from(port, clients);
        if ok(now) || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_the_delay_a_silent_client_s_relay_is_released_with_its_connection() {
    // Arrange: the delay relays each connection through a loopback pair.
    let app = spawn_app_with(|config| config.delay_ms = 10).await;
    let port = app.addr.port();

    // Act: 20 clients connect and never send a request head; the server
    // cuts each after its 5 s head timeout.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    let clients: Vec<u16> = silent
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    let held = wait_established(port, &clients, Duration::from_secs(3), |n| n >= 20).await;

    // Assert: once the server has cut them, the relay lets go of the
    // clients' sockets too, well before its 60 s grace for a half-open one.
    assert_eq!(held, 20);
    let left = wait_established(port, &clients, Duration::from_secs(20), |n| n == 0).await;
    assert_eq!(
        left, 0,
        "the relay still holds clients the server cut 15 s ago"
    );
    drop(silent);
}

#[tokio::test]
async fn the_lecture_notes_are_served_as_markdown_and_as_a_rendered_page() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let markdown = app.get("/lecture.md").await;
    let page = app.get("/lecture.html").await;

    // Assert: the Markdown as it is, and a page made from the same text.
    assert_eq!(markdown.status(), 200);
    assert!(markdown.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = markdown.text().await.unwrap();
    assert!(text.starts_with("# Server push, walked through with pushlab\n"));
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Server push, walked through with pushlab</h1>"));
    assert!(html.contains("<h2>7. WebRTC</h2>"));
    assert!(html.contains("<pre><code class=\"language-sh\">"));
    assert!(!html.contains("## "), "no heading is left as Markdown");
}

/// Long-polls from `since` until an event by `name` of `kind` arrives;
/// returns the cursor after it.
async fn until_event(app: &TestApp, since: u64, name: &str, kind: &str) -> u64 {
    let mut cursor = since;
    loop {
        let (status, batch) = app.get_json(&format!("/longpoll?since={cursor}")).await;
        assert_eq!(status, 200);
        cursor = batch["cursor"].as_u64().unwrap();
        let found = batch["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name && e["type"] == kind);
        if let Some(event) = found {
            return event["seq"].as_u64().unwrap();
        }
    }
}

#[tokio::test]
async fn post_demo_sets_the_demo_bots_rate_and_zero_takes_it_out_of_the_room() {
    // Arrange
    let app = spawn_app_with(|c| {
        c.demo = true;
        c.demo_rate = 20;
    })
    .await;
    until_event(&app, 0, "demobot", "mousemove").await;

    // Act: idle
    let idle = app
        .post_json("/demo", &serde_json::json!({"rate": 0}))
        .await;

    // Assert: it leaves, then nothing more is published
    assert_eq!(idle.status(), 200);
    let body: Value = idle.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"room": "lobby", "rate": 0}));
    let left = until_event(&app, 0, "demobot", "leave").await;
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["server"]["demo"]["rate"], 0);
    assert_eq!(stats["head"], left, "nothing after its leave");
    let held = tokio::time::timeout(
        Duration::from_secs(1),
        app.get_json(&format!("/longpoll?since={left}")),
    )
    .await;
    assert!(held.is_err(), "idle: a long-poll is still held after 1 s");

    // Act and assert: a rate brings it back, at that rate
    let fast = app
        .post_json("/demo", &serde_json::json!({"rate": 50}))
        .await;
    assert_eq!(fast.status(), 200);
    until_event(&app, left, "demobot", "join").await;
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["server"]["demo"]["rate"], 50);
}

#[tokio::test]
async fn post_demo_refuses_another_room_a_rate_past_the_limit_and_a_server_without_a_bot() {
    let app = spawn_app_with(|c| {
        c.demo = true;
        c.rate_limit = 60;
    })
    .await;
    let refused = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.post_json(path, &body).await }
    };
    crate::helpers::expect_error(
        refused("/demo?room=physics", serde_json::json!({"rate": 1})).await,
        404,
        "not_found",
    )
    .await;
    crate::helpers::expect_error(
        refused("/demo", serde_json::json!({"rate": 61})).await,
        400,
        "bad_request",
    )
    .await;
    crate::helpers::expect_error(
        refused("/demo", serde_json::json!({"rate": "fast"})).await,
        400,
        "bad_request",
    )
    .await;

    let plain = spawn_app().await;
    crate::helpers::expect_error(
        plain
            .post_json("/demo", &serde_json::json!({"rate": 1}))
            .await,
        404,
        "not_found",
    )
    .await;
}
