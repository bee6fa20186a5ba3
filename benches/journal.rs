//! Group commit in the durable journal: how many appends a second it makes
//! durable, one at a time and with many appenders waiting together.
//!
//! `cargo bench --bench journal`. Each append is written and `fdatasync`ed
//! before it resolves, so the figures depend on the disk under `$TMPDIR`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushlab::journal::{JournalLog, JournalOptions};
use pushlab::log::{EventBody, EventLog};
use pushlab::protocol::Name;

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("journal_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for concurrent in [1usize, 16, 256] {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(JournalLog::open(JournalOptions::new(dir.path(), 10_000)).unwrap());
        let name = Name::parse("bench").unwrap();
        group.throughput(Throughput::Elements(concurrent as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(concurrent),
            &concurrent,
            |b, &n| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let log = log.clone();
                    let name = name.clone();
                    async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let pending: Vec<_> = (0..n)
                                .map(|_| {
                                    log.append(
                                        name.clone(),
                                        EventBody::Mousemove { x: 0.5, y: 0.5 },
                                    )
                                })
                                .collect();
                            for append in pending {
                                append.await.unwrap();
                            }
                        }
                        started.elapsed()
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
