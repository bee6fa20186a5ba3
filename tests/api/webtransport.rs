//! WebTransport (`--webtransport`): the contract every transport keeps,
//! over a QUIC session, through the testkit's client on the same QUIC
//! library; and the bounds that are WebTransport's own: datagram and line
//! sizes, streams per session, handshakes per address, a client that never
//! reads.

use serde_json::{json, Value};

use crate::helpers::*;

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
