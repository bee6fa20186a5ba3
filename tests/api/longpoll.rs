//! Long polling holds a request until there is something to send.

use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn a_long_poll_with_nothing_new_is_still_held_after_one_second() {
    let app = spawn_app().await;
    let head = app.head().await;
    let path = format!("/longpoll?since={head}&timeout=20");
    let request = app.get(&path);
    let held = tokio::time::timeout(Duration::from_secs(1), request).await;
    assert!(
        held.is_err(),
        "the request was answered before anything happened"
    );
}

#[tokio::test]
async fn a_held_long_poll_returns_when_a_message_arrives() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let poll = {
        let app = app.handle();
        tokio::spawn(async move { app.get_json("/longpoll?since=1&timeout=20").await.1 })
    };
    // Act: send only once the long-poll is held.
    app.until_long_polls_held(1).await;
    let seq = app.say(&session, "wake up").await;
    let body = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("answered")
        .unwrap();
    // Assert: answered with the event, well before its 20 s timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["seq"], seq);
    assert_eq!(events[0]["text"], "wake up");
    assert_eq!(body["cursor"], seq);
}

#[tokio::test]
async fn a_long_poll_with_nothing_sent_returns_empty_at_its_timeout() {
    let app = spawn_app().await;
    let started = Instant::now();
    let (status, body) = app.get_json("/longpoll?since=0&timeout=1").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "held until its timeout"
    );
    assert_eq!(body["events"], serde_json::json!([]));
    assert_eq!(body["cursor"], 0);
    assert_eq!(body["gap"], false);
}

#[tokio::test]
async fn the_timeout_is_capped_by_the_server() {
    let app = spawn_app_with(|c| c.longpoll_timeout = 1.0).await;
    let started = Instant::now();
    let (status, body) = app.get_json("/longpoll?since=0&timeout=600").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "capped well below 600 s"
    );
    assert_eq!(body["events"], serde_json::json!([]));
}

#[tokio::test]
async fn a_long_poll_with_something_newer_answers_at_once() {
    let app = spawn_app().await;
    app.join("alice").await;
    let (_, body) = tokio::time::timeout(
        Duration::from_secs(5),
        app.get_json("/longpoll?since=0&timeout=20"),
    )
    .await
    .expect("not held");
    assert_eq!(body["events"][0]["type"], "join");
}

#[tokio::test]
async fn a_second_long_poll_for_the_same_session_answers_the_first_at_once() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let path = format!("/longpoll?since=1&timeout=20&session={session}");
    let hold = |path: String| {
        let app = app.handle();
        tokio::spawn(async move { app.get_json(&path).await.1 })
    };
    let first = hold(path.clone());
    app.until_long_polls_held(1).await;
    let second = hold(path);
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .expect("the first was answered")
        .unwrap();
    assert_eq!(first["events"], serde_json::json!([]));
    assert!(!second.is_finished(), "the second one is held");
    second.abort();
}

#[tokio::test]
async fn a_held_long_poll_keeps_its_session_alive() {
    let app = spawn_app_with(|c| c.presence_timeout = 0.5).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    // Held for 2 s: four times the presence timeout.
    let (_, body) = app
        .get_json(&format!("/longpoll?since=1&timeout=2&session={session}"))
        .await;
    assert_eq!(
        body["events"],
        serde_json::json!([]),
        "no leave happened while it was held"
    );
    let (status, _) = app
        .get_json(&format!("/poll?since=1&session={session}"))
        .await;
    assert_eq!(status, 200, "the session is still live");
}

#[tokio::test]
async fn a_long_poll_from_a_listed_origin_gets_the_cors_grant_on_its_answer_and_its_refusal() {
    // Arrange
    let app = spawn_app_with(|c| c.allowed_origins = vec!["http://friend.example".into()]).await;
    let long_poll = |query: &str| {
        app.http
            .get(app.url(&format!("/longpoll?{query}")))
            .header("origin", "http://friend.example")
            .send()
    };

    // Act
    let answered = long_poll("since=0&timeout=0").await.unwrap();
    let refused = long_poll("since=0&timeout=soon").await.unwrap();

    // Assert
    assert_eq!(answered.status(), 200);
    assert_eq!(
        answered.headers()["access-control-allow-origin"],
        "http://friend.example"
    );
    assert_eq!(answered.headers()["vary"], "Origin");
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "http://friend.example"
    );
    expect_error(refused, 400, "bad_request").await;
}

#[tokio::test]
async fn a_clients_long_poll_is_counted_to_the_byte_both_ways_heads_included() {
    // Arrange
    let app = spawn_app().await;
    let request = "GET /longpoll?since=0&timeout=0&client=held-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                   Accept: */*\r\nConnection: close\r\n\r\n";

    // Act
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut socket, request.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut answer)
        .await
        .unwrap();

    // Assert: the server's count is exactly what crossed the socket.
    let (status, traffic) = app.get_json("/traffic?client=held-1").await;
    assert_eq!(status, 200);
    let long_poll = &traffic["longpoll"];
    assert_eq!(long_poll["requests"], 1);
    assert_eq!(long_poll["bytes_in"], request.len());
    assert_eq!(long_poll["bytes_out"], answer.len());
}
