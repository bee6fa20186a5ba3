//! Join and leave: a session ends on `leave`, on a clean WebSocket close, or
//! after it has been idle; its `leave` goes out and its name is freed.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

async fn last_event(app: &TestApp) -> serde_json::Value {
    let head = app.head().await;
    let (_, body) = app.get_json(&format!("/poll?since={}", head - 1)).await;
    body["events"][0].clone()
}

#[tokio::test]
async fn register_returns_the_session_and_what_a_late_joiner_needs() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "first").await;
    let bob = app.join("Bob").await;
    assert!(uuid::Uuid::parse_str(bob["session"].as_str().unwrap()).is_ok());
    assert_eq!(bob["session"].as_str().unwrap().len(), 36);
    assert_eq!(bob["name"], "Bob");
    assert_eq!(bob["cursor"], 3, "the cursor is bob's own join");
    assert_eq!(bob["epoch"], alice["epoch"]);
    assert_eq!(bob["history"][0]["text"], "first");
    assert_eq!(
        bob["users"],
        json!([{"name": "alice", "x": null, "y": null}, {"name": "Bob", "x": null, "y": null}])
    );
}

#[tokio::test]
async fn users_carry_their_last_cursor_position() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    app.send(
        alice["session"].as_str().unwrap(),
        &json!({"type": "mousemove", "x": 0.25, "y": 1}),
    )
    .await;
    let bob = app.join("bob").await;
    assert_eq!(
        bob["users"][0],
        json!({"name": "alice", "x": 0.25, "y": 1.0})
    );
}

#[tokio::test]
async fn a_leave_message_ends_the_session_at_once_over_http() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let left = app.send(session, &json!({"type": "leave"})).await;
    assert_eq!(left.status(), 200);
    assert_eq!(last_event(&app).await["type"], "leave");
    let again = app
        .send(session, &json!({"type": "message", "text": "still here?"}))
        .await;
    assert_eq!(again.status(), 401);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["code"],
        "unknown_session"
    );
    app.join("ALICE").await;
}

#[tokio::test]
async fn a_leave_frame_ends_the_session_and_closes_the_socket() {
    let app = spawn_app().await;
    let (mut socket, welcome) = ws_join(&app, "alice").await;
    socket.ws_send(&json!({"type": "leave"})).await;
    // The socket closes; drain to the close frame.
    tokio::time::timeout(PATIENCE, async {
        use futures::StreamExt as _;
        while let Some(Ok(frame)) = socket.ws().next().await {
            if frame.is_close() {
                break;
            }
        }
    })
    .await
    .expect("the socket closed");
    let event = last_event(&app).await;
    assert_eq!(
        (event["type"].as_str(), event["name"].as_str()),
        (Some("leave"), Some("alice"))
    );
    let session = welcome["session"].as_str().unwrap();
    let (status, _) = app.get_json(&format!("/poll?session={session}")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_clean_websocket_close_ends_the_session() {
    let app = spawn_app().await;
    let (mut socket, welcome) = ws_join(&app, "alice").await;
    assert_eq!(welcome["users"][0]["name"], "alice");
    socket.ws().close(None).await.unwrap();
    wait_for_leave(&app, "alice").await;
    app.join("alice").await;
}

#[tokio::test]
async fn a_websocket_can_attach_to_a_session_registered_over_http() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let from = From {
        since: 1,
        epoch: alice["epoch"].as_str().map(str::to_owned),
        session: Some(session.to_owned()),
    };
    let mut socket = Reader::open(&app, Kind::Ws, from).await;
    socket
        .ws_send(&json!({"type": "message", "text": "over ws", "id": "w1"}))
        .await;
    let events = socket.read_through(2).await;
    assert_eq!(events[0]["text"], "over ws");
    assert_eq!(
        events[0]["name"], "alice",
        "a session sends only under its own name"
    );
}

#[tokio::test]
async fn an_idle_session_times_out_with_a_leave() {
    let app = spawn_app_with(|c| c.presence_timeout = 0.5).await;
    let alice = app.join("alice").await;
    wait_for_leave(&app, "alice").await;
    let (status, body) = app
        .get_json(&format!(
            "/poll?session={}",
            alice["session"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unknown_session");
    app.join("alice").await;
}

#[tokio::test]
async fn an_open_stream_keeps_its_session_alive_and_its_end_starts_the_idle_clock() {
    let app = spawn_app_with(|c| c.presence_timeout = 0.5).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap().to_owned();
    let from = From {
        since: 1,
        epoch: None,
        session: Some(session.clone()),
    };
    let sse = Reader::open(&app, Kind::Sse, from.clone()).await;
    let ws = Reader::open(&app, Kind::Ws, from).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.head().await, 1, "no leave while streams are open");
    drop(sse);
    drop(ws);
    wait_for_leave(&app, "alice").await;
}

#[tokio::test]
async fn an_unclean_websocket_drop_leaves_the_session_to_resume() {
    let app = spawn_app_with(|c| c.presence_timeout = 3.0).await;
    let (socket, welcome) = ws_join(&app, "alice").await;
    drop(socket); // TCP goes away with no close frame.
    let session = welcome["session"].as_str().unwrap();
    let from = From {
        since: welcome["cursor"].as_u64().unwrap(),
        epoch: None,
        session: Some(session.to_owned()),
    };
    let mut again = Reader::open(&app, Kind::Ws, from).await;
    again
        .ws_send(&json!({"type": "message", "text": "back"}))
        .await;
    assert_eq!(again.read_through(2).await[0]["text"], "back");
}

async fn wait_for_leave(app: &TestApp, name: &str) {
    let mut reader = Reader::open(app, Kind::LongPoll, From::since(0)).await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            if reader
                .events
                .iter()
                .any(|e| e["type"] == "leave" && e["name"] == name)
            {
                return;
            }
            reader.receive_once().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never left"));
}

/// How many chat messages with `id` the log holds, and their seqs.
async fn messages_with_id(app: &TestApp, id: &str) -> Vec<u64> {
    let (_, poll) = app.get_json("/poll?since=0").await;
    poll["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message" && e["id"] == id)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_message_sent_twice_with_the_same_id_is_stored_once_and_both_answers_carry_its_seq() {
    for journal in [false, true] {
        // Arrange: in memory, then in a journal.
        let dir = tempfile::tempdir().unwrap();
        let app = spawn_app_with(|c| {
            if journal {
                c.data_dir = Some(dir.path().to_owned());
            }
        })
        .await;
        let session = app.join("alice").await["session"]
            .as_str()
            .unwrap()
            .to_owned();
        let message = json!({"type": "message", "text": "once", "id": "m1"});

        // Act
        let first = app.send(&session, &message).await;
        let first: serde_json::Value = first.json().await.unwrap();
        let again = app.send(&session, &message).await;
        let again: serde_json::Value = again.json().await.unwrap();

        // Assert
        assert_eq!(first["seq"], 2, "journal: {journal}");
        assert_eq!(again["seq"], first["seq"], "journal: {journal}");
        assert_eq!(
            messages_with_id(&app, "m1").await,
            [2],
            "journal: {journal}"
        );
    }
}
