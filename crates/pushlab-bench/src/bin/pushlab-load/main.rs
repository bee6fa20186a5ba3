//! `pushlab-load`: an open-loop load generator for pushlab and its peers.
//!
//! N subscribers listen on one transport (or a mix) while publishers send
//! chat messages at a constant aggregate rate. Each message carries its
//! scheduled send time, and latency is counted from that schedule, so a
//! stall anywhere shows up instead of quietly lowering the send rate.
//!
//! ```text
//! pushlab-load rate   --url http://127.0.0.1:8080 --transport ws --subscribers 1 --rate 100 --duration 10
//! pushlab-load search --url http://127.0.0.1:8080 --transport ws --subscribers 1000
//! pushlab-load idle   --url http://127.0.0.1:8080 --transport longpoll --subscribers 10000 --server-pid PID
//! pushlab-load rate   --url https://127.0.0.1:8443 --transport sse-h2 --subscribers 1000
//! pushlab-load rate   --url http://127.0.0.1:8080 --transport wt-datagrams --events cursors
//! pushlab-load rate   --url http://127.0.0.1:8082 --publish-url http://127.0.0.1:8081 --server-pid A,B,REDIS
//! ```
//!
//! `--target floor` speaks to `pushlab-floor` (over `--transport ws` or
//! `--transport longpoll`), `--target socketio` to the socket.io 4 peer in
//! `crates/pushlab-bench/socketio` (engine.io v4 is spoken here, over
//! `--transport ws` or `--transport polling`).
//!
//! It reports deliveries per second, latency percentiles (HdrHistogram),
//! missing and duplicated messages (by pushlab seq and by payload id, per
//! subscriber), bytes on the wire per delivered event in both directions
//! (counted on its own sockets), and the CPU and memory of the server
//! (`--server-pid`, one process or several, such as pushlab nodes and their
//! Redis) and of itself. `--json` prints one JSON object instead.
//!
//! With `--publish-url` the publishers talk to another server than the
//! subscribers: another pushlab node on the same Redis, for cross-node
//! delivery.
//!
//! An `https://` URL makes every TCP connection TLS (rustls): `ws` is then
//! `wss:`, `sse` SSE over HTTPS/1.1, and `sse-h2` SSE over HTTP/2. `wt` and
//! `wt-datagrams` speak WebTransport to a server under `--webtransport`
//! (plain or HTTPS), pinning the certificate hash `GET /config` gives.
//! `--events cursors` makes the publishers send cursor moves instead of
//! chat messages, which `wt-datagrams` subscribers get as datagrams.
//!
//! # Layout
//!
//! - `net`: source addresses, counted sockets (plain or TLS), the fd limit.
//! - `tls`: the rustls client configurations, one per ALPN.
//! - `clients`: a subscriber per transport and peer, and the publishers.
//! - `wt`: the WebTransport subscriber.
//! - `engineio`: the engine.io v4 / socket.io v4 framing.
//! - `http1`: a lean HTTP/1.1 client and SSE splitter for the subscribers
//!   (and the one `/stats` call).
//! - `tally`: what each subscriber saw, and the latency histograms.
//! - `procstat`: CPU and RSS from `/proc`.

mod clients;
mod engineio;
mod http1;
mod net;
mod procstat;
mod tally;
mod tls;
mod wt;

/// jemalloc, as in the server: the subscribers allocate a message or two per
/// delivery, and the system allocator made that a visible share of the load
/// generator's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use clients::{Events, Kind, Peer, Ready, Share, Step};
use http1::Http1;
use net::{Sources, Wire, WireSnapshot};
use procstat::{Process, ServerSide};
use tally::{Clock, Seen, Tally};
use tls::Tls;

