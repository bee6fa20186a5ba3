//! The server around the transports: health, the embedded client, stats and
//! graceful shutdown.

use std::time::Duration;

use futures::StreamExt as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn the_root_serves_the_embedded_client() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let etag = response.headers()["etag"].clone();
    assert!(response.text().await.unwrap().contains("pushlab"));
    let again = app
        .http
        .get(app.url("/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn stats_count_requests_and_events_per_transport() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "hi").await;
    app.get("/poll?since=0").await;
    app.get("/poll?since=2").await;
    let (_, stats) = app.get_json("/stats").await;
    let poll = &stats["transports"]["poll"];
    assert_eq!(poll["requests"], 2);
    assert_eq!(poll["events"], 2);
    assert_eq!(poll["empty"], 1);
    assert!(poll["bytes"].as_u64().unwrap() > 100);
    assert_eq!(stats["head"], 2);
    assert_eq!(stats["online"], 1);
}

#[tokio::test]
async fn shutdown_answers_held_long_polls_and_closes_sockets_with_1001() {
    let mut app = spawn_app().await;
    let held = {
        let app = app.handle();
        tokio::spawn(async move { app.get_json("/longpoll?since=0&timeout=25").await.1 })
    };
    app.until_long_polls_held(1).await;
    let mut socket = Reader::open(&app, Kind::Ws, From::default()).await;
    socket.control("hello").await;
    let mut sse = app.get("/sse").await.bytes_stream();
    sse.next().await.expect("the hello chunk").unwrap();

    let shutdown = tokio::time::timeout(Duration::from_secs(10), app.shutdown());

    let (_, answered, close) = tokio::join!(shutdown, held, async {
        loop {
            match socket.ws().next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    });
    assert_eq!(answered.unwrap()["events"], serde_json::json!([]));
    assert_eq!(u16::from(close.unwrap().code), 1001);
    while let Some(chunk) = sse.next().await {
        if chunk.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn shutdown_ends_an_open_sse_stream_with_its_last_chunk() {
    let mut app = spawn_app().await;
    let alice = app.join("alice").await;
    let mut sse = app.get("/sse?since=0").await.bytes_stream();
    sse.next().await.expect("the hello chunk").unwrap();
    // A stream that has just sent an event, and one that waits, end alike.
    app.say(alice["session"].as_str().unwrap(), "bye").await;
    let mut text = String::new();
    while !text.contains("bye") {
        let chunk = sse.next().await.expect("the event").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("shutdown finished");
    // Ended by the stream itself (the body's last chunk), not cut off when
    // the grace period ran out: that would be an error here.
    while let Some(chunk) = sse.next().await {
        chunk.expect("the stream ended cleanly");
    }
}
