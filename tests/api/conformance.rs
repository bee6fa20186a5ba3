//! The same scenarios over poll, long-poll, SSE, WebSocket and
//! WebTransport (the test servers serve it): every reader
//! sees every event, once, in one order. Each scenario runs three times: in
//! the lobby; in a named room, where every request says `room=`; on two
//! nodes sharing one Redis (`--redis`), where each reader's request or
//! connection goes to either node at random; and over HTTPS (`--tls`), on
//! HTTP/1.1 and on HTTP/2.

use serde_json::{json, Value};

use crate::helpers::*;

async fn every_transport_delivers_every_event_in_the_same_order() {
    // Arrange
    let app = spawn_app().await;
    let mut readers = Vec::new();
    for kind in EVERY {
        readers.push(Reader::open(&app, kind, From::since(0)).await);
    }
    // Act
    let alice = app.join("alice").await;
    let bob = app.join("bob").await;
    let alice = alice["session"].as_str().unwrap();
    let bob = bob["session"].as_str().unwrap();
    for i in 0..20 {
        app.say(alice, &format!("hello {i}")).await;
        app.send(
            bob,
            &json!({"type": "mousemove", "x": i as f64 / 20.0, "y": 0.5}),
        )
        .await;
        let sent = app
            .send(bob, &json!({"type": "message", "text": format!("  reply {i}  "), "id": format!("b{i}")}))
            .await;
        assert_eq!(sent.status(), 200);
    }
    app.send(bob, &json!({"type": "leave"})).await;
    let head = app.head().await;
    assert_eq!(head, 2 + 60 + 1);
    // Assert
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for reader in &mut readers {
        let events = reader.read_through(head).await.to_vec();
        assert_eq!(
            events.len() as u64,
            head,
            "{:?} got every event exactly once",
            reader.kind
        );
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "{:?} in seq order",
            reader.kind
        );
        assert!(
            events.iter().all(|e| e["ts"].as_u64().unwrap() > 0),
            "ts is set"
        );
        assert!(events
            .iter()
            .all(|e| e["name"].is_string() && e["type"].is_string()));
        seen.push(events);
    }
    for other in &seen[1..] {
        assert_eq!(other, &seen[0], "every transport carries the same JSON");
    }
    let events = &seen[0];
    assert_eq!(
        events[0],
        json!({"seq": 1, "ts": events[0]["ts"], "type": "join", "name": "alice"})
    );
    assert_eq!(events[4]["type"], "message");
    assert_eq!(events[4]["text"], "reply 0", "text is trimmed");
    assert_eq!(events[4]["id"], "b0", "the client's id is echoed");
    assert!(events[2].get("id").is_none(), "no id when none was sent");
    assert_eq!(events[3]["x"], 0.0);
    assert_eq!(events[head as usize - 1]["type"], "leave");
}

async fn resuming_from_a_cursor_returns_exactly_the_newer_events() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let epoch = alice["epoch"].as_str().unwrap().to_owned();
    for i in 0..9 {
        app.say(session, &format!("m{i}")).await;
    }
    for kind in EVERY {
        let from = From::since(6).in_epoch(&epoch);
        let mut reader = Reader::open(&app, kind, from).await;
        let events = reader.read_through(10).await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![7, 8, 9, 10], "{kind:?}");
        assert!(reader.gaps.iter().all(|gap| !gap), "{kind:?} no gap");
        assert!(
            reader.controls.iter().all(|c| c["type"] != "gap"),
            "{kind:?} no gap"
        );
    }
}

async fn a_stream_starts_with_hello_naming_the_epoch_and_cursor() {
    let app = spawn_app().await;
    let epoch = app.join("alice").await["epoch"].clone();
    for kind in [Kind::Sse, Kind::Ws, Kind::Wt] {
        let mut reader = Reader::open(&app, kind, From::since(1)).await;
        let hello = reader.control("hello").await;
        assert_eq!(
            hello,
            json!({"type": "hello", "epoch": epoch, "cursor": 1}),
            "{kind:?}"
        );
    }
}

async fn the_gap_is_flagged_after_trimming() {
    let app = spawn_app_with(|c| c.history = 5).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    for i in 0..11 {
        app.say(session, &format!("m{i}")).await;
    }
    // Events 1..=7 are gone; a reader at 2 has lost 3..=7.
    for kind in EVERY {
        let mut reader = Reader::open(&app, kind, From::since(2)).await;
        let events = reader.read_through(12).await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            vec![8, 9, 10, 11, 12],
            "{kind:?} gets the oldest events still kept"
        );
        match kind {
            Kind::Poll | Kind::LongPoll => assert!(reader.gaps[0], "{kind:?}"),
            Kind::Sse | Kind::Ws | Kind::Wt => {
                let gap = reader.control("gap").await;
                assert_eq!(gap["cursor"], 7, "{kind:?}");
            }
        }
    }
    // A reader just before the oldest kept event lost nothing.
    let (_, body) = app.get_json("/poll?since=7").await;
    assert_eq!(body["gap"], false);
}