#[derive(Debug, Parser)]
#[command(
    name = "pushlab-load",
    about = "Open-loop fan-out load for pushlab, pushlab-floor and socket.io"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// One step at a fixed publish rate.
    Rate {
        #[command(flatten)]
        common: Common,
        /// Messages per second, over all publishers.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// The highest sustained publish rate: doubling, then bisecting.
    Search {
        #[command(flatten)]
        common: Common,
        /// The first rate tried, messages per second.
        #[arg(long, default_value_t = 16.0)]
        start: f64,
        /// Never try above this rate.
        #[arg(long, default_value_t = 16384.0)]
        max: f64,
        /// Seconds of publishing per step.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Bisection steps after the first failure.
        #[arg(long, default_value_t = 3)]
        bisect: u32,
        /// Seconds of a warm-up step at the start rate before the search,
        /// reported but not judged: caches, allocators and Node's JIT warm up.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// A step passes when p99 latency is at most this, in ms, and
        /// nothing is missing or duplicated.
        #[arg(long, default_value_t = 50.0)]
        p99_limit_ms: f64,
        /// A step that fails on latency alone (nothing missing, duplicated
        /// or disconnected) is run again this many times, and passes if any
        /// run passes: one garbage-collection pause or scheduling hiccup in
        /// five seconds should not decide a server's sustained rate. Every
        /// run is reported.
        #[arg(long, default_value_t = 1)]
        retries: u32,
    },
    /// Connects the subscribers, publishes nothing, and reports the
    /// server's resident memory per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Seconds to hold the connections before reading the RSS.
        #[arg(long, default_value_t = 3.0)]
        hold: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum TargetArg {
    Pushlab,
    Floor,
    Socketio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum TransportArg {
    /// WebSocket (`wss:` with an `https://` URL).
    Ws,
    /// SSE over HTTP/1.1 (over TLS with an `https://` URL).
    Sse,
    /// pushlab only: SSE over HTTP/2; needs an `https://` URL.
    SseH2,
    /// pushlab only: WebTransport, every event on the server's stream.
    Wt,
    /// pushlab only: WebTransport with cursor moves as datagrams.
    WtDatagrams,
    Longpoll,
    Poll,
    /// pushlab only: subscribers take ws, sse, longpoll and poll in turn.
    Mix,
    /// socket.io only: engine.io HTTP long-polling.
    Polling,
}

/// What the publishers send, as an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventsArg {
    /// Chat messages.
    Messages,
    /// Cursor moves (pushlab only).
    Cursors,
}

#[derive(Debug, Args)]
struct Common {
    /// The server: `http://HOST:PORT` (or `ws://`), or `https://HOST:PORT`
    /// to speak TLS on every TCP connection.
    #[arg(long)]
    url: String,
    /// The publishers' server, if not `--url`: another pushlab node on the
    /// same Redis, so every message crosses from one node to the other.
    #[arg(long)]
    publish_url: Option<String>,
    /// Which server speaks at `--url`.
    #[arg(long, value_enum, default_value_t = TargetArg::Pushlab)]
    target: TargetArg,
    /// The subscribers' transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Ws)]
    transport: TransportArg,
    /// What the publishers send: chat messages, or (pushlab only) cursor
    /// moves carrying the same index, whose latency counts from the same
    /// schedule.
    #[arg(long, value_enum, default_value_t = EventsArg::Messages)]
    events: EventsArg,
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Publishers share the rate between them, each on its own WebSocket.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// How often a short-poll subscriber asks, in ms.
    #[arg(long, default_value_t = 50)]
    poll_interval_ms: u64,
    /// pushlab `ws` only: each subscriber registers a session of its own
    /// (and gets the others' joins) before it counts as connected, as a chat
    /// client does, instead of only listening.
    #[arg(long)]
    register: bool,
    /// With `--register`: each subscriber's socket asks for its session's
    /// WebRTC signals (`/ws?signals=true`), as the page's WebRTC transport
    /// keeps one for its peers.
    #[arg(long)]
    signals: bool,
    /// The server's process id, to report its CPU and RSS. Several (comma
    /// separated, or the flag again) make one server side, whose CPU and RSS
    /// are their sums: pushlab nodes and the Redis they share, say.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Connect from 127.0.0.1 up to 127.0.0.N in turn.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// At most this many subscribers connect at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// How long to wait after publishing for late deliveries, in seconds.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Tokio worker threads; 1 runs a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

impl Common {
    /// The subscribers' server, from `--url`.
    fn server(&self) -> anyhow::Result<SocketAddr> {
        address("--url", &self.url)
    }

    /// The publishers' server: `--publish-url`, or else `--url`.
    fn publish_server(&self) -> anyhow::Result<SocketAddr> {
        match &self.publish_url {
            Some(url) => address("--publish-url", url),
            None => self.server(),
        }
    }

    /// Whether the server speaks HTTPS: an `https://` or `wss://` URL.
    fn tls(&self) -> bool {
        let scheme = self.url.split_once("://").map(|(scheme, _)| scheme);
        matches!(scheme, Some("https" | "wss"))
    }

    /// The transport's name, as given on the command line.
    fn transport_name(&self) -> String {
        self.transport
            .to_possible_value()
            .map_or_else(String::new, |value| value.get_name().to_string())
    }

    fn events(&self) -> Events {
        match self.events {
            EventsArg::Messages => Events::Messages,
            EventsArg::Cursors => Events::Cursors,
        }
    }

    fn peer(&self) -> Peer {
        match self.target {
            TargetArg::Pushlab => Peer::Pushlab,
            TargetArg::Floor => Peer::Floor,
            TargetArg::Socketio => Peer::Socketio,
        }
    }

    /// The kind of the `index`th subscriber.
    fn kind(&self, index: usize) -> anyhow::Result<Kind> {
        use TargetArg as T;
        use TransportArg as X;
        if self.register && (self.target, self.transport) != (T::Pushlab, X::Ws) {
            bail!("--register is for --target pushlab --transport ws");
        }
        if self.signals && !self.register {
            bail!("--signals is for --register");
        }
        if self.events == EventsArg::Cursors && self.target != T::Pushlab {
            bail!("--events cursors is for --target pushlab");
        }
        if self.transport == X::SseH2 && !self.tls() {
            bail!("--transport sse-h2 needs an https:// --url");
        }
        Ok(match (self.target, self.transport) {
            (T::Pushlab, X::Ws) if self.signals => Kind::WsSignals,
            (T::Pushlab, X::Ws) if self.register => Kind::WsRegistered,
            (T::Pushlab, X::Ws) => Kind::Ws,
            (T::Pushlab, X::Sse) => Kind::Sse,
            (T::Pushlab, X::SseH2) => Kind::SseH2,
            (T::Pushlab, X::Wt) => Kind::Wt,
            (T::Pushlab, X::WtDatagrams) => Kind::WtDatagrams,
            (T::Pushlab, X::Longpoll) => Kind::Longpoll,
            (T::Pushlab, X::Poll) => Kind::Poll,
            (T::Pushlab, X::Mix) => [Kind::Ws, Kind::Sse, Kind::Longpoll, Kind::Poll][index % 4],
            (T::Floor, X::Ws) => Kind::FloorWs,
            (T::Floor, X::Longpoll) => Kind::FloorLongpoll,
            (T::Socketio, X::Ws) => Kind::SocketioWs,
            (T::Socketio, X::Polling) => Kind::SocketioPolling,
            (target, transport) => bail!("{target:?} does not serve {transport:?}"),
        })
    }
}

/// The address in `url` (`http://IP:PORT`, `ws://IP:PORT/...`), given as `flag`.
fn address(flag: &str, url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or(rest);
    host.parse()
        .with_context(|| format!("{flag} {url} is not http://IP:PORT"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let common = match &cli.mode {
        Mode::Rate { common, .. } | Mode::Search { common, .. } | Mode::Idle { common, .. } => {
            common
        }
    };
    common.kind(0)?;
    if let Mode::Rate { rate, duration, .. } = &cli.mode {
        // A cursor move carries its index in `x`, over 2^20.
        ensure!(
            common.events == EventsArg::Messages || rate * duration < clients::CURSOR_INDEX_SCALE,
            "--events cursors sends at most 2^20 messages a step"
        );
    }
    let runtime = if common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()?
    };
    let fd_limit = net::raise_fd_limit().context("raising the open-file limit")?;
    if common.subscribers + 64 > fd_limit as usize {
        bail!(
            "{} subscribers need more than the open-file limit of {fd_limit}",
            common.subscribers
        );
    }
    runtime.block_on(run(cli.mode))
}

async fn run(mode: Mode) -> anyhow::Result<()> {
    let clock = Clock::new();
    match mode {
        Mode::Rate {
            common,
            rate,
            duration,
        } => {
            let result = step(&common, clock, 1, rate, duration).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print_step(&result);
            }
        }
        Mode::Search {
            common,
            start,
            max,
            duration,
            bisect,
            warmup,
            p99_limit_ms,
            retries,
        } => {
            let result = search(
                &common,
                clock,
                SearchPlan {
                    start,
                    max,
                    duration,
                    bisect,
                    warmup,
                    p99_limit_ms,
                    retries,
                },
            )
            .await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "highest sustained rate: {:.0} msg/s ({} deliveries/s); first failure at {}",
                    result.sustained_rate,
                    result
                        .sustained
                        .as_ref()
                        .map_or(0.0, |s| s.deliveries_per_sec)
                        .round(),
                    result
                        .first_failure
                        .map_or("none".into(), |r| format!("{r:.0} msg/s")),
                );
            }
        }
        Mode::Idle { common, hold } => {
            let result = idle(&common, clock, hold).await?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "{} idle {:?} connections: server RSS {} → {} KiB, {:.1} KiB per connection",
                    result.connected,
                    common.transport,
                    result.rss_before_kib,
                    result.rss_after_kib,
                    result.kib_per_connection
                );
            }
        }
    }
    Ok(())
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Percentiles {
    count: u64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Percentiles {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Everything measured in one step.
#[derive(Debug, Clone, Serialize)]
struct StepResult {
    target: Peer,
    transport: String,
    /// Every TCP connection spoke TLS.
    tls: bool,
    /// What the publishers sent.
    events: Events,
    rate: f64,
    duration_secs: f64,
    subscribers: usize,
    connected: usize,
    publishers: usize,
    poll_interval_ms: Option<u64>,
    /// Messages the publishers sent.
    published: u64,
    /// The latest any message left after its scheduled time, in ms.
    publisher_worst_lateness_ms: f64,
    /// First copies delivered, over all subscribers.
    deliveries: u64,
    deliveries_per_sec: f64,
    /// Latency from scheduled send to delivery.
    latency: Percentiles,
    /// Short polling only: the round trip of each poll.
    poll_rtt: Option<Percentiles>,
    /// Messages some subscriber never got (by payload id), summed over subscribers.
    missing: u64,
    /// A few indices one subscriber missed, to tell lost from late.
    missing_examples: Vec<u64>,
    /// Messages some subscriber got twice (by payload id).
    duplicated: u64,
    /// pushlab: seqs skipped (missing) and repeated, summed over subscribers.
    missing_seqs: u64,
    duplicated_seqs: u64,
    gaps: u64,
    stale: u64,
    /// Subscribers that stopped during the step, and why (first few).
    failures: Vec<String>,
    failed: usize,
    /// Every distinct reason a subscriber stopped, before or after it was
    /// ready, with how many stopped for it; most frequent first.
    errors: Vec<ErrorCount>,
    /// Subscriber sockets, per delivered message.
    wire_received_per_delivery: f64,
    wire_sent_per_delivery: f64,
    requests_per_delivery: f64,
    payload_per_delivery: f64,
    /// WebTransport only: QUIC DATAGRAM frames the subscribers' connections
    /// received in the window; below the deliveries of a datagram run, the
    /// rest were lost before the client.
    quic_datagrams_received: u64,
    /// Publisher sockets, per published message.
    publisher_sent_per_message: f64,
    /// The publishers talked to `--publish-url`, another server than the
    /// subscribers'.
    publish_elsewhere: bool,
    /// Summed over every `--server-pid` process.
    server_cpu_percent: Option<f64>,
    server_rss_kib: Option<u64>,
    /// Each `--server-pid` process on its own.
    server_processes: Vec<ServerProcess>,
    loadgen_cpu_percent: Option<f64>,
    /// The step met the search criterion (set by the search).
    passed: Option<bool>,
}

/// How many subscribers stopped for one reason.
#[derive(Debug, Clone, Serialize)]
struct ErrorCount {
    error: String,
    subscribers: usize,
}

/// The reasons `seen` record for subscribers that stopped, counted.
fn count_errors(seen: &[Arc<Mutex<Seen>>]) -> Vec<ErrorCount> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for seen in seen {
        if let Some(why) = &seen.lock().failure {
            *counts.entry(why.clone()).or_default() += 1;
        }
    }
    let mut errors: Vec<_> = counts
        .into_iter()
        .map(|(error, subscribers)| ErrorCount { error, subscribers })
        .collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.subscribers));
    errors
}

