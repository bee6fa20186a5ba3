//! The cost of rooms: one room with 1000 subscribers against 100 rooms with
//! 10 subscribers each, at the same number of deliveries.
//!
//! The server runs in-process on port 0 (`pushlab::serve`, one worker, no
//! rate or per-address limits). Every subscriber is a WebSocket reading its
//! room; every room has one registered publisher on a WebSocket of its own,
//! which receives its room's messages too. One round publishes one chat
//! message in every room at once: 1 message to 1000 + 1 readers, or 100
//! messages to 10 + 1 readers each. The clock stops when every reader has
//! parsed its message, and the time is divided by the deliveries in the
//! round (1001 or 1100), giving the cost of one delivery, appends and all.
//!
//! `cargo bench --bench rooms`

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use futures::{SinkExt as _, StreamExt as _};
use pushlab_testkit::Target;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// How many readers there are in all, whatever the layout.
const SUBSCRIBERS: usize = 1000;

/// One room of the server, as the test kit's clients address it.
struct InRoom {
    addr: SocketAddr,
    room: String,
}

impl Target for InRoom {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    fn room(&self) -> Option<String> {
        Some(self.room.clone())
    }
}

/// Chat messages parsed by every reader, and a wake-up when it changes.
#[derive(Default)]
struct Delivered {
    count: AtomicU64,
    changed: Notify,
}

impl Delivered {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    async fn reach(&self, total: u64) {
        loop {
            let changed = self.changed.notified();
            if self.count.load(Ordering::Relaxed) >= total {
                return;
            }
            changed.await;
        }
    }
}

/// Counts each chat message a socket receives until the socket ends.
fn count_messages(
    mut incoming: impl futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
    delivered: Arc<Delivered>,
) {
    tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            if let Message::Text(text) = message {
                if text.contains("\"type\":\"message\"") && text.contains("\"seq\"") {
                    delivered.add();
                }
            }
        }
    });
}

/// A server with `rooms` rooms of `SUBSCRIBERS / rooms` readers and one
/// publisher each.
struct Rig {
    server: Option<pushlab::Server>,
    publishers: Vec<futures::stream::SplitSink<pushlab_testkit::WsStream, Message>>,
    delivered: Arc<Delivered>,
    /// Deliveries one round makes: every reader and every publisher.
    per_round: u64,
    rounds: u64,
}

impl Rig {
    async fn start(rooms: usize) -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").expect("port 0 binds");
        let config = pushlab::Config {
            workers: Some(1),
            rate_limit: 0,
            ip_connections: 0,
            ip_sessions: 0,
            ip_registrations: 0,
            ip_rate_limit: 0,
            ip_rooms: 0,
            max_rooms: rooms + 10,
            ..pushlab::Config::default()
        };
        let server = pushlab::serve(listener, config).expect("the server starts");
        let addr = server.addr();
        let delivered = Arc::new(Delivered::default());
        let mut publishers = Vec::new();
        for room in 0..rooms {
            let target = InRoom {
                addr,
                room: format!("r{room}"),
            };
            let (publisher, _) = pushlab_testkit::ws_join(&target, "publisher").await;
            let (sink, incoming) = publisher.into_ws().split();
            count_messages(incoming, delivered.clone());
            publishers.push(sink);
            for _ in 0..SUBSCRIBERS / rooms {
                let url = format!("ws://{addr}/ws?room=r{room}&since=1");
                let (socket, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("a subscriber connects");
                let (_, incoming) = socket.split();
                count_messages(incoming, delivered.clone());
            }
        }
        Rig {
            server: Some(server),
            publishers,
            delivered,
            per_round: (SUBSCRIBERS + rooms) as u64,
            rounds: 0,
        }
    }

    /// Publishes one message in every room, and waits until every reader has it.
    async fn round(&mut self) -> Duration {
        let started = Instant::now();
        let frame = Message::Text(r#"{"type":"message","text":"rooms probe"}"#.into());
        for publisher in &mut self.publishers {
            publisher.feed(frame.clone()).await.expect("sent");
        }
        for publisher in &mut self.publishers {
            publisher.flush().await.expect("sent");
        }
        self.rounds += 1;
        self.delivered.reach(self.rounds * self.per_round).await;
        started.elapsed()
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn per_delivery(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("rooms/one delivery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for rooms in [1, 100] {
        let name = format!("{rooms} room(s) x {} readers", SUBSCRIBERS / rooms);
        let mut rig = runtime.block_on(Rig::start(rooms));
        // Every socket's buffers grown once before measuring.
        runtime.block_on(rig.round());
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        total += rig.round().await;
                    }
                    // Criterion's time per iteration is the time per delivery.
                    total / rig.per_round as u32
                })
            })
        });
        runtime.block_on(rig.stop());
    }
    group.finish();
}

criterion_group!(benches, per_delivery);
criterion_main!(benches);
