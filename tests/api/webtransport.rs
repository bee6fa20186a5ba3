//! WebTransport (`--webtransport`): the contract every transport keeps,
//! over a QUIC session, through the testkit's client on the same QUIC
//! library; and the bounds that are WebTransport's own: datagram and line
//! sizes, streams per session, handshakes per address, a client that never
//! reads.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use pushlab_testkit::quic_handshake_only;
use pushlab_testkit::wtransport::error::StreamWriteError;
use pushlab_testkit::wtransport::VarInt;

/// A server with WebTransport on, configured further by `configure`.
async fn spawn_wt_app_with(configure: impl FnOnce(&mut pushlab::Config)) -> TestApp {
    spawn_app_with(|c| {
        c.webtransport = true;
        configure(c);
    })
    .await
}

async fn spawn_wt_app() -> TestApp {
    spawn_wt_app_with(|_| {}).await
}

/// Opens a session on `path_and_query`, as a page on the server's own
/// origin would.
async fn open(app: &TestApp, path_and_query: &str) -> WtSession {
    let origin = format!("http://{}", app.addr);
    WtSession::connect(app.addr, path_and_query, Some(&origin))
        .await
        .expect("the session opens")
}

/// Asserts that a session was refused: its one line is the error `code`,
/// its stream ends, and it closes with 1008 and `code` as the reason.
async fn expect_refused(session: &mut WtSession, code: &str) {
    let error = session.next().await.expect("an error line");
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(session.next().await, None, "nothing follows the refusal");
    assert_eq!(session.closed().await, (1008, code.to_owned()));
}

#[tokio::test]
async fn a_session_says_hello_then_registers_sends_and_receives_its_own_message() {
    // Arrange
    let app = spawn_wt_app().await;
    let mut session = open(&app, "/wt?since=0").await;
    let hello = session.until("hello").await;
    assert_eq!(hello["cursor"], 0);
    assert!(hello["epoch"].is_string());

    // Act
    session
        .send(&json!({"type": "register", "name": "alice"}))
        .await;
    let welcome = session.until("welcome").await;
    session
        .send(&json!({"type": "message", "text": "  hi over quic  ", "id": "m1"}))
        .await;

    // Assert
    assert_eq!(welcome["name"], "alice");
    assert_eq!(welcome["cursor"], 1, "alice's own join");
    let message = session.next().await.unwrap();
    assert_eq!(message["seq"], 2, "{message}");
    assert_eq!(message["type"], "message");
    assert_eq!(message["text"], "hi over quic");
    assert_eq!(message["id"], "m1");
    assert_eq!(message["name"], "alice");
}

#[tokio::test]
async fn a_session_resumes_after_its_cursor_in_its_epoch_without_a_gap() {
    let app = spawn_wt_app().await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let epoch = alice["epoch"].as_str().unwrap();
    for i in 0..5 {
        app.say(session, &format!("m{i}")).await;
    }

    let mut resumed = open(&app, &format!("/wt?since=3&epoch={epoch}")).await;

    let hello = resumed.next().await.unwrap();
    assert_eq!(hello, json!({"type": "hello", "epoch": epoch, "cursor": 3}));
    let seqs: Vec<Value> = [
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
    ]
    .iter()
    .map(|event| event["seq"].clone())
    .collect();
    assert_eq!(seqs, [4, 5, 6]);
}

#[tokio::test]
async fn a_cursor_from_another_epoch_gets_a_gap_naming_the_current_one() {
    let app = spawn_wt_app().await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "hi").await;

    let mut session = open(&app, "/wt?since=2&epoch=an-epoch-from-before-a-restart").await;

    session.until("hello").await;
    let gap = session.next().await.unwrap();
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["epoch"], alice["epoch"]);
    assert_eq!(gap["cursor"], 0);
    assert_eq!(
        session.next().await.unwrap()["seq"],
        1,
        "from the oldest event"
    );
}

