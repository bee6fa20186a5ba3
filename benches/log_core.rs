//! The message log on its own, with no sockets: appending, reading since a
//! cursor, and waking N readers that wait for the next event.
//!
//! `cargo bench --bench log_core`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushlab::log::{EventBody, EventLog as _, MemoryLog};
use pushlab::protocol::Name;
use tokio::sync::Notify;

/// The window the server keeps by default (`--history`).
const HISTORY: usize = 10_000;

fn alice() -> Name {
    // A fixed, valid name.
    Name::parse("alice").expect("a valid name")
}

fn message(i: u64) -> EventBody {
    EventBody::Message {
        text: format!("message number {i}"),
        id: Some(format!("m{i}")),
    }
}

/// A log whose window is full, as on a server that has been up a while.
fn full_log() -> MemoryLog {
    let log = MemoryLog::new(HISTORY);
    for i in 0..HISTORY as u64 {
        log.append_now(alice(), message(i)).unwrap();
    }
    log
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/append_now");
    group.throughput(Throughput::Elements(1));
    let log = full_log();
    let name = alice();
    group.bench_function("message, window full", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            log.append_now(name.clone(), message(i))
        })
    });
    group.bench_function("mousemove, window full", |b| {
        b.iter(|| log.append_now(name.clone(), EventBody::Mousemove { x: 0.5, y: 0.25 }))
    });
    group.finish();
}

fn read_since(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/read_since");
    let log = full_log();
    let head = log.head();
    let epoch = log.epoch().as_str().to_owned();
    for behind in [0u64, 1, 10, 100, 1000] {
        group.throughput(Throughput::Elements(behind.max(1)));
        group.bench_with_input(
            BenchmarkId::new("events behind the head", behind),
            &behind,
            |b, &behind| b.iter(|| log.read_since(head - behind, Some(&epoch))),
        );
    }
    group.finish();
}

/// From one append to the moment the last of N waiting readers has woken.
///
/// Each reader is a task awaiting `wait_after(head)`, as a held long-poll or
/// an idle WebSocket does. On a one-thread runtime, so the figure is the cost
/// of the wake-ups themselves, not of cross-thread scheduling.
fn wake_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/wake_after_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for readers in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements(readers as u64));
        group.bench_with_input(
            BenchmarkId::new("waiting readers", readers),
            &readers,
            |b, &readers| {
                b.to_async(&runtime).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += wake_readers(readers).await;
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

async fn wake_readers(readers: usize) -> Duration {
    let log = MemoryLog::new(HISTORY);
    log.append_now(alice(), message(0)).unwrap();
    let head = log.head();
    let parked = Arc::new(AtomicUsize::new(0));
    let awake = Arc::new(AtomicUsize::new(0));
    let all_awake = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(readers);
    for _ in 0..readers {
        let waiting = log.wait_after(head);
        let (parked, awake, all_awake) = (parked.clone(), awake.clone(), all_awake.clone());
        tasks.push(tokio::spawn(async move {
            parked.fetch_add(1, Ordering::AcqRel);
            waiting.await;
            if awake.fetch_add(1, Ordering::AcqRel) + 1 == readers {
                all_awake.notify_one();
            }
        }));
    }
    // Let every reader reach its await before the clock starts.
    while parked.load(Ordering::Acquire) < readers {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    log.append_now(alice(), message(1)).unwrap();
    all_awake.notified().await;
    let elapsed = started.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    elapsed
}

/// Reading 100 events and building the poll answer from them, as
/// `GET /poll` and `GET /longpoll` do.
fn read_and_answer(c: &mut Criterion) {
    let log: std::sync::Arc<dyn pushlab::EventLog> = std::sync::Arc::new(full_log());
    let head = log.head();
    c.bench_function("log/read_since 100 behind, as a poll answer", |b| {
        b.iter(|| {
            let from = pushlab::log::Cursor {
                seq: head - 100,
                epoch: None,
            };
            let mut reader = pushlab::log::Reader::new(log.clone(), from);
            let read = reader.next(usize::MAX);
            pushlab::batch_body(&read, reader.cursor(), &reader.epoch())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = append, read_since, wake_up, read_and_answer
}
criterion_main!(benches);
