//! HTTPS (`--tls`): every endpoint over HTTP/1.1 and HTTP/2, the WebSocket
//! over `wss:`, the byte counts, limits and checks as they hold on one
//! multiplexed connection, and the certificate: made by pushlab and pinned
//! through `/config`, or given and refused when out of its validity.
//! The conformance scenarios run over HTTPS too (see `conformance.rs`).

use std::path::{Path, PathBuf};

use futures::{SinkExt as _, StreamExt as _};
use reqwest::Version;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// An app under `--tls` whose clients speak `http`, set up by `configure`.
async fn spawn_tls_app(http: Http, configure: impl FnOnce(&mut pushlab::Config)) -> TestApp {
    OVER_TLS.scope(Some(http), spawn_app_with(configure)).await
}

fn version(http: Http) -> Version {
    match http {
        Http::One => Version::HTTP_11,
        Http::Two => Version::HTTP_2,
    }
}

/// The SHA-256 of `der`, as lower-case hex.
fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The certificate the server presented for `response`, as DER.
fn served_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the client kept the TLS details")
        .to_vec()
}

#[tokio::test]
async fn every_http_endpoint_answers_over_https_on_http1_and_on_http2() {
    for http in [Http::One, Http::Two] {
        // Arrange
        let app = spawn_tls_app(http, |_| {}).await;
        let alice = app.join("alice").await;
        let session = alice["session"].as_str().unwrap();
        let seq = app.say(session, "over tls").await;

        // Act / Assert: each endpoint, on the HTTP version ALPN chose.
        for path in [
            "/",
            "/style.css",
            "/compare.html",
            "/config",
            "/stats",
            "/rooms",
            "/metrics",
            "/traffic?client=me",
            "/time",
            "/join",
            "/healthz",
            "/poll?since=0",
            "/longpoll?since=0",
        ] {
            let response = app.get(path).await;
            assert_eq!(response.status(), 200, "{path} over {http:?}");
            assert_eq!(response.version(), version(http), "{path}");
        }
        let (_, polled) = app.get_json("/poll?since=0").await;
        assert_eq!(polled["events"].as_array().unwrap().len() as u64, seq);
        let handle = app.handle();
        let held = tokio::spawn(async move {
            let held = handle
                .get(&format!("/longpoll?since={seq}&timeout=5"))
                .await;
            (held.version(), held.json::<Value>().await.unwrap())
        });
        app.until_long_polls_held(1).await;
        app.say(session, "wakes the long-poll").await;
        let (held_version, woken) = held.await.unwrap();
        assert_eq!(held_version, version(http));
        assert_eq!(woken["events"][0]["text"], "wakes the long-poll");
        let mut stream = app.get("/sse?since=0").await;
        assert_eq!(stream.version(), version(http));
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        let first = stream.chunk().await.unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&first).contains("\"hello\""),
            "{first:?}"
        );
    }
}

#[tokio::test]
async fn config_says_tls_is_on_and_gives_the_hash_of_the_certificate_served() {
    // Arrange
    let app = spawn_tls_app(Http::Two, |_| {}).await;
    let plain = spawn_app().await;

    // Act
    let response = app.get("/config").await;
    let served = served_certificate(&response);
    let config: Value = response.json().await.unwrap();
    let (_, plain_config) = plain.get_json("/config").await;

    // Assert
    assert_eq!(config["tls"], true);
    assert_eq!(config["certificate_sha256"], sha256_hex(&served));
    assert_eq!(plain_config["tls"], false);
    assert_eq!(plain_config["certificate_sha256"], Value::Null);
    // WebTransport serves the same certificate, so one hash pins both.
    assert_eq!(
        config["webtransport"]["certificate_hash"],
        sha256_hex(&served)
    );
}