#[tokio::test]
async fn a_session_attached_to_a_registered_session_sends_as_it() {
    let app = spawn_wt_app().await;
    let alice = app.join("alice").await;
    let id = alice["session"].as_str().unwrap();
    let mut session = open(&app, &format!("/wt?since=1&session={id}")).await;
    session.until("hello").await;

    session
        .send(&json!({"type": "message", "text": "attached"}))
        .await;

    let message = session.next().await.unwrap();
    assert_eq!(
        (&message["name"], &message["text"]),
        (&json!("alice"), &json!("attached"))
    );
}

#[tokio::test]
async fn an_unknown_session_is_refused_with_its_code() {
    let app = spawn_wt_app().await;

    let mut session = open(&app, "/wt?session=00000000-0000-4000-8000-000000000000").await;

    expect_refused(&mut session, "unknown_session").await;
}

#[tokio::test]
async fn a_session_from_a_foreign_origin_is_refused_and_a_listed_one_is_not() {
    let app =
        spawn_wt_app_with(|c| c.allowed_origins = vec!["https://listed.example".into()]).await;

    let mut foreign = WtSession::connect(app.addr, "/wt", Some("https://evil.example"))
        .await
        .unwrap();
    let mut listed = WtSession::connect(app.addr, "/wt", Some("https://listed.example"))
        .await
        .unwrap();

    expect_refused(&mut foreign, "forbidden_origin").await;
    assert_eq!(listed.next().await.unwrap()["type"], "hello");
}

#[tokio::test]
async fn a_path_other_than_wt_is_refused() {
    let app = spawn_wt_app().await;

    let mut session = open(&app, "/ws").await;

    expect_refused(&mut session, "not_found").await;
}

#[tokio::test]
async fn a_datagram_over_the_limit_closes_the_session_as_too_large() {
    let app = spawn_wt_app_with(|c| c.wt_datagram_bytes = 100).await;
    let mut session = open(&app, "/wt").await;
    session.until("hello").await;

    session.send_datagram(&[b' '; 200]);

    assert_eq!(session.closed().await, (1009, "too_large".to_owned()));
}

#[tokio::test]
async fn a_stream_line_over_the_body_limit_closes_the_session_as_too_large() {
    let app = spawn_wt_app().await;
    let mut session = open(&app, "/wt").await;
    session.until("hello").await;

    // 70 KB without a newline: more than one message may be.
    let text = "x".repeat(70_000);
    session
        .send_raw(format!("{{\"type\":\"message\",\"text\":\"{text}").as_bytes())
        .await;

    assert_eq!(session.closed().await, (1009, "too_large".to_owned()));
}

#[tokio::test]
async fn a_bad_line_gets_an_error_and_the_session_stays_open() {
    let app = spawn_wt_app().await;
    let mut session = open(&app, "/wt").await;
    session.until("hello").await;

    session.send_raw(b"{not json\n").await;
    session
        .send(&json!({"type": "message", "text": "hi", "id": "m1"}))
        .await;

    assert_eq!(session.next().await.unwrap()["code"], "bad_json");
    let unregistered = session.next().await.unwrap();
    assert_eq!(unregistered["code"], "unknown_session", "{unregistered}");
    session
        .send(&json!({"type": "register", "name": "late"}))
        .await;
    assert_eq!(session.until("welcome").await["name"], "late");
}

#[tokio::test]
async fn sessions_past_the_address_s_connection_limit_are_refused() {
    let app = spawn_wt_app_with(|c| c.ip_connections = 2).await;
    // Asked first: GET /config takes a place under the same limit.
    let hash = pushlab_testkit::certificate_hash(app.addr).await;
    let connect = || WtSession::connect_trusting(app.addr, hash.clone(), "/wt", None);
    let mut first = connect().await.unwrap();
    let mut second = connect().await.unwrap();
    first.until("hello").await;
    second.until("hello").await;

    let mut third = connect().await.unwrap();

    expect_refused(&mut third, "ip_limit").await;
}

