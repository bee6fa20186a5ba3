//! Restarts and crashes: clients see either a seamless resume (with the
//! journal) or a reported gap (in memory), never silent loss.

use futures::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_and_clients_resume_without_a_gap() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut app = spawn_binary(&["--data-dir", data_dir, "--rate-limit", "0"]).await;
    let welcome = app.join("alice").await;
    let session = welcome["session"].as_str().unwrap().to_owned();
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    // Act: concurrent sends, each acknowledged, then a crash with no warning.
    let mut sends = Vec::new();
    for i in 0..200 {
        let (app, session) = (app.handle(), session.clone());
        sends.push(tokio::spawn(async move {
            let text = format!("m{i}");
            (app.say(&session, &text).await, text)
        }));
    }
    let mut acknowledged = Vec::new();
    for send in sends {
        acknowledged.push(send.await.unwrap());
    }
    app.kill().await;
    let app = spawn_binary(&["--data-dir", data_dir]).await;
    // Assert: everything acknowledged is there, under the same epoch.
    let mut events = Vec::new();
    let mut cursor = 0;
    loop {
        let (_, body) = app
            .get_json(&format!("/poll?since={cursor}&epoch={epoch}"))
            .await;
        assert_eq!(body["gap"], false, "the same epoch: no gap");
        assert_eq!(body["epoch"], epoch);
        let batch = body["events"].as_array().unwrap().clone();
        if batch.is_empty() {
            break;
        }
        cursor = body["cursor"].as_u64().unwrap();
        events.extend(batch);
    }
    assert_eq!(events.len(), 201);
    for (seq, text) in acknowledged {
        assert_eq!(events[seq as usize - 1]["text"], text.as_str(), "seq {seq}");
    }
    // A reader that was at seq 100 continues exactly where it was.
    let (_, body) = app
        .get_json(&format!("/poll?since=100&epoch={epoch}"))
        .await;
    assert_eq!(body["events"][0]["seq"], 101);
    assert_eq!(body["gap"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_held_long_polls_closes_sockets_with_1001_and_exits_cleanly() {
    let mut app = spawn_binary(&[]).await;
    let held = {
        let app = app.handle();
        tokio::spawn(async move { app.get("/longpoll?since=0&timeout=25").await })
    };
    let mut reader = Reader::open(&app, Kind::Ws, From::default()).await;
    reader.control("hello").await;
    let mut socket = reader.into_ws();
    app.until_long_polls_held(1).await;

    app.terminate();

    let answered = tokio::time::timeout(PATIENCE, held)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(
        answered.json::<serde_json::Value>().await.unwrap()["events"],
        json!([])
    );
    let close = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed");
    assert_eq!(u16::from(close.unwrap().code), 1001);
    let exit = app.exited().await;
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn a_restart_without_a_journal_is_reported_as_a_gap_on_every_transport() {
    let mut app = spawn_app().await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "before").await;
    let epoch = alice["epoch"].as_str().unwrap().to_owned();
    let addr = app.addr;
    app.shutdown().await;
    let listener = std::net::TcpListener::bind(addr).expect("the same port again");
    let server = pushlab::serve(listener, pushlab::Config::default()).unwrap();
    let app = TestApp::over(server);
    let bob = app.join("bob").await;
    assert_ne!(bob["epoch"].as_str().unwrap(), epoch, "a new epoch");
    for kind in ALL {
        let from = From::since(2).in_epoch(&epoch);
        let mut reader = Reader::open(&app, kind, from).await;
        tokio::time::timeout(PATIENCE, async {
            while reader.events.is_empty() {
                reader.receive_once().await;
            }
        })
        .await
        .expect("events arrived");
        assert_eq!(
            reader.events[0]["seq"], 1,
            "{kind:?} restarts from the new log"
        );
        assert_eq!(reader.events[0]["name"], "bob");
        match kind {
            Kind::Poll | Kind::LongPoll => assert!(reader.gaps[0], "{kind:?}"),
            Kind::Sse | Kind::Ws | Kind::Wt => {
                reader.control("gap").await;
            }
        }
    }
}

#[tokio::test]
async fn a_restart_with_a_journal_resumes_seamlessly_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut app = spawn_app_with(|c| c.data_dir = Some(data_dir.clone())).await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "before").await;
    let epoch = alice["epoch"].as_str().unwrap().to_owned();
    app.shutdown().await;
    let app = spawn_app_with(|c| c.data_dir = Some(data_dir.clone())).await;
    let bob = app.join("bob").await;
    assert_eq!(bob["epoch"].as_str().unwrap(), epoch, "the epoch persists");
    assert_eq!(bob["cursor"], 3);
    assert_eq!(bob["history"][0]["text"], "before");
    for kind in ALL {
        let from = From::since(2).in_epoch(&epoch);
        let mut reader = Reader::open(&app, kind, from).await;
        let events = reader.read_through(3).await;
        assert_eq!(events.len(), 1, "{kind:?}");
        assert_eq!(events[0]["name"], "bob");
        assert!(reader.gaps.iter().all(|gap| !gap), "{kind:?}");
        assert!(
            reader.controls.iter().all(|c| c["type"] != "gap"),
            "{kind:?}"
        );
    }
}
