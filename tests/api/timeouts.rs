//! The send and body timeouts: a client that stops reading its answer, or
//! stops sending its body, loses its connection and gives its place back;
//! a client with nothing pending (a held long-poll, an idle connection) keeps
//! its own.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::helpers::*;

async fn stats(app: &TestApp) -> Value {
    app.get_json("/stats").await.1
}

/// Polls `/stats` until `ok` holds, for at most [`PATIENCE`].
async fn wait_for_stats(app: &TestApp, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        last = stats(app).await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never saw {what}; last stats: {last}");
}

/// Reads until the server closes the connection (EOF or reset), for at
/// most [`PATIENCE`], and returns what arrived.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    received
}

/// Reads one HTTP/1.1 response with a `Content-Length`: its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.expect("a response");
        assert!(n > 0, "the connection closed before a response");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    let status = head[9..12].parse().expect("a status code");
    let length: usize = content_length(&head).expect("a content-length");
    while received.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("the body");
        assert!(n > 0, "the connection closed inside the body");
        received.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&received[head_end..head_end + length]).expect("JSON");
    (status, body)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_cut_off_after_the_send_timeout_and_its_place_freed(
) {
    // Arrange: poll answers of 256 KiB each (their cap), for a client with
    // a tiny receive buffer. The kernel's send buffer (up to 4 MB here)
    // swallows some; the rest must wait in the server's own buffers.
    const PIPELINED: usize = 48;
    let app = spawn_app_with(|c| {
        c.send_timeout = 1.0;
        c.rate_limit = 0;
        c.max_connections = 4;
    })
    .await;
    app.fill("filler", 1000, 1900, 2).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.addr).await.unwrap();

    // Act: ask several times at once, and never read.
    let request = "GET /poll?since=0 HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(PIPELINED);
    stalled.write_all(request.as_bytes()).await.unwrap();
    wait_for_stats(&app, "the polls being answered", |s| {
        s["transports"]["poll"]["requests"].as_u64() >= Some(2)
    })
    .await;

    // Assert: its place comes back (only this /stats request holds one)...
    wait_for_stats(&app, "the stalled client's place freed", |s| {
        s["connections"] == 1
    })
    .await;
    // ...because the server cut the connection short of what was asked.
    let received = read_until_closed(&mut stalled).await;
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head was sent")
        + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let announced = content_length(&head).expect("a content-length");
    assert!(announced > 200_000, "each answer is large: {announced}");
    assert!(
        received.len() < PIPELINED * announced,
        "the answers were cut: {} of {} bytes",
        received.len(),
        PIPELINED * (head_end + announced)
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_held_long_poll_is_not_cut_by_the_send_timeout() {
    // Arrange
    let app = spawn_app_with(|c| c.send_timeout = 1.0).await;
    let head = app.head().await;
    let mut client = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();

    // Act: a long-poll held three times the send timeout, then the same
    // connection left idle past the send timeout and used again.
    let request =
        format!("GET /longpoll?since={head}&timeout=3 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut client).await;
    let held = started.elapsed();
    // Idling is what is under test here, not a way to wait for something.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (idle_status, _) = read_response(&mut client).await;

    // Assert
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], json!([]));
    assert!(held >= Duration::from_millis(2900), "held for {held:?}");
    assert_eq!(idle_status, 200);
}

#[tokio::test]
async fn a_post_whose_body_never_finishes_gets_408_body_timeout_and_frees_its_place() {
    // Arrange
    let app = spawn_app_with(|c| {
        c.body_timeout = 1.0;
        c.max_connections = 4;
    })
    .await;
    let mut client = TcpStream::connect(app.addr).await.unwrap();

    // Act: a body announced as 100 bytes, of which a few ever come.
    client
        .write_all(
            b"POST /register HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let received = read_until_closed(&mut client).await;

    // Assert: a 408 with its code, then the connection closed...
    let text = String::from_utf8_lossy(&received).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..])
        .unwrap_or_else(|err| panic!("a JSON body ({err}): {text}"));
    assert_eq!(body["code"], "body_timeout", "{text}");
    // ...and its place given back.
    wait_for_stats(&app, "the half-sent POST's place freed", |s| {
        s["connections"] == 1
    })
    .await;
    assert_eq!(app.register("after").await.status(), 200);
}