#[tokio::test]
async fn a_flood_of_quic_handshakes_from_one_address_is_refused_at_the_first_packet() {
    let app = spawn_wt_app_with(|c| c.wt_ip_handshakes = 2).await;
    // Two connections that never ask for a session hold both handshakes.
    let _one = quic_handshake_only(app.addr)
        .await
        .expect("the first is let in");
    let _two = quic_handshake_only(app.addr)
        .await
        .expect("the second is let in");

    let third = quic_handshake_only(app.addr).await;
    let session = WtSession::connect(app.addr, "/wt", None).await;

    let refused = third.expect_err("the third is refused");
    assert!(
        pushlab_testkit::is_connection_refused(&refused),
        "{refused:?}"
    );
    assert!(matches!(session, Err(WtRefused::Connecting(_))));
}

#[tokio::test]
async fn a_stream_past_the_session_s_limit_is_stopped_and_the_others_go_on() {
    let app = spawn_wt_app_with(|c| c.wt_streams = 1).await;
    let mut session = open(&app, "/wt").await;
    session
        .send(&json!({"type": "register", "name": "streamer"}))
        .await;
    session.until("welcome").await;

    let mut extra = session.connection.open_uni().await.unwrap().await.unwrap();
    extra
        .write_all(b"{\"type\":\"message\",\"text\":\"lost\"}\n")
        .await
        .unwrap();
    let stopped = extra.stopped().await;
    session
        .send(&json!({"type": "message", "text": "kept"}))
        .await;

    assert_eq!(stopped, StreamWriteError::Stopped(VarInt::from_u32(1008)));
    assert_eq!(session.next().await.unwrap()["text"], "kept");
}

#[tokio::test]
async fn a_session_that_never_reads_is_closed_as_too_slow() {
    let app = spawn_wt_app_with(|c| {
        c.slow_client_timeout = 0.5;
        c.rate_limit = 0;
    })
    .await;
    // More than the client's QUIC window, the server's send window and
    // its queue together.
    app.fill("filler", 2500, 1000, 50).await;

    let session = open(&app, "/wt?since=0").await;

    assert_eq!(session.closed().await, (1008, "too_slow".to_owned()));
}

#[tokio::test]
async fn cursor_moves_come_as_datagrams_when_asked_and_chat_stays_on_the_stream() {
    let app = spawn_wt_app_with(|c| c.rate_limit = 0).await;
    let mut watcher = open(&app, "/wt?since=0&cursors=datagrams").await;
    watcher.until("hello").await;
    let mut mover = open(&app, "/wt?since=0").await;
    mover
        .send(&json!({"type": "register", "name": "mover"}))
        .await;
    mover.until("welcome").await;

    mover.send_datagram(
        json!({"type": "mousemove", "x": 0.25, "y": 0.75})
            .to_string()
            .as_bytes(),
    );
    let moved = watcher.datagram().await;
    mover
        .send(&json!({"type": "message", "text": "after the move"}))
        .await;

    assert_eq!(
        (moved["type"].as_str(), moved["x"].as_f64()),
        (Some("mousemove"), Some(0.25))
    );
    assert_eq!(moved["seq"], 2);
    assert_eq!(watcher.next().await.unwrap()["type"], "join");
    let chat = watcher.next().await.unwrap();
    assert_eq!(
        (chat["seq"].as_u64(), chat["type"].as_str()),
        (Some(3), Some("message")),
        "the move is not on the stream"
    );
}

#[tokio::test]
async fn a_leave_ends_the_user_s_session_and_closes_with_1000() {
    let app = spawn_wt_app().await;
    let mut session = open(&app, "/wt").await;
    session
        .send(&json!({"type": "register", "name": "leaver"}))
        .await;
    session.until("welcome").await;

    session.send(&json!({"type": "leave"})).await;

    assert_eq!(session.closed().await, (1000, "left".to_owned()));
    let (_, log) = app.get_json("/poll?since=1").await;
    assert_eq!(log["events"][0]["type"], "leave", "{log}");
    assert_eq!(log["events"][0]["name"], "leaver");
}

