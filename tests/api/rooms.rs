//! Rooms: each its own log, seqs, epoch, names and presence; nothing leaks
//! from one to another, on any transport.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn join_room(&self, room: &str, name: &str) -> Value {
        let response = self
            .post_json(&format!("/register?room={room}"), &json!({ "name": name }))
            .await;
        assert_eq!(response.status(), 200, "register {name} in {room}");
        response.json().await.unwrap()
    }

    async fn say_in(&self, room: &str, session: &str, text: &str) -> reqwest::Response {
        self.post_json(
            &format!("/send?session={session}&room={room}"),
            &json!({"type": "message", "text": text}),
        )
        .await
    }

    async fn listed_rooms(&self) -> Vec<Value> {
        let (status, body) = self.get_json("/rooms").await;
        assert_eq!(status, 200);
        body["rooms"].as_array().unwrap().clone()
    }
}

fn session(welcome: &Value) -> &str {
    welcome["session"].as_str().unwrap()
}

#[tokio::test]
async fn two_rooms_at_once_never_see_each_others_events_on_any_transport() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let (a, b) = (app.view_in("a"), app.view_in("b"));
    let mut readers_a = Vec::new();
    let mut readers_b = Vec::new();
    for kind in ALL {
        readers_a.push(Reader::open(&a, kind, From::since(0)).await);
        readers_b.push(Reader::open(&b, kind, From::since(0)).await);
    }

    let ann = app.join_room("a", "ann").await;
    let bob = app.join_room("b", "bob").await;
    for i in 0..10 {
        assert_eq!(
            app.say_in("a", session(&ann), &format!("a{i}"))
                .await
                .status(),
            200
        );
        if i % 2 == 0 {
            assert_eq!(
                app.say_in("b", session(&bob), &format!("b{i}"))
                    .await
                    .status(),
                200
            );
        }
    }

    for reader in &mut readers_a {
        let events = reader.read_through(11).await.to_vec();
        assert_eq!(
            reader.seqs(),
            (1..=11).collect::<Vec<_>>(),
            "{:?}",
            reader.kind
        );
        assert!(
            events.iter().all(|e| e["name"] == "ann"),
            "{:?}",
            reader.kind
        );
    }
    for reader in &mut readers_b {
        let events = reader.read_through(6).await.to_vec();
        assert_eq!(
            reader.seqs(),
            (1..=6).collect::<Vec<_>>(),
            "{:?}",
            reader.kind
        );
        assert!(
            events.iter().all(|e| e["name"] == "bob"),
            "{:?}",
            reader.kind
        );
    }
    let epochs: Vec<_> = [&ann, &bob].iter().map(|w| w["epoch"].clone()).collect();
    assert_ne!(epochs[0], epochs[1], "each room its own epoch");
}

#[tokio::test]
async fn the_same_name_can_be_online_in_two_rooms() {
    let app = spawn_app().await;

    let here = app.join_room("a", "alice").await;
    let there = app.join_room("b", "Alice").await;

    assert_eq!(here["users"].as_array().unwrap().len(), 1);
    assert_eq!(there["users"][0]["name"], "Alice");
    let again = app
        .post_json("/register?room=a", &json!({"name": "ALICE"}))
        .await;
    expect_error(again, 409, "name_taken").await;
}

#[tokio::test]
async fn a_session_used_with_another_room_is_refused_with_wrong_room() {
    let app = spawn_app().await;
    let ann = app.join_room("a", "ann").await;
    app.join_room("b", "bob").await;
    let s = session(&ann);

    let send = app.say_in("b", s, "hi").await;
    expect_error(send, 403, "wrong_room").await;
    let lobby = app
        .post_json(&format!("/send?session={s}"), &json!({"type": "leave"}))
        .await;
    expect_error(lobby, 403, "wrong_room").await;
    for path in ["/poll", "/longpoll", "/sse"] {
        let response = app
            .get(&format!("{path}?session={s}&room=b&timeout=0"))
            .await;
        expect_error(response, 403, "wrong_room").await;
    }
    let upgrade = format!("ws://{}/ws?session={s}&room=b", app.addr);
    match tokio_tungstenite::connect_async(upgrade).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "wrong_room");
        }
        other => panic!("the upgrade was not refused: {other:?}"),
    }
    assert_eq!(
        app.say_in("a", s, "mine").await.status(),
        200,
        "its own room works"
    );
}

