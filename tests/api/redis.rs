//! `--redis`: the HTTP answers when the store is shared in Redis, and when
//! Redis is gone.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_send_while_redis_is_down_answers_503_store_unavailable_and_is_not_stored() {
    // Arrange
    let mut redis = RedisServer::start();
    let app = spawn_app_on(&redis, |_| {}).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    app.say(session, "stored").await;

    // Act
    redis.kill();
    let refused = app
        .send(session, &json!({"type": "message", "text": "not stored"}))
        .await;

    // Assert
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "store_unavailable");
    let (_, poll) = app.get_json("/poll?since=0").await;
    assert_eq!(
        poll["events"].as_array().unwrap().len(),
        2,
        "join and one message"
    );
}

#[tokio::test]
async fn a_register_while_redis_is_down_answers_503_and_frees_the_name() {
    let mut redis = RedisServer::start();
    let app = spawn_app_on(&redis, |_| {}).await;

    redis.kill();
    let refused = app.register("bob").await;
    redis.restart();
    let mut again = app.register("bob").await;
    for _ in 0..50 {
        if again.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        again = app.register("bob").await;
    }

    assert_eq!(refused.status(), 503);
    assert_eq!(again.status(), 200, "the name was not left taken");
}

#[tokio::test]
async fn a_node_that_cannot_reach_its_redis_exits_with_a_clear_error() {
    // Arrange: a port nothing listens on.
    let url = format!("redis://127.0.0.1:{}/0", pushlab_testkit::free_port());

    // Act
    let started = start_binary(&["--redis", &url], &[]).await;

    // Assert: it never listened, and exits with an error and status 1,
    // not a panic (101).
    let Started::Refused { status, stderr } = started else {
        panic!("a node listened without its Redis");
    };
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Redis is unreachable"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_leave_while_redis_is_down_answers_503_and_is_written_once_when_redis_returns() {
    // Arrange: a Redis that keeps its data across a restart.
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_persistent(dir.path());
    let app = spawn_app_on(&redis, |_| {}).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let leave = json!({"type": "leave"});

    // Act: leave while Redis is down, then again once it is back.
    redis.kill();
    let refused = app.send(session, &leave).await;
    let (refused_status, refused_retry) = (
        refused.status(),
        refused.headers().contains_key("retry-after"),
    );
    let refused: serde_json::Value = refused.json().await.unwrap();
    redis.restart();
    let retried = send_until_redis_answers(&app, session, &leave).await;
    let retried_status = retried.status();
    let after = app.send(session, &leave).await;

    // Assert
    assert_eq!(refused_status, 503);
    assert!(refused_retry, "Retry-After invites the retry");
    assert_eq!(refused["code"], "store_unavailable");
    assert_eq!(
        retried_status, 200,
        "the session was kept live for its retry"
    );
    assert_eq!(after.status(), 401, "ended once it left");
    assert_eq!(
        events_of_kind(&app, "leave").await,
        1,
        "the leave is written once"
    );
}

#[tokio::test]
async fn a_websocket_leave_while_redis_is_down_gets_a_store_unavailable_frame_and_the_session_lives_on(
) {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_persistent(dir.path());
    let app = spawn_app_on(&redis, |_| {}).await;
    let (mut socket, welcome) = ws_join(&app, "alice").await;
    let session = welcome["session"].as_str().unwrap();

    // Act
    redis.kill();
    socket.ws_send(&json!({"type": "leave"})).await;
    let error = socket.control("error").await;
    redis.restart();
    let left = send_until_redis_answers(&app, session, &json!({"type": "leave"})).await;

    // Assert
    assert_eq!(error["code"], "store_unavailable");
    assert_eq!(left.status(), 200, "the session was still live");
    assert_eq!(events_of_kind(&app, "leave").await, 1);
}