/// One process of the server side, over the publishing window.
#[derive(Debug, Clone, Serialize)]
struct ServerProcess {
    pid: u32,
    /// `pushlab`, `redis-server`, ...
    command: Option<String>,
    cpu_percent: Option<f64>,
    rss_kib: Option<u64>,
}

/// Connects `subscribers`, and waits until all are ready or failed.
/// Runs a publisher on a thread of its own, with its own runtime and a
/// higher priority than the subscribers' thread (see
/// [`raise_thread_priority`]). Latency counts from each
/// message's scheduled time, so a publisher that waited behind a thousand
/// subscribers' reads on the same thread would charge the load generator's
/// own delay to the server.
async fn on_publisher_thread<F>(publisher: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            raise_thread_priority();
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("a runtime for a publisher")
                .and_then(|runtime| runtime.block_on(publisher));
            let _ = done_tx.send(result);
        })
        .context("starting a publisher thread")?;
    done_rx.await.context("a publisher thread panicked")?
}

/// Gives the calling thread precedence over the subscribers' thread: one
/// real-time priority step up if the process runs under SCHED_RR or
/// SCHED_FIFO, otherwise a nice value 5 lower (which needs root or
/// CAP_SYS_NICE; without it the thread keeps its priority).
fn raise_thread_priority() {
    // SAFETY: plain libc calls on the calling thread with a valid, owned
    // sched_param; a failure only leaves the priority as it was.
    unsafe {
        let thread = libc::pthread_self();
        let mut policy = 0;
        let mut param: libc::sched_param = std::mem::zeroed();
        if libc::pthread_getschedparam(thread, &mut policy, &mut param) != 0 {
            return;
        }
        if policy == libc::SCHED_RR || policy == libc::SCHED_FIFO {
            param.sched_priority =
                (param.sched_priority + 1).min(libc::sched_get_priority_max(policy));
            libc::pthread_setschedparam(thread, policy, &param);
        } else {
            // On Linux a nice value belongs to a thread, named by its tid.
            let tid = libc::gettid() as libc::id_t;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, nice - 5);
        }
    }
}

