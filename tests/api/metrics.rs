//! `GET /metrics`: valid Prometheus text whose counters move with what
//! clients do on each transport, and with `--redis`, with Redis's round
//! trips and failures. The text is read with the small parser below, which
//! checks the format as it goes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::classroom::exchange;
use crate::helpers::*;

/// One sample line: a series and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: each family's type, and every sample.
#[derive(Debug)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text exposition format (version 0.0.4), panicking on a
    /// malformed line, a family typed twice, or a sample that belongs to no
    /// family typed before it.
    fn parse(text: &str) -> Exposition {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines().filter(|line| !line.is_empty()) {
            if let Some(typed) = line.strip_prefix("# TYPE ") {
                let (family, kind) = typed.split_once(' ').expect("# TYPE name type");
                assert!(is_metric_name(family), "bad family name in {line:?}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "unknown type in {line:?}"
                );
                let before = types.insert(family.to_owned(), kind.to_owned());
                assert!(before.is_none(), "{family} typed twice");
                continue;
            }
            if line.starts_with('#') {
                assert!(line.starts_with("# HELP "), "unknown comment {line:?}");
                continue;
            }
            let sample = parse_sample(line);
            let family = family_of(&sample.name, &types)
                .unwrap_or_else(|| panic!("{line:?} belongs to no family typed before it"));
            if types[family] == "histogram" && sample.name.ends_with("_bucket") {
                assert!(sample.labels.contains_key("le"), "a bucket without le");
            }
            samples.push(sample);
        }
        Exposition { types, samples }
    }

    /// The value of the series `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }

    /// The value of `name{transport="..."}`, which must be served.
    fn of(&self, name: &str, transport: &str) -> f64 {
        self.value(name, &[("transport", transport)])
            .unwrap_or_else(|| panic!("no {name}{{transport={transport:?}}}"))
    }

    /// The value of the unlabelled series `name`, which must be served.
    fn single(&self, name: &str) -> f64 {
        self.value(name, &[]).unwrap_or_else(|| panic!("no {name}"))
    }

    /// Every sample of `name` whatever its labels, as `(labels, value)`.
    fn series(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (&s.labels, s.value))
            .collect()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The typed family a sample name belongs to: its own name, or for a
/// histogram its name less `_bucket`, `_sum` or `_count`.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        (types.get(family)? == "histogram").then_some(family)
    })
}