#[tokio::test]
async fn a_message_retried_with_its_id_after_store_unavailable_is_stored_once_under_one_seq() {
    // Arrange: Redis holds every write for longer than a node waits, then
    // runs what it held.
    let redis = RedisServer::start();
    let app = spawn_app_on(&redis, |_| {}).await;
    let session = app.join("alice").await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = json!({"type": "message", "text": "once", "id": "m1"});
    assert_eq!(redis.command("CLIENT PAUSE 3000 WRITE"), "+OK");

    // Act: the send times out; the retry is answered once Redis goes on.
    let refused = app.send(&session, &message).await;
    let refused_status = refused.status();
    let retried = send_until_redis_answers(&app, &session, &message).await;
    let retried: serde_json::Value = retried.json().await.unwrap();
    let sent_again = app.send(&session, &message).await;
    let sent_again: serde_json::Value = sent_again.json().await.unwrap();
    // A later message is read back on this node, so the log holds the rest.
    app.say(&session, "after").await;

    // Assert
    assert_eq!(refused_status, 503);
    let seq = retried["seq"].as_u64().expect("the retry is answered");
    assert_eq!(
        sent_again["seq"], seq,
        "every send of the id answers one seq"
    );
    let (_, poll) = app.get_json("/poll?since=0").await;
    let stored: Vec<u64> = poll["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"] == "m1")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        stored,
        [seq],
        "stored once, under the seq every answer gave"
    );
}

/// The pushlab binary as a node on `redis`, with no rate limits, and with
/// more `flags`.
async fn binary_node(redis: &RedisServer, flags: &[&str]) -> TestApp {
    let url = redis.url();
    let mut all = vec!["--redis", &url, "--rate-limit", "0", "--ip-rate-limit", "0"];
    all.extend_from_slice(flags);
    spawn_binary(&all).await
}

#[tokio::test]
async fn readers_of_a_node_killed_mid_stream_resume_on_the_other_with_nothing_lost_or_repeated() {
    // Arrange: readers on every transport follow node A; a writer uses B.
    let redis = RedisServer::start();
    let mut a = binary_node(&redis, &[]).await;
    let b = binary_node(&redis, &[]).await;
    let welcome = b.join("writer").await;
    let session = welcome["session"].as_str().unwrap().to_owned();
    let mut readers = Vec::new();
    for kind in ALL {
        readers.push(Reader::open(&a, kind, From::since(0)).await);
    }
    for i in 0..50 {
        b.say(&session, &format!("m{i}")).await;
    }
    for reader in &mut readers {
        reader.read_through(30).await;
    }

    // Act: kill -9 node A mid-stream, write on, and reconnect every reader
    // to B from its cursor, with its epoch.
    a.kill().await;
    for i in 50..100 {
        b.say(&session, &format!("m{i}")).await;
    }
    let head = 101;
    for reader in &mut readers {
        let epoch = reader
            .events
            .last()
            .map(|_| welcome["epoch"].as_str().unwrap().to_owned());
        let from = From {
            since: reader.cursor(),
            epoch,
            session: None,
        };
        let mut resumed = Reader::open(&b, reader.kind, from).await;
        resumed.read_through(head).await;
        reader.events.extend(resumed.events);
        reader.controls.extend(resumed.controls);
    }

    // Assert
    for reader in &readers {
        assert_eq!(
            reader.seqs(),
            (1..=head).collect::<Vec<_>>(),
            "{:?}: every event once, in order",
            reader.kind
        );
        assert!(
            reader.controls.iter().all(|c| c["type"] != "gap"),
            "{:?}: no gap",
            reader.kind
        );
    }
}

/// Two nodes on one Redis, each a test app of its own.
async fn two_nodes(redis: &RedisServer) -> (TestApp, TestApp) {
    let a = spawn_app_on(redis, |_| {}).await;
    let b = spawn_app_on(redis, |_| {}).await;
    (a, b)
}