struct Crowd {
    tasks: JoinSet<()>,
    seen: Vec<Arc<Mutex<Seen>>>,
    connected: usize,
    failures: Vec<String>,
}

async fn connect_crowd(common: &Common, step: &Arc<Step>, count: u64) -> anyhow::Result<Crowd> {
    let mut tasks = JoinSet::new();
    let mut seen = Vec::with_capacity(common.subscribers);
    let mut waiting = Vec::with_capacity(common.subscribers);
    let gate = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    for index in 0..common.subscribers {
        let mine = Arc::new(Mutex::new(Seen::new(count)));
        seen.push(mine.clone());
        let (ready, fired) = Ready::new();
        let kind = common.kind(index)?;
        let (step, gate) = (step.clone(), gate.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            // The gate is never closed.
            let permit = gate.acquire_owned().await.expect("the gate stays open");
            let subscriber = clients::subscribe(step, kind, index, mine, ready);
            tokio::pin!(subscriber);
            tokio::select! {
                _ = &mut subscriber => { drop(permit); return; }
                _ = done_rx => {}
            }
            drop(permit);
            subscriber.await;
        });
        waiting.push((fired, done_tx));
    }
    let mut connected = 0;
    let mut failures = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for (index, (fired, done)) in waiting.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, fired).await {
            Ok(Ok(())) => connected += 1,
            _ => {
                if let Some(why) = seen[index].lock().failure.clone() {
                    if failures.len() < 5 {
                        failures.push(why);
                    }
                }
            }
        }
        // Lets the next subscriber through the gate.
        let _ = done.send(());
    }
    Ok(Crowd {
        tasks,
        seen,
        connected,
        failures,
    })
}

/// pushlab's `GET /stats`, on a connection of its own.
async fn stats(server: SocketAddr, tls: Option<&Tls>) -> anyhow::Result<serde_json::Value> {
    get_json(server, tls, "/stats").await
}

/// A `GET` of pushlab's JSON at `path`, on a connection of its own.
async fn get_json(
    server: SocketAddr,
    tls: Option<&Tls>,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let source = Sources { count: 1 }.pick(0);
    let tls = tls.map(|tls| (tls, tls::Alpn::Http1));
    let stream = net::connect_over(server, source, Default::default(), tls).await?;
    let mut http = Http1::new(stream, server.to_string());
    let (status, body) = http.send("GET", path, "").await?;
    ensure!(status == 200, "GET {path} answered {status}");
    Ok(serde_json::from_slice(&body)?)
}