#[tokio::test]
async fn a_bad_room_name_gets_invalid_room_on_every_endpoint() {
    let app = spawn_app().await;
    for room in ["1abc", "a%20b", "..", "__x", &"r".repeat(30)] {
        for path in ["/poll", "/longpoll", "/sse", "/stats"] {
            let response = app.get(&format!("{path}?room={room}&timeout=0")).await;
            expect_error(response, 400, "invalid_room").await;
        }
        let register = app
            .post_json(&format!("/register?room={room}"), &json!({"name": "x"}))
            .await;
        expect_error(register, 400, "invalid_room").await;
    }
}

#[tokio::test]
async fn rooms_lists_the_listed_rooms_with_who_is_online_and_their_head() {
    let app = spawn_app().await;
    let ann = app.join_room("physics", "ann").await;
    app.join_room("physics", "bo").await;
    app.say_in("physics", session(&ann), "hello").await;
    app.join_room("_secret", "cy").await;

    let rooms = app.listed_rooms().await;

    assert_eq!(
        rooms,
        vec![
            json!({"name": "physics", "online": 2, "head": 3}),
            json!({"name": "lobby", "online": 0, "head": 0}),
        ]
    );
    let (_, secret) = app.get_json("/stats?room=_secret").await;
    assert_eq!(
        (secret["online"].as_u64(), secret["head"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn stats_report_one_room_and_the_total() {
    let app = spawn_app().await;
    app.join_room("a", "ann").await;
    app.join_room("b", "bob").await;
    app.join_room("b", "cy").await;

    let (_, stats) = app.get_json("/stats?room=b").await;

    assert_eq!(stats["room"], "b");
    assert_eq!(stats["online"], 2);
    assert_eq!(stats["head"], 2);
    assert_eq!(stats["total"], json!({"rooms": 3, "online": 3}));
    let names: Vec<_> = stats["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("b"), json!("a"), json!("lobby")]);
}

#[tokio::test]
async fn an_empty_room_is_reclaimed_after_its_idle_timeout_and_opens_afresh() {
    let app = spawn_app_with(|c| {
        c.room_idle_timeout = 0.2;
        c.presence_timeout = 0.2;
    })
    .await;
    let ann = app.join_room("brief", "ann").await;
    let leave = app
        .post_json(
            &format!("/send?session={}&room=brief", session(&ann)),
            &json!({"type": "leave"}),
        )
        .await;
    assert_eq!(leave.status(), 200);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app
        .listed_rooms()
        .await
        .iter()
        .any(|r| r["name"] == "brief")
    {
        assert!(tokio::time::Instant::now() < deadline, "never reclaimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total"]["rooms"], 1, "only the lobby is left");

    let again = app.join_room("brief", "ann").await;
    assert_ne!(again["epoch"], ann["epoch"], "its log went with it");
    assert_eq!(again["cursor"], 1);
}

#[tokio::test]
async fn a_room_with_a_reader_is_not_reclaimed() {
    let app = spawn_app_with(|c| c.room_idle_timeout = 0.1).await;
    let watched = app.view_in("watched");
    let mut reader = Reader::open(&watched, Kind::Sse, From::since(0)).await;
    reader.control("hello").await;

    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(app
        .listed_rooms()
        .await
        .iter()
        .any(|r| r["name"] == "watched"));
    let ann = app.join_room("watched", "ann").await;
    reader.read_through(ann["cursor"].as_u64().unwrap()).await;
}

#[tokio::test]
async fn rooms_are_capped_in_all_and_per_address() {
    let capped = spawn_app_with(|c| c.max_rooms = 2).await;
    capped.join_room("one", "a").await;
    let full = capped
        .post_json("/register?room=two", &json!({"name": "b"}))
        .await;
    expect_error(full, 503, "too_many_rooms").await;
    assert_eq!(
        capped.get("/poll?room=one").await.status(),
        200,
        "open rooms still serve"
    );

    let per_address = spawn_app_with(|c| c.ip_rooms = 2).await;
    per_address.join_room("one", "a").await;
    per_address.join_room("two", "b").await;
    let third = per_address
        .post_json("/register?room=three", &json!({"name": "c"}))
        .await;
    expect_error(third, 429, "ip_limit").await;
}

#[tokio::test]
async fn every_room_comes_back_with_its_epoch_after_a_restart_with_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = |c: &mut pushlab::Config| c.data_dir = Some(dir.path().to_owned());
    let mut app = spawn_app_with(config).await;
    let mut before = Vec::new();
    for room in ["lobby", "a", "_b"] {
        let welcome = app.join_room(room, "ann").await;
        app.say_in(room, session(&welcome), &format!("in {room}"))
            .await;
        before.push((room, welcome["epoch"].clone()));
    }
    app.shutdown().await;

    let app = spawn_app_with(config).await;

    for (room, epoch) in before {
        let (status, batch) = app.get_json(&format!("/poll?since=0&room={room}")).await;
        assert_eq!(status, 200);
        assert_eq!(batch["epoch"], epoch, "{room}");
        let events = batch["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{room}: the join and the message");
        assert_eq!(events[1]["text"], format!("in {room}"));
    }
}

#[tokio::test]
async fn an_unlisted_room_is_counted_but_never_named_in_stats_or_metrics() {
    // Arrange: someone online in an unlisted room, whose name is its secret.
    let app = spawn_app().await;
    app.join_room("_secretroom42", "ann").await;
    app.join_room("open", "bob").await;

    // Act
    let (_, stats) = app.get_json("/stats").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();

    // Assert: counted in the totals, named nowhere.
    assert!(!stats.to_string().contains("secretroom42"), "{stats}");
    assert!(!metrics.contains("secretroom42"), "{metrics}");
    assert_eq!(stats["total"], json!({"rooms": 3, "online": 2}));
    assert_eq!(stats["unlisted"]["rooms"], 1);
    assert_eq!(stats["unlisted"]["online"], 1);
    let names: Vec<_> = stats["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("open"), json!("lobby")]);
    assert!(metrics.contains("pushlab_rooms_unlisted 1"), "{metrics}");
    assert!(metrics.contains("pushlab_rooms_open 3"), "{metrics}");
    // Whoever knows the name may still ask for its own figures.
    let (status, secret) = app.get_json("/stats?room=_secretroom42").await;
    assert_eq!((status, secret["online"].clone()), (200, json!(1)));
}

#[tokio::test]
async fn a_room_counts_each_open_stream_and_socket_as_one_reader() {
    // Arrange
    let app = spawn_app().await;
    let room = app.view_in("counted");
    let readers_now = || async {
        let (_, stats) = room.get_json("/stats").await;
        let rooms = stats["rooms"].as_array().unwrap().clone();
        rooms
            .iter()
            .find(|r| r["name"] == "counted")
            .map_or(0, |r| r["readers"].as_u64().unwrap())
    };

    // Act: a socket with a session, and an SSE stream.
    let (socket, _) = ws_join(&room, "ann").await;
    let stream = Reader::open(&room, Kind::Sse, From::since(0)).await;
    let both = readers_now().await;
    drop((socket, stream));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut after = readers_now().await;
    while after > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = readers_now().await;
    }

    // Assert
    assert_eq!(both, 2, "one each, however much of the room each holds");
    assert_eq!(after, 0, "gone with them");
}

/// The files this process holds open under `dir`.
fn files_open_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// Waits (bounded) until this process holds no file open under `dir`:
/// until a server that stopped, or a room that closed, has released them.
async fn until_no_file_open_under(dir: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while files_open_under(dir) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "files under {} were never closed",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rooms_open(app: &TestApp) -> u64 {
    let (_, stats) = app.get_json("/stats").await;
    stats["total"]["rooms"].as_u64().unwrap()
}

#[tokio::test]
async fn rooms_kept_on_disk_stay_shut_at_start_and_reopen_on_first_use_within_max_rooms() {
    // Arrange: an earlier run kept four rooms besides the lobby.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut first = spawn_app_with(|c| c.data_dir = Some(data_dir.clone())).await;
    let mut epochs = Vec::new();
    for room in ["a", "b", "c", "d"] {
        let (status, batch) = first.get_json(&format!("/poll?room={room}")).await;
        assert_eq!(status, 200);
        epochs.push(batch["epoch"].clone());
    }
    first.shutdown().await;
    until_no_file_open_under(dir.path()).await;

    // Act: restart with room for the lobby and two more.
    let app = spawn_app_with(|c| {
        c.data_dir = Some(data_dir.clone());
        c.max_rooms = 3;
    })
    .await;
    let at_start = rooms_open(&app).await;
    let files_at_start = files_open_under(&dir.path().join("rooms"));
    let (a, batch_a) = app.get_json("/poll?room=a").await;
    let (b, batch_b) = app.get_json("/poll?room=b").await;
    let refused = app.get("/poll?room=c").await;

    // Assert
    assert_eq!(at_start, 1, "only the lobby opens at start");
    assert_eq!(files_at_start, 0, "a shut room holds no file open");
    assert_eq!((a, b), (200, 200));
    assert_eq!(batch_a["epoch"], epochs[0], "a kept room reopens as it was");
    assert_eq!(batch_b["epoch"], epochs[1]);
    expect_error(refused, 503, "too_many_rooms").await;
    assert_eq!(rooms_open(&app).await, 3);
}

#[tokio::test]
async fn a_kept_room_holds_its_journal_files_only_while_it_is_open() {
    // Arrange: a room an earlier run kept, and a restart that reclaims
    // empty rooms quickly.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut first = spawn_app_with(|c| c.data_dir = Some(data_dir.clone())).await;
    assert_eq!(first.get("/poll?room=brief").await.status(), 200);
    first.shutdown().await;
    until_no_file_open_under(dir.path()).await;
    let app = spawn_app_with(|c| {
        c.data_dir = Some(data_dir);
        c.room_idle_timeout = 0.2;
        c.presence_timeout = 0.2;
    })
    .await;
    let journal = dir.path().join("rooms").join("brief");
    let at_start = files_open_under(&journal);

    // Act: use it, then wait for the reaper to close it.
    assert_eq!(app.get("/poll?room=brief").await.status(), 200);
    let while_open = files_open_under(&journal);
    until_no_file_open_under(&journal).await;

    // Assert
    assert_eq!(at_start, 0, "a room not yet used holds no file open");
    assert!(while_open >= 1, "its writer holds its segment open");
    assert_eq!(rooms_open(&app).await, 1, "it was reclaimed");
    assert!(journal.join("epoch").exists(), "its journal is kept");
}

/// Opens 100 rooms at once from 127.0.0.1, and says how many opened and
/// how many were refused with 429.
async fn open_100_rooms_at_once(app: &TestApp) -> (usize, usize) {
    let opens = (0..100).map(|i| {
        let app = app.handle();
        async move { app.get(&format!("/poll?room=r{i}")).await.status() }
    });
    let statuses = futures_util::future::join_all(opens).await;
    let count = |code: u16| statuses.iter().filter(|s| s.as_u16() == code).count();
    (count(200), count(429))
}

#[tokio::test]
async fn concurrent_opens_from_one_address_open_exactly_its_ip_rooms() {
    // Arrange: a journal, so that opening a room takes a while.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let app = spawn_app_with(|c| {
        c.data_dir = Some(data_dir);
        c.ip_rooms = 5;
    })
    .await;

    // Act
    let (opened, refused) = open_100_rooms_at_once(&app).await;

    // Assert
    assert_eq!((opened, refused), (5, 95));
    assert_eq!(rooms_open(&app).await, 6, "the five and the lobby");
}

#[tokio::test]
async fn concurrent_opens_from_one_address_open_exactly_its_ip_rooms_on_redis() {
    // Arrange: Redis, where opening a room waits for its snapshot.
    let redis = RedisServer::start();
    let app = spawn_app_on(&redis, |c| c.ip_rooms = 5).await;

    // Act
    let (opened, refused) = open_100_rooms_at_once(&app).await;

    // Assert
    assert_eq!((opened, refused), (5, 95));
    assert_eq!(rooms_open(&app).await, 6, "the five and the lobby");
}

/// A store whose rooms other than the lobby open only when the test says
/// so, and which says when an open has begun.
struct GatedStore {
    began: tokio::sync::mpsc::UnboundedSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    budget: pushlab::log::LogBudget,
}

impl pushlab::log_store::LogStore for GatedStore {
    fn open(&self, room: &pushlab::RoomName) -> std::io::Result<pushlab::log_store::OpenedLog> {
        if room.as_str() != pushlab::RoomName::LOBBY {
            let _ = self.began.send(());
            // The test holds the sender; a dropped one releases too.
            let _ = self.release.lock().unwrap().recv();
        }
        let log = std::sync::Arc::new(pushlab::MemoryLog::new(100));
        Ok(pushlab::log_store::OpenedLog::here(log))
    }

    fn kept(&self) -> std::io::Result<Vec<pushlab::RoomName>> {
        Ok(Vec::new())
    }

    fn budget(&self) -> &pushlab::log::LogBudget {
        &self.budget
    }
}

#[tokio::test]
async fn healthz_answers_while_a_room_s_log_is_still_opening() {
    // Arrange: one worker, and a store whose open blocks until released.
    let (began, mut opening) = tokio::sync::mpsc::unbounded_channel();
    let (release, gate) = std::sync::mpsc::channel();
    let store = GatedStore {
        began,
        release: std::sync::Mutex::new(gate),
        budget: pushlab::log::LogBudget::unlimited(),
    };
    let config = pushlab::Config {
        workers: Some(1),
        ..pushlab::Config::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app = TestApp::over(pushlab::serve_with_store(listener, config, Box::new(store)).unwrap());
    let slow = tokio::spawn({
        let app = app.handle();
        async move { app.get("/poll?room=slow").await.status() }
    });
    opening.recv().await.expect("the open began");

    // Act: ask for health while the open is blocked.
    let health = tokio::time::timeout(PATIENCE, app.get("/healthz")).await;

    // Assert
    let still_opening = !slow.is_finished();
    release.send(()).unwrap();
    assert_eq!(
        health
            .expect("/healthz answered while a room was opening")
            .status(),
        200
    );
    assert!(
        still_opening,
        "the open was still blocked when /healthz answered"
    );
    assert_eq!(slow.await.unwrap(), 200, "the room opened once released");
}

#[tokio::test]
async fn healthz_answers_while_rooms_open_against_a_stalled_redis() {
    // Arrange: Redis holding every command for longer than an open waits.
    let redis = RedisServer::start();
    let app = spawn_app_on(&redis, |_| {}).await;
    assert_eq!(redis.command("CLIENT PAUSE 5000 ALL"), "+OK");
    let opens: Vec<_> = (0..4)
        .map(|i| {
            let app = app.handle();
            tokio::spawn(async move { app.get(&format!("/poll?room=stalled{i}")).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, stats) = app.get_json("/stats").await;
        if stats["connections"].as_u64().unwrap() >= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the opens never arrived: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    let health = tokio::time::timeout(PATIENCE, app.get("/healthz")).await;

    // Assert
    let waiting = opens.iter().filter(|open| !open.is_finished()).count();
    assert_eq!(health.expect("/healthz answered").status(), 200);
    assert!(
        waiting > 0,
        "/healthz answered while the opens waited for Redis"
    );
}

#[tokio::test]
async fn an_observer_is_left_out_of_who_is_online_and_its_join_says_so() {
    let app = spawn_app().await;
    app.join_room("physics", "ann").await;

    let watcher = app
        .post_json(
            "/register?room=physics",
            &json!({"name": "watch-k3x9", "observer": true}),
        )
        .await;
    assert_eq!(watcher.status(), 200);
    let watcher: Value = watcher.json().await.unwrap();
    let bo = app.join_room("physics", "bo").await;

    // Nobody's list has the observer, its own welcome included.
    let names = |welcome: &Value| -> Vec<String> {
        welcome["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&watcher), ["ann"]);
    assert_eq!(watcher["online"], 1);
    assert_eq!(names(&bo), ["ann", "bo"]);
    assert_eq!(bo["online"], 2);
    assert_eq!(
        app.listed_rooms().await[0],
        json!({"name": "physics", "online": 2, "head": 3})
    );
    let (_, stats) = app.get_json("/stats?room=physics").await;
    assert_eq!(stats["online"], 2);

    // Its join is in the log, marked; everyone else's is not.
    let (_, read) = app.get_json("/poll?since=0&room=physics").await;
    let joins: Vec<(&str, Option<bool>)> = read["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["observer"].as_bool()))
        .collect();
    assert_eq!(
        joins,
        [("ann", None), ("watch-k3x9", Some(true)), ("bo", None)]
    );

    // It may still send like anyone.
    assert_eq!(
        app.say_in("physics", session(&watcher), "hi")
            .await
            .status(),
        200
    );
}
