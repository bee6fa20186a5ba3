//! `--http1-addr`: a plain HTTP/1.1 listener beside HTTPS, so a page can
//! send the same request over HTTP/2 and over HTTP/1.1. It is the same
//! server reached another way: the same rooms, the same limits and checks,
//! the same byte counts; `/config` names its port, and it needs `--tls`.

use reqwest::Version;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// An app under `--tls`, its clients on HTTP/2, with a plain listener on a
/// free port; set up further by `configure`.
async fn spawn_with_plain_listener(configure: impl FnOnce(&mut pushlab::Config)) -> TestApp {
    OVER_TLS
        .scope(
            Some(Http::Two),
            spawn_app_with(|c| {
                c.http1_addr = Some("127.0.0.1:0".parse().unwrap());
                configure(c);
            }),
        )
        .await
}

/// The plain listener's base URL, as a page learns it from `/config`.
async fn plain_url(app: &TestApp) -> String {
    let (status, config) = app.get_json("/config").await;
    assert_eq!(status, 200);
    let port = config["http1"]["port"]
        .as_u64()
        .expect("/config names the port");
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn the_plain_listener_serves_the_same_rooms_as_https_and_config_names_it() {
    // Arrange
    let app = spawn_with_plain_listener(|_| {}).await;
    let plain = plain_url(&app).await;
    let http = reqwest::Client::new();
    let alice = app.join("alice").await;
    let seq = app.say(alice["session"].as_str().unwrap(), "over h2").await;

    // Act: read over plain HTTP/1.1 what HTTPS took, and send back.
    let polled = http
        .get(format!("{plain}/poll?since=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(polled.version(), Version::HTTP_11);
    let polled: Value = polled.json().await.unwrap();
    let bob: Value = http
        .post(format!("{plain}/register"))
        .json(&json!({ "name": "bob" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = http
        .post(format!(
            "{plain}/send?session={}",
            bob["session"].as_str().unwrap()
        ))
        .json(&json!({ "type": "message", "text": "over h1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);

    // Assert
    let texts = |events: &Value| -> Vec<String> {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["text"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(texts(&polled), ["over h2"]);
    assert_eq!(polled["events"].as_array().unwrap().len() as u64, seq);
    let response = app.get(&format!("/poll?since={seq}")).await;
    assert_eq!(response.version(), Version::HTTP_2);
    assert!(texts(&response.json().await.unwrap()).contains(&"over h1".to_owned()));
    // Both listeners give the same /config.
    let config: Value = http
        .get(format!("{plain}/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config, app.get_json("/config").await.1);
}

#[tokio::test]
async fn without_the_flag_config_names_no_plain_listener() {
    let app = OVER_TLS.scope(Some(Http::Two), spawn_app()).await;
    let (_, config) = app.get_json("/config").await;
    assert_eq!(config["tls"], true);
    assert_eq!(config["http1"], Value::Null);
}

#[tokio::test]
async fn a_request_on_the_plain_listener_is_counted_to_the_byte_for_its_client() {
    // Arrange
    let app = spawn_with_plain_listener(|_| {}).await;
    let plain = plain_url(&app).await;
    let request = "GET /poll?since=0&client=plain-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                   Accept: */*\r\nConnection: close\r\n\r\n";

    // Act
    let mut socket = TcpStream::connect(plain.trim_start_matches("http://"))
        .await
        .unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();

    // Assert: counted in the one table, read here over HTTPS.
    let (_, traffic) = app.get_json("/traffic?client=plain-1").await;
    assert_eq!(traffic["poll"]["requests"], 1);
    assert_eq!(traffic["poll"]["bytes_in"], request.len());
    assert_eq!(traffic["poll"]["bytes_out"], answer.len());
}

#[tokio::test]
async fn the_connection_limits_and_the_host_check_hold_across_both_listeners() {
    // Arrange: this address's two places, taken by streams over HTTPS.
    let app = spawn_with_plain_listener(|c| c.ip_connections = 2).await;
    let plain = plain_url(&app).await;
    let http = reqwest::Client::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = app.get("/sse?since=0").await;
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }

    // Act / Assert: the plain listener counts against the same place.
    expect_error(
        http.get(format!("{plain}/stats")).send().await.unwrap(),
        429,
        "ip_limit",
    )
    .await;
    assert_eq!(
        http.get(format!("{plain}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    drop(held);

    // And a page on a rebound name is refused there as on HTTPS.
    let rebound = http
        .get(format!("{plain}/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    expect_error(rebound, 403, "forbidden_host").await;
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_on_the_plain_listener_behind_a_trusted_proxy() {
    // Arrange
    let app = spawn_with_plain_listener(|c| {
        c.ip_registrations = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let plain = plain_url(&app).await;
    let http = reqwest::Client::new();
    let register = |name: &str, forwarded_for: &str| {
        http.post(format!("{plain}/register"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({ "name": name }))
            .send()
    };

    // Act / Assert: each forwarded address has its own registrations.
    assert_eq!(register("a", "10.0.0.1").await.unwrap().status(), 200);
    expect_error(register("b", "10.0.0.1").await.unwrap(), 429, "ip_limit").await;
    assert_eq!(register("c", "10.0.0.2").await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_plain_listener_without_tls_or_on_a_taken_port_is_refused_at_start() {
    // Without --tls: --addr already serves plain HTTP/1.1.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = pushlab::Config {
        http1_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..pushlab::Config::default()
    };
    let Err(refused) = pushlab::serve(listener, config) else {
        panic!("--http1-addr without --tls should be refused");
    };
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert!(refused.to_string().contains("--tls"), "{refused}");

    // A port already taken: said, with the flag's name.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = pushlab::Config {
        tls: true,
        http1_addr: Some(taken.local_addr().unwrap()),
        ..pushlab::Config::default()
    };
    let Err(refused) = pushlab::serve(listener, config) else {
        panic!("a taken port should be refused");
    };
    assert!(refused.to_string().contains("--http1-addr"), "{refused}");
}