/// `name{label="value",...} number`, label values with `\\`, `\"` and
/// `\n` escaped.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "bad name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inside
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_metric_name(key), "bad label name in {line:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((at, '"')) => break at,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                        _ => panic!("bad escape in {line:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            labels.insert(key.to_owned(), value);
            inside = &after[end + 1..];
            inside = inside.strip_prefix(',').unwrap_or(inside);
        }
    }
    let number = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match number {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Scrapes `/metrics` and parses it.
async fn scrape(app: &TestApp) -> Exposition {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Exposition::parse(&response.text().await.unwrap())
}

/// Scrapes until `name{transport}` is `expected`, for at most [`PATIENCE`].
async fn until_open(app: &TestApp, transport: &str, expected: f64) {
    let name = "pushlab_transport_open_connections";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = scrape(app).await.of(name, transport);
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{transport={transport:?}}} stayed {now}, never {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const TRANSPORTS: [&str; 4] = ["poll", "longpoll", "sse", "ws"];

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Poll => "poll",
        Kind::LongPoll => "longpoll",
        Kind::Sse => "sse",
        Kind::Ws => "ws",
        Kind::Wt => "webtransport",
    }
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_with_no_redis_family_without_redis() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let metrics = scrape(&app).await;

    // Assert
    assert!(
        metrics
            .types
            .keys()
            .all(|family| family.starts_with("pushlab_")),
        "{:?}",
        metrics.types.keys()
    );
    let redis: Vec<_> = metrics
        .types
        .keys()
        .filter(|family| family.contains("redis"))
        .collect();
    assert!(redis.is_empty(), "{redis:?}");
    for transport in TRANSPORTS {
        assert_eq!(
            metrics.of("pushlab_transport_open_connections", transport),
            0.0
        );
    }
    assert_eq!(metrics.single("pushlab_rooms_open"), 1.0);
    assert_eq!(
        metrics.value("pushlab_room_log_head", &[("room", "lobby")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn what_readers_do_on_each_transport_moves_that_transports_counters() {
    // Arrange: a reader on every transport, and someone who talks.
    let app = spawn_app().await;
    let mut readers = Vec::new();
    for kind in ALL {
        readers.push(Reader::open(&app, kind, From::since(0)).await);
    }
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let said = 5;

    // Act
    let mut head = 0;
    for i in 0..said {
        head = app.say(session, &format!("m{i}")).await;
    }
    for reader in &mut readers {
        reader.read_through(head).await;
    }
    let metrics = scrape(&app).await;

    // Assert: every reader got the join and the messages.
    for kind in ALL {
        let t = label(kind);
        let events = metrics.of("pushlab_transport_events_delivered_total", t);
        assert!(events >= (said + 1) as f64, "{t}: {events} events");
        assert!(
            metrics.of("pushlab_transport_requests_total", t) >= 1.0,
            "{t}"
        );
        let payload = metrics.of("pushlab_transport_payload_sent_bytes_total", t);
        let sent = metrics.of("pushlab_transport_sent_bytes_total", t);
        assert!(payload > 0.0, "{t}");
        assert!(
            sent > payload,
            "{t}: {sent} on the wire, {payload} in bodies"
        );
        assert!(
            metrics.of("pushlab_transport_received_bytes_total", t) > 0.0,
            "{t}"
        );
    }
    assert_eq!(metrics.single("pushlab_sessions_online"), 1.0);
    assert_eq!(
        metrics.value("pushlab_room_log_head", &[("room", "lobby")]),
        Some(head as f64)
    );
    let register_and_sends = metrics.single("pushlab_other_requests_total");
    assert!(register_and_sends >= (said + 1) as f64);
}

#[tokio::test]
async fn a_ws_reader_sent_n_messages_shows_at_least_n_events_delivered_on_ws() {
    // Arrange
    let app = spawn_app().await;
    let mut reader = Reader::open(&app, Kind::Ws, From::since(0)).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let before = scrape(&app).await;

    // Act
    let mut head = 0;
    for i in 0..10 {
        head = app.say(session, &format!("m{i}")).await;
    }
    reader.read_through(head).await;
    let after = scrape(&app).await;

    // Assert
    let delivered = after.of("pushlab_transport_events_delivered_total", "ws")
        - before.of("pushlab_transport_events_delivered_total", "ws");
    assert!(delivered >= 10.0, "{delivered}");
    for other in ["poll", "longpoll", "sse"] {
        assert_eq!(
            after.of("pushlab_transport_events_delivered_total", other),
            0.0,
            "{other}"
        );
    }
}

#[tokio::test]
async fn a_held_stream_or_socket_shows_as_open_until_it_closes() {
    for kind in [Kind::Sse, Kind::Ws] {
        // Arrange
        let app = spawn_app().await;
        let t = label(kind);

        // Act and Assert
        let reader = Reader::open(&app, kind, From::since(0)).await;
        until_open(&app, t, 1.0).await;
        drop(reader);
        until_open(&app, t, 0.0).await;
    }
}

#[tokio::test]
async fn a_scrape_is_counted_as_other_traffic_and_never_as_a_transport() {
    // Arrange
    let app = spawn_app().await;
    let first = scrape(&app).await;

    // Act
    scrape(&app).await;
    let third = scrape(&app).await;

    // Assert
    for (name, kind) in &third.types {
        if !name.starts_with("pushlab_transport_") {
            continue;
        }
        assert!(kind == "gauge" || kind == "counter", "{name} is a {kind}");
        for (labels, value) in third.series(name) {
            assert_eq!(value, 0.0, "{name}{labels:?}");
        }
    }
    let scrapes =
        third.single("pushlab_other_requests_total") - first.single("pushlab_other_requests_total");
    assert_eq!(scrapes, 2.0);
    assert!(third.single("pushlab_other_sent_bytes_total") > 0.0);
}

#[tokio::test]
async fn a_full_node_still_answers_a_scrape_and_shows_what_fills_it() {
    // Arrange
    let app = spawn_app_with(|c| c.max_connections = 1).await;
    let held = app.get("/sse?since=0").await;
    assert_eq!(held.status(), 200);
    let refused = app.get("/poll").await;

    // Act
    let metrics = scrape(&app).await;

    // Assert
    assert_eq!(refused.status(), 503);
    assert_eq!(metrics.single("pushlab_connections_in_flight"), 1.0);
    assert_eq!(metrics.single("pushlab_connections_max"), 1.0);
    assert_eq!(metrics.of("pushlab_transport_open_connections", "sse"), 1.0);
}

#[tokio::test]
async fn the_bytes_the_logs_hold_grow_with_the_messages_and_show_their_bound() {
    // Arrange
    let app = spawn_app_with(|c| c.total_bytes = 64 << 20).await;
    let before = scrape(&app).await.single("pushlab_log_windows_bytes");

    // Act: 50 messages of 1,000 characters.
    app.fill("writer", 50, 1000, 4).await;
    let after = scrape(&app).await;

    // Assert
    let held = after.single("pushlab_log_windows_bytes");
    assert!(
        held - before >= 50_000.0,
        "the windows hold {held} bytes, {before} before"
    );
    assert_eq!(
        after.single("pushlab_log_windows_max_bytes"),
        (64u64 << 20) as f64
    );
}

#[tokio::test]
async fn metrics_take_only_get_and_refuse_other_methods_with_json() {
    let app = spawn_app().await;

    let refused = app.post_json("/metrics", &json!({})).await;

    assert_eq!(refused.status(), 405);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn a_polls_wire_bytes_are_counted_exactly_without_naming_a_client() {
    // Arrange
    let app = spawn_app().await;
    let request = "GET /poll?since=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

    // Act
    let answer = exchange(&app, request).await;
    let metrics = scrape(&app).await;

    // Assert
    assert_eq!(
        metrics.of("pushlab_transport_received_bytes_total", "poll"),
        request.len() as f64
    );
    assert_eq!(
        metrics.of("pushlab_transport_sent_bytes_total", "poll"),
        answer.len() as f64
    );
    assert_eq!(metrics.of("pushlab_transport_requests_total", "poll"), 1.0);
}

#[tokio::test]
async fn with_redis_round_trips_are_measured_and_failures_counted_once_redis_is_gone() {
    // Arrange: joining appends the join event through Redis.
    let mut redis = RedisServer::start();
    let app = spawn_app_with(|c| c.redis = Some(redis.url())).await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap();
    let before = scrape(&app).await;

    // Act
    redis.kill();
    let refused = app
        .send(session, &json!({"type": "message", "text": "not stored"}))
        .await;
    let after = scrape(&app).await;

    // Assert: Redis was called and timed before it went.
    assert!(before.single("pushlab_redis_calls_total") > 0.0);
    assert_eq!(
        before.types["pushlab_redis_round_trip_seconds"],
        "histogram"
    );
    let count = before.single("pushlab_redis_round_trip_seconds_count");
    assert!(count > 0.0);
    assert!(before.single("pushlab_redis_round_trip_seconds_sum") > 0.0);
    let mut buckets: Vec<(f64, f64)> = before
        .series("pushlab_redis_round_trip_seconds_bucket")
        .into_iter()
        .map(|(labels, value)| {
            let le = match labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                bound => bound.parse().unwrap(),
            };
            (le, value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
    // And the send it refused is counted as a failure.
    assert_eq!(refused.status(), 503);
    let errors = |metrics: &Exposition| metrics.single("pushlab_redis_errors_total");
    assert!(errors(&after) > errors(&before), "{}", errors(&after));
}
