//! The byte budgets of the event windows (`--room-bytes`, `--total-bytes`)
//! as a client meets them: trimmed events are a gap, and an append the
//! node's total has no room for is refused with 503 `store_full`.

use serde_json::{json, Value};

use crate::helpers::*;

/// A chat message of 2000 emoji, the largest text there is in bytes.
fn emoji() -> Value {
    json!({"type": "message", "text": "\u{1F600}".repeat(2000)})
}

async fn join_in(app: &TestApp, room: &str) -> String {
    let response = app
        .post_json(&format!("/register?room={room}"), &json!({"name": "ann"}))
        .await;
    assert_eq!(response.status(), 200, "register in {room}");
    let welcome: Value = response.json().await.unwrap();
    welcome["session"].as_str().unwrap().to_owned()
}

async fn send_in(app: &TestApp, room: &str, session: &str) -> reqwest::Response {
    app.post_json(&format!("/send?session={session}&room={room}"), &emoji())
        .await
}

#[tokio::test]
async fn a_full_node_refuses_an_append_with_store_full_once_the_room_has_nothing_left_to_trim() {
    // Arrange: rooms of 64 KiB (about four such messages) sharing 160 KiB.
    let app = spawn_app_with(|c| {
        c.room_bytes = 64 * 1024;
        c.total_bytes = 160 * 1024;
        c.rate_limit = 0;
    })
    .await;
    let first = join_in(&app, "r0").await;
    for _ in 0..10 {
        let sent = send_in(&app, "r0", &first).await;
        assert_eq!(sent.status(), 200, "a room trims its own oldest events");
    }
    let (_, r0) = app.get_json("/poll?since=0&room=r0").await;
    assert_eq!(r0["gap"], true, "the first room's oldest were trimmed");

    // Act: more rooms fill the node until one has nothing of its own left.
    let mut refused = None;
    for room in (1..10).map(|i| format!("r{i}")) {
        let session = join_in(&app, &room).await;
        for _ in 0..4 {
            let sent = send_in(&app, &room, &session).await;
            if sent.status() != 200 {
                refused = Some((room.clone(), sent));
                break;
            }
        }
        if refused.is_some() {
            break;
        }
    }

    // Assert
    let (room, refused) = refused.expect("the node's total was reached");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1"),
        "come back later"
    );
    expect_error(refused, 503, "store_full").await;
    let (status, batch) = app.get_json(&format!("/poll?since=0&room={room}")).await;
    assert_eq!(status, 200, "the full room still serves");
    assert!(
        batch["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "message"),
        "it kept none of the refused message: {batch}"
    );
    assert_eq!(
        send_in(&app, "r0", &first).await.status(),
        200,
        "a room with events of its own trims them to make room"
    );
}