async fn head(common: &Common, server: SocketAddr, tls: Option<&Tls>) -> anyhow::Result<u64> {
    if common.target != TargetArg::Pushlab {
        return Ok(0);
    }
    stats(server, tls).await?["head"]
        .as_u64()
        .context("/stats has a head")
}

/// The SHA-256 of the certificate WebTransport serves, from `GET /config`.
async fn webtransport_hash(server: SocketAddr, tls: Option<&Tls>) -> anyhow::Result<[u8; 32]> {
    let config = get_json(server, tls, "/config").await?;
    let hex = config["webtransport"]["certificate_hash"]
        .as_str()
        .context("GET /config gives no webtransport.certificate_hash: is the server under --webtransport, with its own certificate?")?;
    tls::parse_sha256_hex(hex)
}

/// What every client of a step shares, for `tally`.
async fn new_step(common: &Common, tally: Arc<Tally>) -> anyhow::Result<Arc<Step>> {
    let server = common.server()?;
    let tls = common.tls().then(Tls::new).transpose()?;
    let wt_hash = match common.transport {
        TransportArg::Wt | TransportArg::WtDatagrams => {
            Some(webtransport_hash(server, tls.as_ref()).await?)
        }
        _ => None,
    };
    Ok(Arc::new(Step {
        server,
        publish_server: common.publish_server()?,
        sources: Sources {
            count: common.sources,
        },
        wire: Arc::new(Wire::default()),
        publisher_wire: Arc::new(Wire::default()),
        tally,
        since: head(common, server, tls.as_ref()).await?,
        poll_interval: Duration::from_millis(common.poll_interval_ms),
        tls,
        wt_hash,
        events: common.events(),
    }))
}

/// Waits until the server has been nearly idle for a quarter second (at
/// most 15 s), so one step's backlog does not slow the next.
async fn settle(server: &ServerSide) {
    if server.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let before = server.cpu();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(busy) = procstat::total(server.cpu().percents_since(&before)) else {
            return;
        };
        if busy < 5.0 {
            return;
        }
    }
}

async fn step(
    common: &Common,
    clock: Clock,
    number: u32,
    rate: f64,
    duration: f64,
) -> anyhow::Result<StepResult> {
    let server_addr = common.server()?;
    let server = ServerSide::new(&common.server_pid);
    let count = (rate * duration).round().max(1.0) as u64;
    let tally = Arc::new(Tally::new(clock, number, count));
    let step = new_step(common, tally.clone()).await?;
    let mut crowd = connect_crowd(common, &step, count).await?;

    let (start_tx, start_rx) = watch::channel(None);
    let (close_tx, close_rx) = watch::channel(false);
    let mut publishers = JoinSet::new();
    let mut publishers_ready = Vec::new();
    let mut reports = Vec::new();
    for index in 0..common.publishers.max(1) {
        let (ready, fired) = Ready::new();
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let share = Share {
            index,
            of: common.publishers.max(1),
            rate,
        };
        let cues = clients::Cues {
            start: start_rx.clone(),
            close: close_rx.clone(),
        };
        publishers.spawn(on_publisher_thread(clients::publish(
            step.clone(),
            common.peer(),
            share,
            ready,
            cues,
            sent_tx,
        )));
        publishers_ready.push(fired);
        reports.push(sent_rx);
    }
    for fired in publishers_ready {
        if fired.await.is_err() {
            // The publisher failed; its error comes out of the join below.
            break;
        }
    }
    // Let held requests reach the server and the connects settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(&server).await;

    let wire_before = step.wire.snapshot();
    let publisher_wire_before = step.publisher_wire.snapshot();
    let server_cpu_before = server.cpu();
    let own_cpu_before = Process::Myself.cpu();
    let t0 = Instant::now() + Duration::from_millis(20);
    tally.set_schedule(t0, Duration::from_secs_f64(1.0 / rate));
    start_tx.send_replace(Some(t0));

    let mut published = clients::Published::default();
    for report in reports {
        let Ok(report) = report.await else {
            // A publisher failed before it finished: report why.
            while let Some(joined) = publishers.join_next().await {
                joined.context("a publisher panicked")??;
            }
            bail!("a publisher stopped early");
        };
        published.sent += report.sent;
        published.worst_lateness = published.worst_lateness.max(report.worst_lateness);
    }
    let server_cpu_each = server.cpu().percents_since(&server_cpu_before);
    let own_cpu = Process::Myself
        .cpu()
        .zip(own_cpu_before)
        .map(|(after, before)| after.percent_since(&before));
    let server_processes: Vec<ServerProcess> = server
        .pids()
        .iter()
        .zip(&server_cpu_each)
        .map(|(&pid, &cpu_percent)| ServerProcess {
            pid,
            command: Process::Pid(pid).command(),
            cpu_percent,
            rss_kib: Process::Pid(pid).rss_kib(),
        })
        .collect();

    let expected = count * crowd.connected as u64;
    let drain_until = Instant::now() + Duration::from_secs_f64(common.drain);
    while tally.unique.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wire: WireSnapshot = step.wire.snapshot() - wire_before;
    let publisher_wire = step.publisher_wire.snapshot() - publisher_wire_before;
    close_tx.send_replace(true);
    while let Some(joined) = publishers.join_next().await {
        joined.context("a publisher panicked")??;
    }
    // Read before the shutdown: an aborted subscriber records nothing, so
    // what is there stopped by itself.
    let errors = count_errors(&crowd.seen);
    crowd.tasks.shutdown().await;

    let mut result = StepResult {
        target: common.peer(),
        transport: common.transport_name(),
        tls: common.tls(),
        events: common.events(),
        rate,
        duration_secs: duration,
        subscribers: common.subscribers,
        connected: crowd.connected,
        publishers: common.publishers.max(1),
        poll_interval_ms: matches!(common.transport, TransportArg::Poll | TransportArg::Mix)
            .then_some(common.poll_interval_ms),
        published: published.sent,
        publisher_worst_lateness_ms: published.worst_lateness.as_secs_f64() * 1000.0,
        deliveries: 0,
        deliveries_per_sec: 0.0,
        latency: Percentiles::of(&tally.latency.lock()),
        poll_rtt: None,
        missing: 0,
        missing_examples: Vec::new(),
        duplicated: 0,
        missing_seqs: 0,
        duplicated_seqs: 0,
        gaps: 0,
        stale: 0,
        failures: crowd.failures.clone(),
        failed: common.subscribers - crowd.connected,
        errors,
        wire_received_per_delivery: 0.0,
        wire_sent_per_delivery: 0.0,
        requests_per_delivery: 0.0,
        payload_per_delivery: 0.0,
        quic_datagrams_received: wire.datagrams,
        publisher_sent_per_message: publisher_wire.sent as f64 / published.sent.max(1) as f64,
        publish_elsewhere: common.publish_server()? != server_addr,
        server_cpu_percent: procstat::total(server_cpu_each),
        server_rss_kib: procstat::total(server_processes.iter().map(|p| p.rss_kib)),
        server_processes,
        loadgen_cpu_percent: own_cpu,
        passed: None,
    };
    {
        let poll_rtt = tally.poll_rtt.lock();
        if !poll_rtt.is_empty() {
            result.poll_rtt = Some(Percentiles::of(&poll_rtt));
        }
    }
    let mut payload = 0;
    for seen in &crowd.seen {
        let seen = seen.lock();
        result.deliveries += seen.unique;
        result.missing += seen.missing_ids(count);
        if result.missing_examples.is_empty() {
            result.missing_examples = seen.missing_examples(count, 5);
        }
        result.duplicated += seen.duplicate_ids;
        result.missing_seqs += seen.missing_seqs;
        result.duplicated_seqs += seen.duplicate_seqs;
        result.gaps += seen.gaps;
        result.stale += seen.stale;
        payload += seen.payload_bytes;
    }
    // Subscribers stopped by the shutdown above report that; only earlier
    // failures count, and those already show as missing messages.
    let delivered = result.deliveries.max(1) as f64;
    result.deliveries_per_sec = result.deliveries as f64 / duration;
    result.wire_received_per_delivery = wire.received as f64 / delivered;
    result.wire_sent_per_delivery = wire.sent as f64 / delivered;
    result.requests_per_delivery = wire.requests as f64 / delivered;
    result.payload_per_delivery = payload as f64 / delivered;
    settle(&server).await;
    Ok(result)
}