#[tokio::test]
async fn shutdown_closes_open_sessions_with_1001() {
    let mut app = spawn_wt_app().await;
    let mut session = open(&app, "/wt").await;
    session.until("hello").await;

    app.shutdown().await;

    assert_eq!(session.closed().await, (1001, "shutting_down".to_owned()));
}

#[tokio::test]
async fn a_session_on_a_journal_reads_what_was_kept() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_wt_app_with(|c| c.data_dir = Some(dir.path().to_owned())).await;
    let alice = app.join("alice").await;
    app.say(alice["session"].as_str().unwrap(), "kept").await;

    let mut session = open(&app, "/wt?since=1").await;

    session.until("hello").await;
    assert_eq!(session.next().await.unwrap()["text"], "kept");
}

#[tokio::test]
async fn sessions_and_bytes_are_counted_for_the_client_that_names_itself() {
    let app = spawn_wt_app().await;
    let mut session = open(&app, "/wt?client=quic-1").await;
    session.until("hello").await;
    drop(session);

    let (_, traffic) = app.get_json("/traffic?client=quic-1").await;

    assert_eq!(traffic["webtransport"]["requests"], 1, "{traffic}");
    assert!(
        traffic["webtransport"]["bytes_out"].as_u64().unwrap() > 0,
        "{traffic}"
    );
}

#[tokio::test]
async fn wt_host_names_the_node_in_config_and_the_node_answers_to_it() {
    // Arrange: a node behind a proxy, reachable for QUIC by its own name.
    let named = spawn_wt_app_with(|c| c.wt_host = Some("node-a.lab.test".into())).await;
    let unnamed = spawn_wt_app().await;
    let with_host = |app: &TestApp| {
        app.http
            .get(app.url("/healthz"))
            .header("host", "node-a.lab.test")
            .send()
    };

    // Act
    let (_, config) = named.get_json("/config").await;
    let (_, plain_config) = unnamed.get_json("/config").await;

    // Assert: pages are told where to open their session, and a session
    // there passes the Host check, which the unnamed node refuses.
    assert_eq!(config["webtransport"]["host"], "node-a.lab.test");
    assert_eq!(config["webtransport"]["port"], named.addr.port());
    assert_eq!(plain_config["webtransport"]["host"], Value::Null);
    assert_eq!(with_host(&named).await.unwrap().status(), 200);
    expect_error(with_host(&unnamed).await.unwrap(), 403, "forbidden_host").await;
    let mut session = open(&named, "/wt?since=0").await;
    assert_eq!(session.until("hello").await["type"], "hello");
}

#[tokio::test]
async fn with_a_delay_a_session_acts_on_each_message_and_gets_each_event_that_long_after() {
    // Arrange: 1.5 s each way, so that "nothing yet after 1 s" is certain.
    let app = spawn_wt_app_with(|c| c.delay_ms = 1500).await;
    let mut session = open(&app, "/wt?since=0").await;
    session.until("hello").await;

    // Act: a register, held on its way in.
    session
        .send(&json!({"type": "register", "name": "alice"}))
        .await;
    let early = tokio::time::timeout(Duration::from_secs(1), session.next()).await;

    // Assert: no welcome after a second, then the welcome.
    assert!(early.is_err(), "the register is still held: {early:?}");
    let welcome = session.until("welcome").await;
    assert_eq!(welcome["cursor"], 1, "alice's own join");

    // Act: a message, held on its way in, its event held on its way out.
    session
        .send(&json!({"type": "message", "text": "late", "id": "m1"}))
        .await;
    let early = tokio::time::timeout(Duration::from_secs(1), session.next()).await;

    // Assert
    assert!(early.is_err(), "the message is still held: {early:?}");
    let message = session.until("message").await;
    assert_eq!(message["seq"], 2, "{message}");
    assert_eq!(message["text"], "late");
}
