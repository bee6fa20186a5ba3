//! Publish-to-deliver latency on each transport, and the round trip of
//! `POST /send`.
//!
//! The server runs in-process on port 0 (`pushlab::serve`, one worker); one
//! publisher and one subscriber are separate tasks on real loopback sockets.
//! Each iteration the publisher sends one chat message over its WebSocket and
//! the clock stops when the subscriber has parsed that message. Between
//! iterations, outside the timing, the bench pauses a millisecond so a
//! long-poll is held again before the next message, as it is at low rates.
//!
//! Short polling is measured at a fixed 50 ms interval; its expected latency
//! is half the interval (25 ms) plus one round trip.
//!
//! The clients are `pushlab-testkit`'s readers, the same ones the API tests
//! use.
//!
//! `cargo bench --bench transport_latency`

use std::net::TcpListener;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use futures::{SinkExt as _, StreamExt as _};
use pushlab_testkit::{From, Kind, Reader, WsStream};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The short-polling interval measured here.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a subscriber's long-poll asks to be held, in seconds.
const LONG_POLL_TIMEOUT_SECS: u32 = 25;

/// How each transport is named in the report.
fn name(transport: Kind) -> &'static str {
    match transport {
        Kind::Ws => "ws",
        Kind::Sse => "sse",
        Kind::LongPoll => "longpoll",
        Kind::Poll => "poll (every 50 ms; expect ~25 ms)",
        Kind::Wt => "webtransport",
    }
}

/// A server, a registered publisher on a WebSocket, and one subscriber
/// that reports each chat message's `id` and the moment it was parsed.
struct Rig {
    server: Option<pushlab::Server>,
    publisher: futures::stream::SplitSink<WsStream, Message>,
    delivered: mpsc::UnboundedReceiver<(u64, Instant)>,
    /// The subscriber's task, stopped before the server.
    subscriber: tokio::task::JoinHandle<()>,
    next_id: u64,
}

impl Rig {
    async fn start(transport: Kind) -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").expect("port 0 binds");
        let config = pushlab::Config {
            workers: Some(1),
            rate_limit: 0,
            ..pushlab::Config::default()
        };
        let server = pushlab::serve(listener, config).expect("the server starts");
        let addr = server.addr();

        let (publisher, welcome) = pushlab_testkit::ws_join(&addr, "publisher").await;
        let head = welcome["cursor"].as_u64().expect("a cursor");
        let (publisher, mut incoming) = publisher.into_ws().split();
        // The publisher receives the fan-out too; read and drop it.
        tokio::spawn(async move { while let Some(Ok(_)) = incoming.next().await {} });

        let (tx, delivered) = mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let subscriber = tokio::spawn(subscribe(transport, addr, head, tx, ready_tx));
        ready.await.expect("the subscriber is ready");
        Rig {
            server: Some(server),
            publisher,
            delivered,
            subscriber,
            next_id: 0,
        }
    }

    /// The untimed pause before the next message. A subscriber that polls
    /// answers right after a poll, so publishing at a fixed delay after it
    /// would always land at the same phase of the interval; the golden-ratio
    /// sequence spreads the phases evenly over the interval instead.
    fn pause(&self, transport: Kind) -> Duration {
        let pause = Duration::from_millis(1);
        match transport {
            Kind::Poll => {
                let phase = (self.next_id as f64 * 0.618_033_988_75).fract();
                pause + POLL_INTERVAL.mul_f64(phase)
            }
            _ => pause,
        }
    }

    /// Publishes one message and returns how long until it was delivered.
    async fn round(&mut self) -> Duration {
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({"type": "message", "text": "latency probe", "id": id.to_string()});
        let sent = Instant::now();
        self.publisher
            .send(Message::Text(frame.to_string()))
            .await
            .expect("the message is sent");
        loop {
            let (got, at) = self.delivered.recv().await.expect("the subscriber runs");
            if got == id {
                return at.duration_since(sent);
            }
        }
    }

    async fn stop(mut self) {
        // A reader panics when its server goes away; it is stopped first.
        self.subscriber.abort();
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// The chat message ids in one JSON event, if it is one of ours.
fn probe_id(event: &Value) -> Option<u64> {
    (event["type"] == "message").then_some(())?;
    event["id"].as_str()?.parse().ok()
}

/// Follows the log on `transport` from `since`, and reports each probe it
/// receives with the moment it was parsed.
async fn subscribe(
    transport: Kind,
    addr: std::net::SocketAddr,
    since: u64,
    delivered: mpsc::UnboundedSender<(u64, Instant)>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut reader = Reader::open(&addr, transport, From::since(since))
        .await
        .poll_every(POLL_INTERVAL)
        .long_poll_timeout(LONG_POLL_TIMEOUT_SECS);
    let _ = ready.send(());
    let mut reported = 0;
    loop {
        reader.receive_once().await;
        let at = Instant::now();
        for event in &reader.events[reported..] {
            if let Some(id) = probe_id(event) {
                let _ = delivered.send((id, at));
            }
        }
        reported = reader.events.len();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn publish_to_deliver(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("publish_to_deliver");
    group.sampling_mode(SamplingMode::Flat);
    for transport in [Kind::Ws, Kind::Sse, Kind::LongPoll, Kind::Poll] {
        if let Kind::Poll = transport {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(4));
        } else {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(2));
        }
        let rig = tokio::sync::Mutex::new(runtime.block_on(Rig::start(transport)));
        group.bench_function(BenchmarkId::from_parameter(name(transport)), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let rig = &rig;
                async move {
                    let mut rig = rig.lock().await;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // Untimed: lets a long-poll be held again, and
                        // publishes at a different phase of the poll
                        // interval each time.
                        tokio::time::sleep(rig.pause(transport)).await;
                        total += rig.round().await;
                    }
                    total
                }
            })
        });
        runtime.block_on(rig.into_inner().stop());
    }
    group.finish();
}

fn send_round_trip(c: &mut Criterion) {
    let runtime = runtime();
    let (server, session, http) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").expect("port 0 binds");
        let config = pushlab::Config {
            workers: Some(1),
            rate_limit: 0,
            ..pushlab::Config::default()
        };
        let server = pushlab::serve(listener, config).expect("the server starts");
        let http = reqwest::Client::new();
        let welcome: Value = http
            .post(format!("http://{}/register", server.addr()))
            .json(&json!({"name": "sender"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("a welcome");
        let session = welcome["session"].as_str().expect("a session").to_owned();
        (server, session, http)
    });
    let url = format!("http://{}/send?session={session}", server.addr());
    let body = json!({"type": "message", "text": "hello"});
    let mut group = c.benchmark_group("send");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("POST /send round trip (keep-alive)", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = http.post(&url).json(&body).send().await.expect("sent");
            assert!(response.status().is_success());
            response.bytes().await.expect("a body")
        })
    });
    group.finish();
    runtime.block_on(server.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = publish_to_deliver, send_round_trip
}
criterion_main!(benches);