fn print_step(r: &StepResult) {
    let l = &r.latency;
    let cpu = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.0}%"));
    println!(
        "{:?}/{}{}{} {} subs ({} connected), {:.0} msg/s × {:.0} s: {} published, {} delivered ({:.0}/s)",
        r.target,
        r.transport,
        if r.tls { " over TLS" } else { "" },
        if r.events == Events::Cursors { ", cursor moves" } else { "" },
        r.subscribers,
        r.connected,
        r.rate,
        r.duration_secs,
        r.published,
        r.deliveries,
        r.deliveries_per_sec
    );
    println!(
        "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    if let Some(rtt) = &r.poll_rtt {
        println!(
            "  poll round trip ms: p50 {:.3}  p99 {:.3}",
            rtt.p50_ms, rtt.p99_ms
        );
    }
    println!(
        "  missing {} (seq {}), duplicated {} (seq {}), gaps {}, failed subscribers {}",
        r.missing, r.missing_seqs, r.duplicated, r.duplicated_seqs, r.gaps, r.failed
    );
    if !r.missing_examples.is_empty() {
        println!(
            "    missed message indices (one subscriber): {:?}",
            r.missing_examples
        );
    }
    for error in &r.errors {
        println!("    {} stopped: {}", error.subscribers, error.error);
    }
    println!(
        "  per delivery: {:.1} B in ({:.1} B payload), {:.1} B out, {:.3} requests; publisher {:.1} B out per message",
        r.wire_received_per_delivery,
        r.payload_per_delivery,
        r.wire_sent_per_delivery,
        r.requests_per_delivery,
        r.publisher_sent_per_message
    );
    println!(
        "  server CPU {}, RSS {} KiB; load generator CPU {}; publisher worst lateness {:.2} ms",
        cpu(r.server_cpu_percent),
        r.server_rss_kib.map_or("-".into(), |k| k.to_string()),
        cpu(r.loadgen_cpu_percent),
        r.publisher_worst_lateness_ms
    );
    if r.server_processes.len() > 1 {
        for p in &r.server_processes {
            println!(
                "    {} {}: CPU {}",
                p.command.as_deref().unwrap_or("?"),
                p.pid,
                cpu(p.cpu_percent)
            );
        }
    }
}