#[tokio::test]
async fn a_session_registered_on_one_node_is_served_by_the_other_on_every_transport() {
    // Arrange
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let welcome = a.join("alice").await;
    let session = welcome["session"].as_str().unwrap().to_owned();
    let from = From {
        since: welcome["cursor"].as_u64().unwrap(),
        epoch: welcome["epoch"].as_str().map(str::to_owned),
        session: Some(session.clone()),
    };
    let mut readers = Vec::new();
    for kind in ALL {
        readers.push(Reader::open(&b, kind, from.clone()).await);
    }

    // Act: every write goes through B.
    let said = b.say(&session, "through b").await;
    let mut ws = readers.pop().unwrap();
    ws.ws_send(&json!({"type": "mousemove", "x": 0.5, "y": 0.25}))
        .await;
    readers.push(ws);

    // Assert: every reader on B, holding the session, gets both.
    for reader in &mut readers {
        let events = reader.read_through(said + 1).await;
        let kinds: Vec<_> = events.iter().map(|e| e["type"].clone()).collect();
        assert_eq!(kinds, ["message", "mousemove"], "{:?}", reader.kind);
        assert!(events.iter().all(|e| e["name"] == "alice"));
    }
    let (_, users) = b.get_json("/stats").await;
    assert_eq!(users["online"], 1, "one user, on either node");
}

#[tokio::test]
async fn a_name_online_on_one_node_is_taken_on_the_other_until_it_leaves_there() {
    // Arrange
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let alice = a.join("alice").await;
    let session = alice["session"].as_str().unwrap();

    // Act
    let taken = b.register("ALICE").await;
    let left = b.send(session, &json!({"type": "leave"})).await;
    let after_leave = a
        .send(session, &json!({"type": "message", "text": "still here?"}))
        .await;
    let again = b.register("alice").await;

    // Assert
    expect_error(taken, 409, "name_taken").await;
    assert_eq!(left.status(), 200, "B ends a session A registered");
    expect_error(after_leave, 401, "unknown_session").await;
    assert_eq!(again.status(), 200);
    assert_eq!(events_of_kind(&a, "leave").await, 1);
}

#[tokio::test]
async fn a_session_of_one_room_is_refused_in_another_on_any_node() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let in_a = a.view_in("ayy").join("ann").await;
    let session = in_a["session"].as_str().unwrap();

    let refused = b
        .view_in("bee")
        .send(session, &json!({"type": "message", "text": "hi"}))
        .await;

    expect_error(refused, 403, "wrong_room").await;
}

#[tokio::test]
async fn the_sessions_of_a_node_killed_with_kill_9_leave_exactly_once_after_their_lease() {
    // Arrange: three users on node A, each holding an SSE stream there, so
    // A renews their leases; a watcher follows the log on B.
    let redis = RedisServer::start();
    let lease = ["--presence-timeout", "1"];
    let mut a = binary_node(&redis, &lease).await;
    let b = binary_node(&redis, &lease).await;
    let mut streams = Vec::new();
    let mut head = 0;
    for name in ["ann", "bob", "cy"] {
        let welcome = a.join(name).await;
        head = welcome["cursor"].as_u64().unwrap();
        let from = From {
            since: head,
            epoch: welcome["epoch"].as_str().map(str::to_owned),
            session: welcome["session"].as_str().map(str::to_owned),
        };
        streams.push(Reader::open(&a, Kind::Sse, from).await);
    }
    let mut watcher = Reader::open(&b, Kind::LongPoll, From::since(0)).await;
    watcher.read_through(head).await;

    // Longer than a lease: the streams keep the sessions alive.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (_, before) = b.get_json(&format!("/poll?since={head}")).await;
    assert_eq!(before["events"], json!([]), "no one left while connected");

    // Act
    a.kill().await;
    drop(streams);
    watcher.read_through(head + 3).await;
    // Twice the lease again, and many of B's reaps: a second leave would
    // have been written by now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let eve = b.join("eve").await;
    let later = b.say(eve["session"].as_str().unwrap(), "hi").await;
    watcher.read_through(later).await;

    // Assert
    let mut left: Vec<_> = watcher
        .events
        .iter()
        .filter(|e| e["type"] == "leave")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ann", "bob", "cy"], "each once, and only they");
    assert!(later > head + 3);
    let again = b.join("ann").await;
    assert_eq!(again["name"], "ann", "the dead node's names are free");
}