/// A `/traffic` tally of `client` on `channel`: (requests, in, out).
async fn tally(app: &TestApp, client: &str, channel: &str) -> (u64, u64, u64) {
    let (_, traffic) = app.get_json(&format!("/traffic?client={client}")).await;
    let c = &traffic[channel];
    (
        c["requests"].as_u64().unwrap(),
        c["bytes_in"].as_u64().unwrap(),
        c["bytes_out"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn on_http2_each_stream_is_charged_to_its_own_requests_client() {
    // Arrange: a stream held open on the one connection while polls go by.
    let app = spawn_tls_app(Http::Two, |_| {}).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let mut stream = app.get("/sse?since=0&client=streamer").await;
    let mut streamed = stream.chunk().await.unwrap().unwrap().len();

    // Act
    let mut bodies = 0;
    for client in ["poller-a", "poller-b", "poller-b"] {
        let response = app.get(&format!("/poll?since=0&client={client}")).await;
        assert_eq!(response.version(), Version::HTTP_2);
        bodies += response.bytes().await.unwrap().len();
    }
    app.say(session, "to the stream").await;
    while let Some(chunk) = stream.chunk().await.unwrap() {
        streamed += chunk.len();
        if String::from_utf8_lossy(&chunk).contains("to the stream") {
            break;
        }
    }

    // Assert: each client is charged its own requests and no one else's.
    let (requests, sse_in, sse_out) = tally(&app, "streamer", "sse").await;
    assert_eq!(requests, 1);
    assert!(sse_in > 0);
    // Every byte streamed came in DATA frames, each with a 9-byte header,
    // after a HEADERS frame.
    assert!(sse_out >= streamed as u64 + 18, "{sse_out} < {streamed}");
    assert_eq!(tally(&app, "streamer", "poll").await.0, 0);
    let (a, a_in, a_out) = tally(&app, "poller-a", "poll").await;
    let (b, b_in, b_out) = tally(&app, "poller-b", "poll").await;
    assert_eq!((a, b), (1, 2));
    assert_eq!(tally(&app, "poller-a", "sse").await.0, 0);
    let polls_out = a_out + b_out;
    assert!(
        polls_out >= bodies as u64 + 3 * 18 && polls_out < bodies as u64 + 3 * 400,
        "{polls_out} for {bodies} bytes of bodies"
    );
    // Requests alike cost alike, each on its own stream; and HPACK sends
    // a head the connection has seen before in a few dozen bytes.
    assert_eq!(b_in, 2 * a_in);
    assert!(a_in < 80, "a poll's HEADERS frame took {a_in} bytes");
}

#[tokio::test]
async fn on_http1_over_tls_each_request_is_charged_its_records_and_the_first_the_handshake() {
    // Arrange
    let app = spawn_tls_app(Http::One, |_| {}).await;

    // Act: the first request on a fresh connection, then another.
    let first = app.get("/poll?since=0&client=first").await;
    assert_eq!(first.version(), Version::HTTP_11);
    let first_body = first.bytes().await.unwrap().len() as u64;
    app.get("/poll?since=0&client=again").await;

    // Assert: the first carries the client's side of the handshake.
    let (_, first_in, first_out) = tally(&app, "first", "poll").await;
    let (_, again_in, _) = tally(&app, "again", "poll").await;
    assert!(first_in > again_in + 100, "{first_in} vs {again_in}");
    assert!(
        again_in > 22,
        "a head, and its record's 22 bytes of overhead"
    );
    assert!(first_out > first_body, "the head and the record's overhead");
}

#[tokio::test]
async fn a_host_that_is_not_served_here_is_refused_in_an_http2_authority() {
    // Arrange: a name that resolves here but is not allowed.
    let app = spawn_tls_app(Http::Two, |_| {}).await;
    let rebound = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("rebound.example", app.addr)
        .build()
        .unwrap();
    let port = app.addr.port();

    // Act
    let refused = rebound
        .get(format!("https://rebound.example:{port}/poll"))
        .send()
        .await
        .unwrap();
    let local = rebound
        .get(format!("https://localhost:{port}/poll"))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(refused.version(), Version::HTTP_2);
    expect_error(refused, 403, "forbidden_host").await;
    assert_eq!(local.status(), 200);
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_over_http2_behind_a_trusted_proxy() {
    let app = spawn_tls_app(Http::Two, |c| {
        c.ip_registrations = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let register = |name: &str, forwarded_for: &str| {
        app.http
            .post(app.url("/register"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({ "name": name }))
            .send()
    };

    let first = register("a", "10.0.0.1").await.unwrap();
    assert_eq!(
        (first.status().as_u16(), first.version()),
        (200, Version::HTTP_2)
    );
    expect_error(register("b", "10.0.0.1").await.unwrap(), 429, "ip_limit").await;
    assert_eq!(register("c", "10.0.0.2").await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_per_address_limit_counts_http2_streams_not_connections() {
    // Arrange: two streams held on one connection.
    let app = spawn_tls_app(Http::Two, |c| c.ip_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let response = app.get("/sse?since=0").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), Version::HTTP_2);
        held.push(response);
    }

    // Act / Assert: a third request on the same connection is over it.
    expect_error(app.get("/poll").await, 429, "ip_limit").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_websocket_over_tls_carries_the_log_both_ways_and_is_charged_to_its_client() {
    for http in [Http::One, Http::Two] {
        // Arrange
        let app = spawn_tls_app(http, |_| {}).await;
        let url = app.ws_url("?since=0&client=socket");
        assert!(url.starts_with("wss://"), "{url}");
        let (mut socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, app.tls.clone())
                .await
                .expect("the wss handshake");

        // Act: register over the socket, then hear a message from HTTP.
        let hello = next_json(&mut socket).await;
        socket
            .send(Message::Text(
                json!({"type": "register", "name": "ws"}).to_string(),
            ))
            .await
            .unwrap();
        let welcome = until(&mut socket, |v| v["type"] == "welcome").await;
        let bob = app.join("bob").await;
        app.say(bob["session"].as_str().unwrap(), "to the socket")
            .await;
        let heard = until(&mut socket, |v| v["text"] == "to the socket").await;

        // Assert
        assert_eq!(hello["type"], "hello");
        assert!(welcome["session"].is_string());
        assert_eq!(heard["name"], "bob");
        let (requests, bytes_in, bytes_out) = tally(&app, "socket", "ws").await;
        assert_eq!(requests, 1);
        assert!(bytes_in > 0 && bytes_out > 0, "{bytes_in} {bytes_out}");
    }
}

#[tokio::test]
async fn a_websocket_over_tls_from_a_foreign_origin_is_refused() {
    let app = spawn_tls_app(Http::One, |_| {}).await;
    let mut request = app.ws_url("?since=0").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://elsewhere.example".parse().unwrap());

    let refused =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, app.tls.clone())
            .await;

    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn until(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let value = next_json(socket).await;
        if wanted(&value) {
            return value;
        }
    }
}

/// Writes a certificate for `localhost` and 127.0.0.1, valid from
/// `not_before` to `not_after`, and its key, as PEM files in `dir`.
fn certificate_files(
    dir: &Path,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> (PathBuf, PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.not_before = not_before;
    params.not_after = not_after;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// Starts the binary with `--tls-cert` and `--tls-key` for the files.
async fn start_with_certificate(cert: &Path, key: &Path) -> Started {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    start_binary(&["--tls-cert", cert, "--tls-key", key], &[]).await
}

fn expect_refused(started: Started, needle: &str) {
    match started {
        Started::Refused { status, stderr } => {
            assert!(!status.success());
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        Started::Running(_) => panic!("it started with a certificate it should refuse"),
    }
}

#[tokio::test]
async fn a_given_certificate_that_has_expired_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = certificate_files(
        dir.path(),
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );

    let started = start_with_certificate(&cert, &key).await;

    expect_refused(started, "the certificate expired at");
}

#[tokio::test]
async fn a_given_certificate_that_is_not_yet_valid_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = certificate_files(
        dir.path(),
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    );

    let started = start_with_certificate(&cert, &key).await;

    expect_refused(started, "the certificate is not valid before");
}

#[tokio::test]
async fn a_certificate_without_its_key_or_a_key_that_is_not_its_own_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, _) = certificate_files(dir.path(), now, now + time::Duration::days(2));
    let (_, wrong_key) = certificate_files(other.path(), now, now + time::Duration::days(2));

    let alone = start_binary(&["--tls-cert", cert.to_str().unwrap()], &[]).await;
    let mismatched = start_with_certificate(&cert, &wrong_key).await;

    expect_refused(alone, "--tls-key");
    expect_refused(mismatched, "the key does not fit");
}

#[tokio::test]
async fn a_given_valid_certificate_is_served_and_not_offered_for_pinning() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = certificate_files(
        dir.path(),
        now - time::Duration::hours(1),
        now + time::Duration::days(90),
    );
    let Started::Running(mut app) = start_with_certificate(&cert, &key).await else {
        panic!("a valid certificate was refused");
    };
    let pem = std::fs::read(&cert).unwrap();
    let given = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|der: rustls_pki_types::CertificateDer<'static>| der.to_vec())
        .unwrap();

    // Act
    let printed = app.stdout_line().await;
    let response = app.get("/config").await;
    let served = served_certificate(&response);
    let config: Value = response.json().await.unwrap();

    // Assert
    assert_eq!(served, given, "the given certificate is served");
    assert!(printed.contains("from --tls-cert"), "{printed}");
    assert_eq!(config["tls"], true);
    assert_eq!(
        config["certificate_sha256"],
        Value::Null,
        "a CA's needs no pin"
    );
}

#[tokio::test]
async fn the_binary_under_tls_prints_the_fingerprint_of_the_certificate_it_serves() {
    // Arrange
    let mut app = spawn_binary(&["--tls"]).await;

    // Act
    let printed = app.stdout_line().await;
    let response = app.get("/config").await;
    let served = served_certificate(&response);
    let config: Value = response.json().await.unwrap();

    // Assert
    let hex = sha256_hex(&served);
    let colons = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    assert!(printed.ends_with(&colons), "{printed} vs {colons}");
    assert!(printed.contains("self-signed"), "{printed}");
    assert_eq!(config["certificate_sha256"], hex);
    let (_, cert) = x509_parser::parse_x509_certificate(&served).unwrap();
    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) as f64 / 86_400.0;
    assert!(days <= 14.0, "valid for {days} days");
    assert!(validity.is_valid());
}

#[tokio::test]
async fn without_tls_the_binary_serves_plain_http_as_before() {
    let app = spawn_binary(&[]).await;
    assert!(app.url("/config").starts_with("http://"));
    let response = app.get("/config").await;
    assert_eq!(response.version(), Version::HTTP_11);
    let config: Value = response.json().await.unwrap();
    assert_eq!(config["tls"], false);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_tls_handshake_is_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Arrange: a TCP connection that starts a TLS record and stops.
    let app = spawn_tls_app(Http::Two, |_| {}).await;
    let mut client = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    client
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();

    // Act: wait for the server to give up on it.
    let mut buf = [0; 64];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;

    // Assert: closed well before the test's patience, and others served.
    assert!(closed.is_ok(), "the half-made handshake was still held");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_tls_that_never_reads_is_bounded_then_closed_and_hurts_no_one() {
    // Arrange: one wss client that stops reading, with a tiny receive
    // buffer, and one that reads.
    let app = spawn_tls_app(Http::Two, |c| {
        c.rate_limit = 0;
        c.slow_client_timeout = 1.0;
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tight = socket.connect(app.addr).await.unwrap();
    let (_stalled, _) = tokio_tungstenite::client_async_tls_with_config(
        app.ws_url("?since=0"),
        tight,
        None,
        app.tls.clone(),
    )
    .await
    .unwrap();
    let mut healthy = Reader::open(&app, Kind::Ws, From::since(0)).await;
    let head = 1 + 3000;
    let healthy = tokio::spawn(async move {
        healthy.read_through(head).await;
        healthy
    });

    // Act: 6 MB of events, far more than every buffer on the way holds.
    app.fill("flood", 3000, 1990, 4).await;

    // Assert: the sockets' queues stayed within their hard limits...
    let (_, stats) = app.get_json("/stats").await;
    let peak = stats["transports"]["ws"]["queued"].as_i64().unwrap();
    assert!(peak <= 2 * 2 * 256 * 1024, "queued {peak} bytes");
    // ...the healthy reader got everything, and the stalled socket is
    // cut off and its place released, while the healthy one stays.
    let healthy = healthy.await.unwrap();
    assert_eq!(healthy.seqs(), (1..=head).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, stats) = app.get_json("/stats").await;
        let ws = &stats["transports"]["ws"];
        if ws["open"] == 1 && ws["queued"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled socket stayed: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