struct SearchPlan {
    start: f64,
    max: f64,
    duration: f64,
    bisect: u32,
    warmup: f64,
    p99_limit_ms: f64,
    retries: u32,
}

#[derive(Debug, Serialize)]
struct SearchResult {
    p99_limit_ms: f64,
    /// The highest rate that passed.
    sustained_rate: f64,
    sustained: Option<StepResult>,
    /// The lowest rate that failed.
    first_failure: Option<f64>,
    /// The warm-up step, not judged.
    warmup: Option<StepResult>,
    /// The load generator's CPU in the lowest failing step: near 100% means
    /// the client, not the server, was the limit.
    loadgen_cpu_at_failure: Option<f64>,
    server_cpu_at_failure: Option<f64>,
    steps: Vec<StepResult>,
}

async fn search(common: &Common, clock: Clock, plan: SearchPlan) -> anyhow::Result<SearchResult> {
    let mut steps = Vec::new();
    let mut best: Option<StepResult> = None;
    let mut fail: Option<StepResult> = None;
    let mut rate = plan.start;
    let mut number = 0;
    let warmup = if plan.warmup > 0.0 {
        number += 1;
        let result = step(common, clock, number, plan.start, plan.warmup).await?;
        eprintln!(
            "  warm-up at {:.0} msg/s: p50 {:.2} ms p99 {:.2} ms (not judged)",
            plan.start, result.latency.p50_ms, result.latency.p99_ms
        );
        Some(result)
    } else {
        None
    };
    // Runs a step at `rate`, again if it fails on latency alone, and
    // records every run.
    let mut judged = async |rate: f64,
                            steps: &mut Vec<StepResult>|
           -> anyhow::Result<(bool, StepResult)> {
        let mut tries = 0;
        loop {
            number += 1;
            let mut result = step(common, clock, number, rate, plan.duration).await?;
            let complete = result.connected == result.subscribers
                && result.missing == 0
                && result.duplicated == 0
                && result.missing_seqs == 0
                && result.duplicated_seqs == 0;
            let passed = complete && result.latency.p99_ms <= plan.p99_limit_ms;
            result.passed = Some(passed);
            eprintln!(
                "  {:>7.0} msg/s: p50 {:.2} ms p99 {:.2} ms, {:.0} deliveries/s, missing {}, dup {}, server CPU {:.0}%, load CPU {:.0}% → {}",
                result.rate,
                result.latency.p50_ms,
                result.latency.p99_ms,
                result.deliveries_per_sec,
                result.missing + result.missing_seqs,
                result.duplicated + result.duplicated_seqs,
                result.server_cpu_percent.unwrap_or(f64::NAN),
                result.loadgen_cpu_percent.unwrap_or(f64::NAN),
                if passed { "pass" } else { "FAIL" }
            );
            steps.push(result.clone());
            if passed || !complete || tries >= plan.retries {
                return Ok((passed, result));
            }
            tries += 1;
        }
    };
    // Doubling until something fails, halving if the first rate does.
    loop {
        let (passed, result) = judged(rate, &mut steps).await?;
        if passed {
            best = Some(result);
            if fail.is_some() || rate * 2.0 > plan.max {
                break;
            }
            rate *= 2.0;
        } else {
            fail = Some(result);
            if best.is_some() || rate / 2.0 < 1.0 {
                break;
            }
            rate /= 2.0;
        }
    }
    // Bisecting between the best pass and the lowest failure.
    if let (Some(_), Some(_)) = (&best, &fail) {
        for _ in 0..plan.bisect {
            let low = best.as_ref().map_or(0.0, |b| b.rate);
            let high = fail.as_ref().map_or(0.0, |f| f.rate);
            let mid = ((low + high) / 2.0).round();
            if mid <= low || mid >= high {
                break;
            }
            let (passed, result) = judged(mid, &mut steps).await?;
            if passed {
                best = Some(result);
            } else {
                fail = Some(result);
            }
        }
    }
    Ok(SearchResult {
        p99_limit_ms: plan.p99_limit_ms,
        sustained_rate: best.as_ref().map_or(0.0, |b| b.rate),
        first_failure: fail.as_ref().map(|f| f.rate),
        loadgen_cpu_at_failure: fail.as_ref().and_then(|f| f.loadgen_cpu_percent),
        server_cpu_at_failure: fail.as_ref().and_then(|f| f.server_cpu_percent),
        sustained: best,
        warmup,
        steps,
    })
}

#[derive(Debug, Serialize)]
struct IdleResult {
    target: Peer,
    transport: String,
    subscribers: usize,
    connected: usize,
    failures: Vec<String>,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_connection: f64,
    /// pushlab only: what `/stats` says is open on this transport.
    server_open: Option<u64>,
    loadgen_rss_kib: Option<u64>,
}