#[tokio::test]
async fn a_websocket_burst_is_stored_in_the_order_sent_and_its_refusals_answered_in_order() {
    // Arrange: a node on Redis whose sessions may send 10 a second, in
    // bursts of 20.
    let redis = RedisServer::start();
    let app = spawn_app_on(&redis, |c| c.rate_limit = 10).await;
    let (mut socket, _) = ws_join(&app, "burst").await;

    // Act: 60 messages back to back, without waiting for any.
    const SENT: usize = 60;
    for i in 0..SENT {
        socket
            .ws_send(&json!({"type": "message", "text": format!("m{i}"), "id": format!("{i}")}))
            .await;
    }
    let ids = |values: &[serde_json::Value], kind: &str| -> Vec<usize> {
        values
            .iter()
            .filter(|v| v["type"] == kind)
            .map(|v| v["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    tokio::time::timeout(PATIENCE, async {
        while ids(&socket.events, "message").len() + ids(&socket.controls, "error").len() < SENT {
            socket.receive_once().await;
        }
    })
    .await
    .expect("every message was stored or refused");

    // Assert: the burst is stored and the rest refused, each message once,
    // each side in the order sent, and stored with dense seqs.
    let stored = ids(&socket.events, "message");
    let refused = ids(&socket.controls, "error");
    assert!(stored.len() >= 20, "the burst is stored: {stored:?}");
    assert!(!refused.is_empty(), "past the burst, some are refused");
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
    assert!(refused.windows(2).all(|w| w[0] < w[1]), "{refused:?}");
    let mut every: Vec<usize> = stored.iter().chain(&refused).copied().collect();
    every.sort_unstable();
    assert_eq!(every, (0..SENT).collect::<Vec<_>>());
    assert!(socket
        .controls
        .iter()
        .filter(|c| c["type"] == "error")
        .all(|c| c["code"] == "rate_limited"));
    let seqs = socket.seqs();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn messages_sent_over_a_websocket_just_before_its_leave_are_stored_before_the_leave() {
    // Arrange
    let redis = RedisServer::start();
    let app = spawn_app_on(&redis, |c| c.rate_limit = 0).await;
    let (mut socket, welcome) = ws_join(&app, "quitter").await;
    let cursor = welcome["cursor"].as_u64().unwrap();

    // Act: Redis holds writes for a while. The first message goes to Redis
    // and waits there; the rest queue behind it on the node, and the leave
    // comes right behind them.
    assert_eq!(redis.command("CLIENT PAUSE 1000 WRITE"), "+OK");
    let say = |i: usize| json!({"type": "message", "text": format!("last words {i}")});
    socket.ws_send(&say(0)).await;
    until_redis_holds_a_write(&redis).await;
    for i in 1..30 {
        socket.ws_send(&say(i)).await;
    }
    socket.ws_send(&json!({"type": "leave"})).await;

    // Assert: all 30, then the leave; nothing refused.
    let mut watcher = Reader::open(&app, Kind::LongPoll, From::since(cursor)).await;
    let events = watcher.read_through(cursor + 31).await;
    let kinds: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut expected = vec!["message"; 30];
    expected.push("leave");
    assert_eq!(kinds, expected);
    assert!(
        socket.controls.iter().all(|c| c["type"] != "error"),
        "{:?}",
        socket.controls
    );
}

/// Waits until a node's script is held in `redis` by a `CLIENT PAUSE`.
async fn until_redis_holds_a_write(redis: &RedisServer) {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            // A blocked `XREAD` is a blocked client too; a held write is a
            // blocked script.
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .unwrap();
            let held = clients
                .lines()
                .any(|line| line.contains(" flags=b ") && line.contains(" cmd=evalsha "));
            if held {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the write reached Redis");
}

/// How many events of `kind` the log holds, as `app` reads it.
async fn events_of_kind(app: &TestApp, kind: &str) -> usize {
    let (_, poll) = app.get_json("/poll?since=0").await;
    poll["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

/// Sends `message` as a client that follows `Retry-After` does, until the
/// node answers otherwise than 503: it waits for the node to reach Redis
/// again, which no event tells.
async fn send_until_redis_answers(
    app: &TestApp,
    session: &str,
    message: &serde_json::Value,
) -> reqwest::Response {
    for _ in 0..50 {
        let answer = app.send(session, message).await;
        if answer.status() != 503 {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.send(session, message).await
}