async fn the_gap_is_flagged_after_an_epoch_change() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "hi").await;
    for kind in EVERY {
        let from = From::since(1).in_epoch("an-epoch-from-before-a-restart");
        let mut reader = Reader::open(&app, kind, from).await;
        let events = reader.read_through(2).await;
        assert_eq!(
            events[0]["seq"], 1,
            "{kind:?} starts again from the oldest event"
        );
        match kind {
            Kind::Poll | Kind::LongPoll => assert!(reader.gaps[0], "{kind:?}"),
            Kind::Sse | Kind::Ws | Kind::Wt => {
                let gap = reader.control("gap").await;
                assert_eq!(gap["epoch"], alice["epoch"], "{kind:?} names the new epoch");
            }
        }
    }
}

async fn history_survives_a_flood_of_mousemoves() {
    let app = spawn_app_with(|c| {
        c.history = 50;
        c.rate_limit = 0;
    })
    .await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    for i in 0..120 {
        app.say(session, &format!("m{i}")).await;
    }
    for i in 0..1000 {
        let moved = app
            .send(
                session,
                &json!({"type": "mousemove", "x": (i % 100) as f64 / 100.0, "y": 0.5}),
            )
            .await;
        assert_eq!(moved.status(), 200);
    }
    let (_, window) = app.get_json("/poll?since=0").await;
    assert!(window["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["type"] == "mousemove"));
    let bob = app.join("bob").await;
    let history = bob["history"].as_array().unwrap();
    assert_eq!(history.len(), 100);
    assert_eq!(history[0]["text"], "m20");
    assert_eq!(history[99]["text"], "m119");
    assert!(history
        .iter()
        .all(|m| m["type"] == "message" && m["seq"].is_u64()));
}

async fn a_reader_more_than_a_batch_behind_catches_up_in_order() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    for i in 0..1200 {
        app.send(
            session,
            &json!({"type": "mousemove", "x": 0.5, "y": (i % 10) as f64 / 10.0}),
        )
        .await;
    }
    let (_, first) = app.get_json("/poll?since=0").await;
    assert_eq!(
        first["events"].as_array().unwrap().len(),
        1000,
        "a poll returns at most 1000"
    );
    assert_eq!(first["cursor"], 1000);
    for kind in EVERY {
        let mut reader = Reader::open(&app, kind, From::since(0)).await;
        let seqs: Vec<u64> = reader
            .read_through(1201)
            .await
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=1201).collect::<Vec<_>>(), "{kind:?}");
    }
}

async fn sse_honours_last_event_id_on_reconnect() {
    let app = spawn_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    for i in 0..4 {
        app.say(session, &format!("m{i}")).await;
    }
    // EventSource repeats its original URL, with the header as the real cursor.
    let body = app
        .http
        .get(app.url("/sse?since=0"))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(eventsource_stream::Eventsource::eventsource(
        body.bytes_stream(),
    ));
    use futures::StreamExt as _;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let event = stream.next().await.unwrap().unwrap();
        if !event.id.is_empty() {
            ids.push(event.id);
        }
    }
    assert_eq!(ids, ["4", "5"]);
    let bad = app
        .http
        .get(app.url("/sse"))
        .header("Last-Event-ID", "not-a-seq")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// Runs each scenario as five tests: in the lobby, in a named room, on two
/// nodes sharing one Redis, and over HTTPS on HTTP/1.1 and on HTTP/2.
macro_rules! in_the_lobby_and_in_a_named_room {
    ($($scenario:ident),* $(,)?) => {
        mod in_the_lobby {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario().await
                }
            )*
        }
        mod in_a_named_room {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::helpers::IN_ROOM
                        .scope(Some("physics-2".to_owned()), super::$scenario())
                        .await
                }
            )*
        }
        /// Two nodes with `--redis` on one Redis, every reader's request
        /// or connection sent to either at random.
        mod on_two_nodes_sharing_redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::helpers::ON_TWO_NODES
                        .scope(true, super::$scenario())
                        .await
                }
            )*
        }
        /// One node under `--tls`, every client speaking HTTP/1.1 (and
        /// `wss:` for the WebSocket).
        mod over_https_on_http1 {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::helpers::OVER_TLS
                        .scope(Some(crate::helpers::Http::One), super::$scenario())
                        .await
                }
            )*
        }
        /// One node under `--tls`, every HTTP client on HTTP/2, many
        /// requests at once on one connection.
        mod over_https_on_http2 {
            $(
                #[tokio::test]
                async fn $scenario() {
                    crate::helpers::OVER_TLS
                        .scope(Some(crate::helpers::Http::Two), super::$scenario())
                        .await
                }
            )*
        }
    };
}

in_the_lobby_and_in_a_named_room!(
    every_transport_delivers_every_event_in_the_same_order,
    resuming_from_a_cursor_returns_exactly_the_newer_events,
    a_stream_starts_with_hello_naming_the_epoch_and_cursor,
    the_gap_is_flagged_after_trimming,
    the_gap_is_flagged_after_an_epoch_change,
    history_survives_a_flood_of_mousemoves,
    a_reader_more_than_a_batch_behind_catches_up_in_order,
    sse_honours_last_event_id_on_reconnect,
);