async fn idle(common: &Common, clock: Clock, hold: f64) -> anyhow::Result<IdleResult> {
    let server_addr = common.server()?;
    let server = ServerSide::new(&common.server_pid);
    if server.is_empty() {
        bail!("idle needs --server-pid to read the server's RSS");
    }
    let step = new_step(common, Arc::new(Tally::new(clock, 0, 1))).await?;
    settle(&server).await;
    let before = server.rss_kib().context("reading the server's RSS")?;
    let mut crowd = connect_crowd(common, &step, 1).await?;
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    settle(&server).await;
    let after = server.rss_kib().context("reading the server's RSS")?;
    let server_open = if common.target == TargetArg::Pushlab {
        // `/stats` counts by transport, whatever the HTTP version.
        let transport = match common.transport {
            TransportArg::SseH2 => "sse".to_string(),
            TransportArg::Wt | TransportArg::WtDatagrams => "webtransport".to_string(),
            _ => common.transport_name(),
        };
        stats(server_addr, step.tls.as_ref()).await?["transports"][transport]["open"].as_u64()
    } else {
        None
    };
    let loadgen_rss_kib = Process::Myself.rss_kib();
    crowd.tasks.shutdown().await;
    Ok(IdleResult {
        target: common.peer(),
        transport: common.transport_name(),
        subscribers: common.subscribers,
        connected: crowd.connected,
        failures: crowd.failures,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: (after as f64 - before as f64) / crowd.connected.max(1) as f64,
        server_open,
        loadgen_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(args: &[&str]) -> Common {
        let cli = Cli::try_parse_from(["pushlab-load", "rate"].iter().chain(args))
            .expect("the arguments parse");
        match cli.mode {
            Mode::Rate { common, .. } => common,
            _ => unreachable!("parsed as rate"),
        }
    }

    #[test]
    fn publishers_use_the_subscribers_server_unless_given_a_publish_url() {
        let same = common(&["--url", "http://127.0.0.1:8082"]);
        let other = common(&[
            "--url",
            "http://127.0.0.1:8082",
            "--publish-url",
            "ws://127.0.0.1:8081/",
        ]);

        assert_eq!(same.publish_server().unwrap(), same.server().unwrap());
        assert_eq!(
            other.publish_server().unwrap(),
            "127.0.0.1:8081".parse().unwrap()
        );
        assert_eq!(other.server().unwrap(), "127.0.0.1:8082".parse().unwrap());
    }

    #[test]
    fn a_publish_url_that_is_not_an_address_is_refused_by_its_flag_name() {
        let bad = common(&[
            "--url",
            "http://127.0.0.1:1",
            "--publish-url",
            "http://node-a",
        ]);

        let error = bad.publish_server().unwrap_err().to_string();

        assert!(error.starts_with("--publish-url http://node-a"), "{error}");
    }

    #[test]
    fn an_https_url_makes_every_connection_tls_and_names_the_same_address() {
        let secure = common(&["--url", "https://127.0.0.1:8443", "--transport", "sse-h2"]);
        let plain = common(&["--url", "http://127.0.0.1:8080"]);

        assert!(secure.tls());
        assert!(!plain.tls());
        assert_eq!(secure.server().unwrap(), "127.0.0.1:8443".parse().unwrap());
        assert_eq!(secure.kind(0).unwrap(), Kind::SseH2);
        assert_eq!(secure.transport_name(), "sse-h2");
    }

    #[test]
    fn sse_over_http2_without_tls_and_cursor_moves_to_a_peer_are_refused() {
        let plain_h2 = common(&["--url", "http://127.0.0.1:8080", "--transport", "sse-h2"]);
        let cursors_to_floor = common(&[
            "--url",
            "http://127.0.0.1:8080",
            "--target",
            "floor",
            "--events",
            "cursors",
        ]);

        let h2_error = plain_h2.kind(0).unwrap_err().to_string();
        let floor_error = cursors_to_floor.kind(0).unwrap_err().to_string();

        assert!(h2_error.contains("https://"), "{h2_error}");
        assert!(floor_error.contains("--events cursors"), "{floor_error}");
    }

    #[test]
    fn the_floor_serves_long_polls_and_ws_signals_need_a_registration() {
        let url = ["--url", "http://127.0.0.1:8080"];
        let floor = common(&[&url[..], &["--target", "floor", "--transport", "longpoll"]].concat());
        let signals = common(&[&url[..], &["--register", "--signals"]].concat());
        let unregistered = common(&[&url[..], &["--signals"]].concat());

        assert_eq!(floor.kind(0).unwrap(), Kind::FloorLongpoll);
        assert_eq!(signals.kind(0).unwrap(), Kind::WsSignals);
        let error = unregistered.kind(0).unwrap_err().to_string();
        assert!(error.contains("--register"), "{error}");
    }

    #[test]
    fn webtransport_subscribers_take_the_stream_or_datagrams_as_asked() {
        let stream = common(&["--url", "http://127.0.0.1:8080", "--transport", "wt"]);
        let datagrams = common(&[
            "--url",
            "http://127.0.0.1:8080",
            "--transport",
            "wt-datagrams",
            "--events",
            "cursors",
        ]);

        assert_eq!(stream.kind(3).unwrap(), Kind::Wt);
        assert_eq!(datagrams.kind(3).unwrap(), Kind::WtDatagrams);
        assert_eq!(datagrams.events(), Events::Cursors);
        assert_eq!(stream.events(), Events::Messages);
    }

    #[test]
    fn several_server_pids_make_one_server_side_in_either_spelling() {
        let listed = common(&["--url", "http://127.0.0.1:1", "--server-pid", "10,20,30"]);
        let repeated = common(&[
            "--url",
            "http://127.0.0.1:1",
            "--server-pid",
            "10",
            "--server-pid",
            "20,30",
        ]);

        assert_eq!(listed.server_pid, [10, 20, 30]);
        assert_eq!(repeated.server_pid, [10, 20, 30]);
        assert!(common(&["--url", "http://127.0.0.1:1"])
            .server_pid
            .is_empty());
    }
}
