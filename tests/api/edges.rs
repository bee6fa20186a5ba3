//! Trust at the edges: strange input, foreign hosts, and one client address
//! trying to take more than its share. Each limit has its test here.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use proptest::strategy::{Strategy, ValueTree as _};
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::*;

/// A client whose requests come from another loopback address.
fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .unwrap()
}

/// Query strings a generator makes: known and unknown keys, with numbers
/// far out of range, non-numbers, and bytes that need escaping.
fn query_string() -> impl Strategy<Value = String> {
    let key = proptest::prop_oneof![
        proptest::strategy::Just("since".to_string()),
        proptest::strategy::Just("epoch".to_string()),
        proptest::strategy::Just("session".to_string()),
        proptest::strategy::Just("timeout".to_string()),
        proptest::strategy::Just("room".to_string()),
        "[a-z]{1,8}",
    ];
    let value = proptest::prop_oneof![
        proptest::strategy::Just("1e20".to_string()),
        proptest::strategy::Just("1e308".to_string()),
        proptest::strategy::Just("-1".to_string()),
        proptest::strategy::Just("NaN".to_string()),
        proptest::strategy::Just("inf".to_string()),
        proptest::strategy::Just("18446744073709551616".to_string()),
        proptest::strategy::Just("0.000001".to_string()),
        "[0-9]{1,25}",
        "-?[0-9]{1,4}\\.[0-9]{1,4}(e[+-]?[0-9]{1,3})?",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "%[0-9A-F]{2}[a-z]{0,4}",
        "\\PC{0,12}",
    ];
    proptest::collection::vec((key, value), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", escape(&v)))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Percent-escapes what a URL cannot carry as it is, leaving `%` alone so
/// that broken escapes reach the server too.
fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'%' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn generated_query_strings_never_get_a_5xx_or_an_empty_reply_on_any_endpoint() {
    let app = spawn_app_with(|c| {
        c.longpoll_timeout = 0.05;
        c.rate_limit = 0;
    })
    .await;
    let mut runner = TestRunner::deterministic();
    let strategy = query_string();
    let endpoints = [
        ("GET", "/poll"),
        ("GET", "/longpoll"),
        ("GET", "/sse"),
        ("GET", "/ws"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("POST", "/send"),
        ("POST", "/register"),
    ];
    // The known troublemakers first, then what the generator makes.
    let fixed = [
        "since=0&timeout=1e20",
        "timeout=1e308",
        "since=18446744073709551616",
        "since=-1&epoch=%ZZ",
        "session=not-a-uuid",
        "timeout=NaN",
    ];
    let generated = (0..100).map(|_| strategy.new_tree(&mut runner).unwrap().current());
    let queries = fixed.into_iter().map(str::to_owned).chain(generated);
    for (case, query) in queries.enumerate() {
        for (method, path) in endpoints {
            let url = app.url(&format!("{path}?{query}"));
            let request = match method {
                "GET" => app.http.get(&url),
                _ => app.http.post(&url).json(
                    &json!({"name": format!("q{case}"), "type": "mousemove", "x": 0, "y": 0}),
                ),
            };
            let response = tokio::time::timeout(PATIENCE, request.send())
                .await
                .unwrap_or_else(|_| panic!("{method} {path}?{query} hung"))
                .unwrap_or_else(|err| panic!("{method} {path}?{query}: no reply: {err}"));
            let status = response.status().as_u16();
            assert!(status < 500, "{method} {path}?{query} answered {status}");
            if path == "/sse" && status == 200 {
                continue; // a stream that never ends; its headers are the answer
            }
            let body = response.bytes().await.unwrap();
            assert!(!body.is_empty(), "{method} {path}?{query}: empty body");
            if status >= 400 {
                let error: Value = serde_json::from_slice(&body).unwrap();
                assert!(
                    error["code"].is_string(),
                    "{method} {path}?{query}: {error}"
                );
            }
        }
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_long_poll_asking_for_an_enormous_timeout_is_held_for_the_cap() {
    let app = spawn_app_with(|c| c.longpoll_timeout = 0.2).await;

    let (status, body) = app.get_json("/longpoll?since=0&timeout=1e20").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], json!([]));
}

#[tokio::test]
async fn a_host_the_server_does_not_answer_to_gets_403_on_every_endpoint() {
    let app = spawn_app_with(|c| c.allowed_hosts = vec!["pushlab.test".into()]).await;
    let port = app.addr.port();
    let with_host = |method: reqwest::Method, path: &str, host: &str| {
        app.http
            .request(method, app.url(path))
            .header("host", host)
            .json(&json!({"name": "h"}))
            .send()
    };

    for (method, path) in [
        (reqwest::Method::GET, "/poll"),
        (reqwest::Method::GET, "/"),
        (reqwest::Method::GET, "/stats"),
        (reqwest::Method::POST, "/register"),
    ] {
        let response = with_host(method.clone(), path, &format!("evil.example:{port}"))
            .await
            .unwrap();
        expect_error(response, 403, "forbidden_host").await;
    }
    let mut upgrade = app.ws_url("").into_client_request().unwrap();
    upgrade
        .headers_mut()
        .insert("host", format!("rebound.example:{port}").parse().unwrap());
    match tokio_tungstenite::connect_async(upgrade).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "forbidden_host");
        }
        other => panic!("the upgrade was not refused: {other:?}"),
    }
    for host in [
        format!("localhost:{port}"),
        format!("pushlab.test:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let response = with_host(reqwest::Method::GET, "/poll", &host)
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let app = spawn_app_with(|c| c.ip_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let response = app.get("/sse?since=0").await;
        assert_eq!(response.status(), 200, "streams' headers prove admission");
        held.push(response);
    }

    expect_error(app.get("/poll").await, 429, "ip_limit").await;
    let elsewhere = client_from(2).get(app.url("/poll")).send().await.unwrap();
    assert_eq!(elsewhere.status(), 200, "another address is served");
    assert_eq!(app.get("/healthz").await.status(), 200);

    drop(held);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.get("/poll").await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "no place came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_address_cannot_register_more_than_its_share_per_minute() {
    let app = spawn_app_with(|c| c.ip_registrations = 3).await;
    for name in ["a", "b", "c"] {
        app.join(name).await;
    }

    expect_error(app.register("d").await, 429, "ip_limit").await;
    let elsewhere = client_from(3)
        .post(app.url("/register"))
        .json(&json!({"name": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 200);
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_sessions() {
    let app = spawn_app_with(|c| c.ip_sessions = 2).await;
    let first = app.join("a").await;
    app.join("b").await;

    expect_error(app.register("c").await, 429, "ip_limit").await;
    let leave = app
        .send(
            first["session"].as_str().unwrap(),
            &json!({"type": "leave"}),
        )
        .await;
    assert_eq!(leave.status(), 200);
    assert_eq!(app.register("c").await.status(), 200, "a place came free");
}

#[tokio::test]
async fn spreading_events_over_sessions_does_not_multiply_one_address_rate() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 1000;
        c.ip_rate_limit = 5;
    })
    .await;
    let mut sessions = Vec::new();
    for name in ["a", "b", "c", "d"] {
        sessions.push(app.join(name).await["session"].as_str().unwrap().to_owned());
    }

    let mut accepted = 0;
    for i in 0..40 {
        let response = app
            .send(
                &sessions[i % 4],
                &json!({"type": "mousemove", "x": 0.5, "y": 0.5}),
            )
            .await;
        match response.status().as_u16() {
            200 => accepted += 1,
            429 => expect_error(response, 429, "rate_limited").await,
            other => panic!("unexpected {other}"),
        }
    }

    // A burst of twice the rate, plus what refilled while the test ran.
    assert!((10..20).contains(&accepted), "{accepted} accepted");
}

/// Registers `name` through `app` as a proxy would, naming the client
/// `forwarded_for` in `X-Forwarded-For`.
fn register_forwarded_for(
    app: &TestApp,
    name: &str,
    forwarded_for: &str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    app.http
        .post(app.url("/register"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "name": name }))
        .send()
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let behind = spawn_app_with(|c| {
        c.ip_registrations = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let direct = spawn_app_with(|c| c.ip_registrations = 1).await;
    let register = |app: &TestApp, name: &str, forwarded_for: &str| {
        register_forwarded_for(app, name, forwarded_for)
    };

    assert_eq!(
        register(&behind, "a", "10.0.0.1").await.unwrap().status(),
        200
    );
    let same = register(&behind, "b", "203.0.113.9, 10.0.0.1")
        .await
        .unwrap();
    expect_error(same, 429, "ip_limit").await;
    assert_eq!(
        register(&behind, "c", "10.0.0.2").await.unwrap().status(),
        200
    );

    assert_eq!(
        register(&direct, "a", "10.0.0.1").await.unwrap().status(),
        200
    );
    let spoofed = register(&direct, "b", "10.0.0.2").await.unwrap();
    expect_error(spoofed, 429, "ip_limit").await;
}

#[tokio::test]
async fn on_a_dual_stack_listener_a_trusted_ipv4_proxy_is_recognised() {
    // Arrange: pushlab on [::], where an IPv4 peer shows as ::ffff:127.0.0.1,
    // behind a proxy named as 127.0.0.1.
    let listener = std::net::TcpListener::bind("[::]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = pushlab::Config {
        ip_registrations: 1,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..pushlab::Config::default()
    };
    let server = pushlab::serve(listener, config).unwrap();
    let http = reqwest::Client::new();
    let register = |name: &str, forwarded_for: &str| {
        http.post(format!("http://127.0.0.1:{port}/register"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({ "name": name }))
            .send()
    };

    // Act: two clients behind the proxy, then the first one again.
    let first = register("a", "198.51.100.1").await.unwrap();
    let second = register("b", "198.51.100.2").await.unwrap();
    let again = register("c", "198.51.100.1").await.unwrap();

    // Assert: each client has its own allowance, not the proxy's.
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    expect_error(again, 429, "ip_limit").await;
    server.shutdown().await;
}

#[tokio::test]
async fn ipv6_clients_in_one_64_share_their_allowance() {
    let app = spawn_app_with(|c| {
        c.ip_registrations = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let register =
        |name: &str, forwarded_for: &str| register_forwarded_for(&app, name, forwarded_for);

    assert_eq!(
        register("a", "2001:db8:1:2::1").await.unwrap().status(),
        200
    );
    let same_64 = register("b", "2001:db8:1:2:ffff::9").await.unwrap();
    expect_error(same_64, 429, "ip_limit").await;
    assert_eq!(
        register("c", "2001:db8:1:3::1").await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn healthz_answers_when_the_connection_limit_is_reached() {
    let app = spawn_app_with(|c| c.max_connections = 1).await;
    let held = app.get("/sse?since=0").await;
    assert_eq!(held.status(), 200);

    expect_error(app.get("/poll").await, 503, "unavailable").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_poll_answer_is_capped_in_bytes_and_says_when_more_is_waiting() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let session = app.join("big").await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = "b".repeat(2000);
    for _ in 0..200 {
        app.say(&session, &text).await;
    }
    let head = app.head().await;

    for path in ["/poll", "/longpoll"] {
        let mut cursor = 0;
        let mut seqs = Vec::new();
        let mut answers = 0;
        loop {
            let response = app.get(&format!("{path}?since={cursor}&timeout=0")).await;
            let body = response.bytes().await.unwrap();
            assert!(body.len() <= 300 * 1024, "{path}: {} bytes", body.len());
            let batch: Value = serde_json::from_slice(&body).unwrap();
            seqs.extend(
                batch["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["seq"].as_u64().unwrap()),
            );
            cursor = batch["cursor"].as_u64().unwrap();
            answers += 1;
            if !batch["more"].as_bool().unwrap() {
                break;
            }
        }
        assert!(answers > 1, "{path}: one answer carried everything");
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "{path}");
    }
}

#[tokio::test]
async fn the_welcome_is_bounded_and_says_how_many_are_online() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let talker = app.join("talker").await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = "t".repeat(2000);
    for _ in 0..100 {
        app.say(&talker, &text).await;
    }
    for i in 0..205 {
        app.join(&format!("u{i:03}")).await;
    }

    let response = app.register("zed").await;
    let body = response.bytes().await.unwrap();
    let welcome: Value = serde_json::from_slice(&body).unwrap();

    assert_eq!(welcome["online"], 207);
    let users = welcome["users"].as_array().unwrap();
    assert_eq!(users.len(), 200);
    assert!(
        users.iter().any(|u| u["name"] == "zed"),
        "the joiner is listed"
    );
    let history = welcome["history"].as_array().unwrap();
    assert!(
        !history.is_empty() && history.len() < 100,
        "{}",
        history.len()
    );
    assert!(body.len() < 128 * 1024, "{} bytes", body.len());
}

#[tokio::test]
async fn a_clean_close_of_one_socket_does_not_end_a_session_another_still_uses() {
    let app = spawn_app().await;
    let welcome = app.join("twin").await;
    let session = welcome["session"].as_str().unwrap();
    let url = app.ws_url(&format!("?session={session}"));
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();

    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let still = app
        .send(session, &json!({"type": "message", "text": "still here"}))
        .await;
    assert_eq!(still.status(), 200, "the other socket keeps the session");

    second.send(WsMessage::Close(None)).await.unwrap();
    while second.next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let gone = app
            .send(session, &json!({"type": "mousemove", "x": 0, "y": 0}))
            .await;
        if gone.status() == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last close did not end it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
