//! Slow, vanishing and hostile clients: none of them can hurt the others, and
//! none of them leaks anything on the server.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

/// A TCP connection to the app with a tiny receive buffer, so that a client
/// that stops reading stops the server's writes quickly.
async fn tight_socket(app: &TestApp) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(app.addr).await.unwrap()
}

async fn stats(app: &TestApp) -> Value {
    app.get_json("/stats").await.1
}

async fn wait_for_stats(app: &TestApp, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        last = stats(app).await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never saw {what}; last stats: {last}");
}

/// Sends `count` chat messages of `len` characters, four requests at a time,
/// and returns the head once all are in.
async fn flood(app: &TestApp, count: usize, len: usize) -> u64 {
    app.fill("flood", count, len, 4).await;
    1 + count as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_reads_is_bounded_then_closed_and_hurts_no_one() {
    // Arrange
    // The stalled socket is cut after 3 s of taking nothing; the healthy
    // reader, a task of this test, must never go that long unscheduled, even
    // on a loaded machine (at 1 s it sometimes did, and was cut too).
    let app = spawn_app_with(|c| {
        c.rate_limit = 0;
        c.slow_client_timeout = 3.0;
    })
    .await;
    let stalled = tight_socket(&app).await;
    let (_stalled, _) = tokio_tungstenite::client_async(app.ws_url("?since=0"), stalled)
        .await
        .unwrap();
    let mut healthy = Reader::open(&app, Kind::Ws, From::since(0)).await;
    let expected = 1 + 6000;
    let healthy = tokio::spawn(async move {
        healthy.read_through(expected).await;
        healthy
    });
    // Act: 12 MB of events, far more than the kernel buffers hold.
    let head = flood(&app, 6000, 1990).await;
    // Assert: the queues never held more than their hard limits...
    let peak = stats(&app).await["transports"]["ws"]["queued"]
        .as_i64()
        .unwrap();
    assert!(peak <= 2 * 2 * 256 * 1024, "queued {peak} bytes");
    // ...the healthy reader got every event...
    let healthy = healthy.await.unwrap();
    assert_eq!(healthy.seqs(), (1..=head).collect::<Vec<_>>());
    // ...and the stalled socket is cut off, its connection released, while
    // the healthy one stays.
    wait_for_stats(&app, "the stalled socket closed", |s| {
        s["transports"]["ws"]["open"] == 1
            && s["connections"] == 2
            && s["transports"]["ws"]["queued"] == 0
    })
    .await;
    drop(healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_reader_that_stops_reading_resumes_from_its_cursor_when_it_reads_again() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let mut slow = tight_socket(&app).await;
    slow.write_all(format!("GET /sse?since=0 HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await
        .unwrap();
    let mut healthy = Reader::open(&app, Kind::Sse, From::since(0)).await;
    let head = flood(&app, 3000, 1990).await;
    healthy.read_through(head).await;
    // Now the slow reader reads everything: every event, once, in order.
    let mut seen: Vec<u64> = Vec::new();
    let mut text = String::new();
    let mut buf = vec![0u8; 1 << 16];
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.last() != Some(&head) {
            let n = slow.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended early");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(end) = text.find('\n') {
                let line: String = text.drain(..=end).collect();
                if let Some(id) = line.strip_prefix("id: ") {
                    seen.push(id.trim().parse().unwrap());
                }
            }
        }
    })
    .await
    .expect("the slow reader caught up");
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_leave_no_waiter_connection_or_session_behind() {
    let app = spawn_app_with(|c| c.presence_timeout = 0.5).await;
    let mut sessions = Vec::new();
    for i in 0..30 {
        sessions.push(
            app.join(&format!("ghost{i}")).await["session"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut held = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let from = From {
            since: 30,
            epoch: None,
            session: Some(session.clone()),
        };
        if i % 3 == 0 {
            let app = app.handle();
            let path = format!("/longpoll?since=30&timeout=25&session={session}");
            held.push(tokio::spawn(async move {
                app.get(&path).await;
            }));
        } else if i % 3 == 1 {
            let reader = Reader::open(&app, Kind::Sse, from).await;
            held.push(tokio::spawn(async move {
                let _keep = reader;
                std::future::pending::<()>().await;
                unreachable!()
            }));
        } else if i % 3 == 2 {
            let reader = Reader::open(&app, Kind::Ws, from).await;
            held.push(tokio::spawn(async move {
                let _keep = reader;
                std::future::pending::<()>().await;
                unreachable!()
            }));
        }
    }
    wait_for_stats(&app, "every connection open", |s| {
        let t = &s["transports"];
        t["longpoll"]["open"] == 10 && t["sse"]["open"] == 10 && t["ws"]["open"] == 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stats(&app).await["online"],
        30,
        "open connections keep sessions alive"
    );
    // Act: every client vanishes without a word.
    for task in &held {
        task.abort();
    }
    // Assert
    let after = wait_for_stats(&app, "everything released", |s| {
        let t = &s["transports"];
        t["longpoll"]["open"] == 0
            && t["sse"]["open"] == 0
            && t["ws"]["open"] == 0
            && s["online"] == 0
            && s["connections"] == 1
    })
    .await;
    assert_eq!(after["head"], 60, "thirty joins and thirty leaves");
}

#[tokio::test]
async fn past_max_connections_http_answers_503_and_upgrades_are_refused() {
    let app = spawn_app_with(|c| c.max_connections = 3).await;
    // Three open SSE streams hold every place; each answers its headers only
    // once it has been admitted.
    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = app.get("/sse").await;
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }
    let refused = app.get("/poll").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "unavailable"
    );
    match tokio_tungstenite::connect_async(app.ws_url("")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("the upgrade was not refused: {other:?}"),
    }
    // Places free up when the clients go.
    drop(held);
    tokio::time::timeout(PATIENCE, async {
        while app.get("/poll").await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a place freed up");
}

/// The endpoint table leaves health checks and scrapes out of the
/// connection limits. An upgrade request to them passes admission as their
/// plain requests do, and is then refused for not being `GET /ws`: a 400,
/// not the 503 of a full server.
/// Every request and byte read that `/traffic` charged to `client`, over
/// all the kinds of request.
async fn charged(app: &TestApp, client: &str) -> (u64, u64) {
    let (status, traffic) = app.get_json(&format!("/traffic?client={client}")).await;
    assert_eq!(status, 200, "{traffic}");
    let kinds = traffic.as_object().expect("the traffic is an object");
    kinds
        .values()
        .filter_map(|kind| Some((kind["requests"].as_u64()?, kind["bytes_in"].as_u64()?)))
        .fold((0, 0), |(requests, read), (r, b)| (requests + r, read + b))
}

/// Pipelines 4,000 `GET path` requests naming `client` on a socket that
/// reads no answer, waits until the server's answers stop (its writes wait
/// for a reader that never comes), and returns the requests begun and the
/// bytes read, with the length of one request.
async fn pipeline_and_never_read(app: &TestApp, path: &str, client: &str) -> (u64, u64, u64) {
    let request = format!("GET {path}?client={client} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let socket = tight_socket(app).await;
    let (_unread, mut writer) = socket.into_split();
    let pipeline = request.repeat(4000);
    let sending = tokio::spawn(async move { writer.write_all(pipeline.as_bytes()).await });
    let mut last = (0, 0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = charged(app, client).await;
        if now == last && now.0 > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answers never stopped: {now:?}"
        );
        last = now;
    }
    sending.abort();
    (last.0, last.1, request.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_and_never_reads_has_only_a_few_kib_of_requests_read_ahead() {
    // Arrange: a page's stylesheet (14 KB) and the node's metrics, each
    // asked for 4,000 times in one pipeline by a client that reads nothing.
    let app = spawn_app().await;

    for path in ["/style.css", "/metrics"] {
        // Act
        let client = format!("piper{}", path.replace(['/', '.'], "-"));
        let (begun, read, request) = pipeline_and_never_read(&app, path, &client).await;

        // Assert: what was read is the requests begun, and at most 8 KiB
        // more; the rest waits in the kernel, not decoded in the server's
        // memory.
        let ahead = read - begun * request;
        assert!(
            ahead <= 8 * 1024,
            "{path}: {begun} requests begun, {read} bytes read: {ahead} bytes read ahead"
        );
        assert!(
            begun < 4000,
            "{path}: the server stopped answering a client that reads nothing"
        );
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn at_the_connection_limit_upgrades_to_healthz_and_metrics_are_exempt_as_their_requests_are()
{
    // Arrange: one open stream holds the only place.
    let app = spawn_app_with(|c| c.max_connections = 1).await;
    let held = app.get("/sse").await;
    assert_eq!(held.status(), 200);
    assert_eq!(app.get("/poll").await.status(), 503);
    let upgrade = |path: &str| {
        app.http
            .get(app.url(path))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };

    for path in ["/healthz", "/metrics"] {
        // Act
        let plain = app.get(path).await;
        let upgraded = upgrade(path).await.unwrap();

        // Assert
        assert_eq!(plain.status(), 200, "{path}");
        expect_error(upgraded, 400, "bad_request").await;
    }
    expect_error(upgrade("/ws").await.unwrap(), 503, "unavailable").await;
}

#[tokio::test]
async fn listed_origins_get_cors_headers_and_others_get_none() {
    let app = spawn_app_with(|c| c.allowed_origins = vec!["http://friend.example".into()]).await;
    let friendly = app
        .http
        .get(app.url("/poll"))
        .header("origin", "http://friend.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        friendly.headers()["access-control-allow-origin"],
        "http://friend.example"
    );
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/send?session=x"))
        .header("origin", "http://friend.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let stranger = app
        .http
        .get(app.url("/poll"))
        .header("origin", "http://stranger.example")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 200);
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let stranger_preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/send"))
        .header("origin", "http://stranger.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(stranger_preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn a_slowloris_client_is_shut_out_by_the_request_timeout() {
    let app = spawn_app().await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the half-sent request");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// A tiny deterministic generator, so a failing run can be repeated.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_dropped_at_random_and_resumed_from_their_cursor_see_every_event_once_in_order() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap().to_owned();
    const MESSAGES: u64 = 400;
    let publisher = {
        let app = app.handle();
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                app.say(&session, &format!("m{i}")).await;
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let head = 1 + MESSAGES;
    let mut readers = Vec::new();
    for (n, kind) in ALL.into_iter().enumerate() {
        let mut reader = Reader::open(&app, kind, From::since(0)).await;
        let mut rng = Lcg(n as u64 + 7);
        readers.push(tokio::spawn(async move {
            let mut drops = 0;
            tokio::time::timeout(Duration::from_secs(60), async {
                while reader.cursor() < head {
                    // Cut the connection at a random moment, mid-stream or
                    // mid-request, then come back from the cursor.
                    let cut_after = Duration::from_millis(rng.below(15));
                    if tokio::time::timeout(cut_after, reader.receive_once())
                        .await
                        .is_err()
                        || rng.below(4) == 0
                    {
                        drops += 1;
                        reader.connect().await;
                    }
                }
            })
            .await
            .expect("the reader caught up");
            (reader.kind, reader.seqs(), drops)
        }));
    }
    publisher.await.unwrap();
    for reader in readers {
        let (kind, seqs, drops) = reader.await.unwrap();
        assert!(drops > 5, "{kind:?} was dropped only {drops} times");
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "{kind:?}");
    }
}
