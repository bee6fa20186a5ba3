//! The Redis store (`--redis`): every room's log lives in Redis, so several
//! pushlab nodes that name the same Redis serve the same logs, and a client
//! may send each request to any of them.
//!
//! It owns the keys of each room's log and sessions, the task that mirrors
//! each log into this process, and the one that takes the WebRTC signals
//! other nodes relay. It knows nothing of HTTP or the transports: it is an
//! [`EventLog`] like [`MemoryLog`] and the journal, and a [`Directory`] of
//! each room's sessions.
//!
//! # What lives in Redis
//!
//! Per room `NAME` (the braces make the name a hash tag, so a room's keys
//! share one slot should the Redis ever be a cluster):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `pushlab:room:{NAME}:epoch` | string | the log's [`Epoch`] |
//! | `pushlab:room:{NAME}:seq` | string | the last seq handed out |
//! | `pushlab:room:{NAME}:stream` | stream | the events: id `<seq>-0`, field `e` = the event's JSON; at most `--history` of them and `--room-bytes` of their JSON (the newest always), trimmed with `XTRIM MINID` as each is added |
//! | `pushlab:room:{NAME}:bytes` | string | the JSON bytes the stream holds, kept by the same scripts that add and trim |
//! | `pushlab:room:{NAME}:messages` | list | the last [`RECENT_MESSAGES`] chat messages, newest first |
//! | `pushlab:room:{NAME}:names` | hash | lower-cased name → session |
//! | `pushlab:room:{NAME}:sessions` | hash | session → name |
//! | `pushlab:room:{NAME}:leases` | sorted set | session, scored by the end of its lease (ms, Redis's clock) |
//! | `pushlab:room:{NAME}:buckets` | hash | session → its rate limit's `tokens since` |
//! | `pushlab:room:{NAME}:sent` | hash | session → the idempotency keys (`id`s) of its last [`SENT_IDS`] chat messages with their seqs, a JSON array `[id, seq, …]` |
//!
//! and `pushlab:session-rooms` (hash: session → room) for every room. Each
//! reap extends a room's keys to [`ROOM_KEPT_FOR`]: a closed room's stream
//! stays that long, and is bounded by `--room-bytes` like an open one's.
//!
//! # Sessions
//!
//! Every step of a session is one script, atomic in Redis: [`JOIN`] claims
//! the name and appends the `join`; [`APPEND`] checks the session's lease
//! and its rate limit and renews the lease; [`RENEW`] extends the leases of
//! the sessions a node uses; [`LEAVE`] and [`REAP`] remove a lease and
//! append the `leave` only if they removed it, so a session leaves once
//! whichever nodes end or reap it; [`LOOKUP`] finds a session for a node
//! that has not seen it. [`SIGNAL`] publishes a WebRTC signal to every node
//! on [`SIGNALS`] if its target is online.
//!
//! # Appends
//!
//! One Lua script ([`APPEND`]) checks the epoch, increments the seq, adds
//! the event to the stream and keeps the chat history, in one atomic step:
//! seqs stay dense and gap-free whichever node appends. A chat message whose
//! `id` its session sent before is not appended again: the script answers
//! with the seq it was stored as, whichever node stored it. Each room has one
//! writer task per node, and an append joins its queue when it is made: the
//! writer sends everything queued while its last call ran as one call, so a
//! busy room costs a round trip to Redis per group, not per event, and a
//! session's events are stored in the order it sent them. An append resolves
//! only once Redis has run the script, so no client is told of an event
//! that is not stored; then it waits (briefly) for this node's mirror to
//! hold the event, so a client reads its own writes on the node it wrote to.
//! When Redis cannot be reached, an append fails with
//! [`LogError::Unavailable`], which clients see as 503 `store_unavailable`.
//!
//! What a room's writer holds (queued, or in the call under way) is bounded
//! in bytes, per room and for the node ([`QueueLimits`]): while Redis is
//! slow or stopped, an append past either bound is refused at once with
//! [`LogError::Unavailable`], never buffered, so a stalled Redis costs the
//! node at most [`NODE_QUEUE_BYTES`] of appends, however many clients send.
//!
//! # Reads
//!
//! Each node mirrors each room it has open with one task: a blocking
//! `XREAD` on a connection of its own feeds an in-process [`MemoryLog`]
//! window, and wakes the node's waiters. Reads, waits and the history for
//! late joiners are served from that window and cost no Redis call: a
//! thousand long-polls held on a node cost one Redis read, not a thousand.
//!
//! # Epochs and lost data
//!
//! The epoch is created in Redis (by whichever node first opens the room)
//! and read from there, so every node reports the same one. If Redis loses
//! data (a restart without persistence, a flush), the epoch key is gone, or
//! the seq has gone back below what this node saw: the next node to notice
//! sets a new epoch atomically ([`SNAPSHOT`], [`APPEND`]), every node's
//! mirror restarts its window under it, and readers get a gap, never silent
//! loss. When Redis comes back with its data, each mirror goes on from the
//! last seq it had, so nothing is lost or delivered twice.
//!
//! # The client
//!
//! The `redis` crate (redis-rs) is the most used Redis client for Rust,
//! kept by the redis-rs organisation. Its [`ConnectionManager`] multiplexes
//! every append of the node over one connection and reconnects by itself,
//! and its [`Script`] runs Lua by SHA (`EVALSHA`, falling back to `EVAL`).
//! The 0.32 line keeps within pushlab's `rust-version`. All Redis I/O runs
//! on a small runtime of the store's own, so a room can be opened (which
//! waits for its snapshot) from any thread, as a journal is opened from disk.
//!
//! # Files
//!
//! - this module: [`RedisStore`], its connection and runtime, and its
//!   [`LogStore`] impl, which opens each room's log and directory;
//! - `scripts`: the Lua scripts and the names of each room's keys;
//! - `mirror`: [`RedisLog`], each room's in-process window of its log, the
//!   task that follows the stream into it, and the writer that groups appends;
//! - `directory`: [`RedisDirectory`], each room's sessions in Redis;
//! - `pubsub`: the WebRTC signals relayed between nodes on [`SIGNALS`];
//! - `stats`: [`RedisStats`], the round trips and failures `/metrics` serves.
//!
//! It implements the core's [`LogStore`], [`EventLog`] and [`Directory`],
//! and imports nothing above them: not the room registry, nor a room.
//!
//! [`APPEND`]: scripts::APPEND
//! [`JOIN`]: scripts::JOIN
//! [`LEAVE`]: scripts::LEAVE
//! [`REAP`]: scripts::REAP
//! [`RENEW`]: scripts::RENEW
//! [`LOOKUP`]: scripts::LOOKUP
//! [`SIGNAL`]: scripts::SIGNAL
//! [`SNAPSHOT`]: scripts::SNAPSHOT
//! [`RECENT_MESSAGES`]: crate::core::log::RECENT_MESSAGES
//! [`SENT_IDS`]: crate::core::directory::SENT_IDS
//! [`ROOM_KEPT_FOR`]: directory::ROOM_KEPT_FOR
//! [`EventLog`]: crate::core::log::EventLog
//! [`MemoryLog`]: crate::core::log::MemoryLog
//! [`Epoch`]: crate::core::log::Epoch
//! [`LogError::Unavailable`]: crate::core::log::LogError::Unavailable
//! [`Directory`]: crate::core::directory::Directory
//! [`Script`]: redis::Script

mod directory;
mod mirror;
mod pubsub;
mod scripts;
mod stats;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;

use crate::core::log::LogBudget;
use crate::core::log_store::{LogStore, OpenedLog, StoreMetrics};
use crate::core::names::RoomName;

pub use directory::RedisDirectory;
pub use mirror::RedisLog;
pub use pubsub::SIGNALS;
use pubsub::{follow_signals, SignalSinks};
use scripts::Scripts;
pub use stats::RedisStats;

/// The longest one Redis command may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection attempt to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long opening a room waits for its snapshot from Redis.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause before a mirror tries Redis again after a failure.
const RETRY: Duration = Duration::from_millis(200);

/// The most bytes of appends one room's writer holds on a node, queued or
/// being written: 4 MiB, some 2,000 of the largest chat messages.
pub const ROOM_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// The most bytes of appends every room's writer on a node holds together:
/// 64 MiB.
pub const NODE_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// How many bytes of appends the writers may hold while Redis has not
/// stored them (see "Appends" in the module docs). An append counts its
/// event's JSON and its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Per room, in bytes.
    pub room_bytes: usize,
    /// For every room of the node together, in bytes.
    pub node_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            room_bytes: ROOM_QUEUE_BYTES,
            node_bytes: NODE_QUEUE_BYTES,
        }
    }
}

/// Every room's log in one Redis. See the module docs.
pub struct RedisStore {
    shared: Arc<StoreShared>,
    /// The runtime the Redis I/O runs on; shut down with the store.
    runtime: Option<tokio::runtime::Runtime>,
}

struct StoreShared {
    /// Makes the mirrors' own connections.
    client: Client,
    /// One multiplexed, self-reconnecting connection for every append and
    /// snapshot of the node.
    manager: ConnectionManager,
    /// Where every Redis call runs.
    runtime: tokio::runtime::Handle,
    /// Events each log keeps, in Redis and in each node's window.
    history: usize,
    /// Bytes each log keeps, in Redis (of JSON) and in each node's window
    /// (by [`crate::core::log::Event::cost`]), and the node's total its
    /// windows share.
    budget: LogBudget,
    scripts: Scripts,
    stats: Arc<RedisStats>,
    /// Where each open room takes the WebRTC signals other nodes relay.
    signal_sinks: SignalSinks,
    /// How many bytes of appends the writers may hold.
    queue_limits: QueueLimits,
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://HOST:PORT/DB`), with no
    /// bound in bytes on the logs and the default [`QueueLimits`], as the
    /// tests that are not about bytes do. Fails if it cannot be reached now.
    #[cfg(test)]
    pub fn connect(url: &str, history: usize) -> io::Result<RedisStore> {
        Self::connect_bounded(url, history, LogBudget::unlimited(), QueueLimits::default())
    }

    /// Connects to the Redis at `url`, each room's log keeping at most
    /// `history` events and `budget`'s bytes, and the writers' queues
    /// bounded by `queue_limits`. Fails if it cannot be reached now.
    pub fn connect_bounded(
        url: &str,
        history: usize,
        budget: LogBudget,
        queue_limits: QueueLimits,
    ) -> io::Result<RedisStore> {
        let client = Client::open(url).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad Redis URL {url:?}: {err}"),
            )
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pushlab-redis")
            .enable_all()
            .build()?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(REDIS_TIMEOUT)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(500);
        let connecting = client.clone();
        let connected = wait_on(
            runtime.handle(),
            async move {
                connecting
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|err| unreachable_redis(&err))
            },
            OPEN_TIMEOUT,
        );
        let manager = match connected {
            Ok(Ok(manager)) => manager,
            Ok(Err(err)) | Err(err) => {
                // Dropped here, a runtime would block, which panics when
                // this is called from async code, as `pushlab` does.
                runtime.shutdown_background();
                return Err(err);
            }
        };
        let signal_sinks = SignalSinks::default();
        runtime.spawn(follow_signals(client.clone(), signal_sinks.clone()));
        Ok(RedisStore {
            shared: Arc::new(StoreShared {
                client,
                manager,
                runtime: runtime.handle().clone(),
                history: history.max(1),
                budget,
                scripts: Scripts::load(),
                stats: Arc::default(),
                signal_sinks,
                queue_limits,
            }),
            runtime: Some(runtime),
        })
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another
        // runtime; this does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl LogStore for RedisStore {
    fn budget(&self) -> &LogBudget {
        &self.shared.budget
    }

    /// The room's log, and its sessions in Redis beside it.
    fn open(&self, room: &RoomName) -> io::Result<OpenedLog> {
        let log = RedisLog::open(self.shared.clone(), room)?;
        let directory = RedisDirectory {
            mirror: log.mirror.clone(),
            online: Arc::default(),
        };
        Ok(OpenedLog {
            log: Arc::new(log),
            directory: Arc::new(directory),
        })
    }

    /// Rooms live in Redis and open on first use, on whichever node.
    fn kept(&self) -> io::Result<Vec<RoomName>> {
        Ok(Vec::new())
    }

    /// Its Redis round trips and failures.
    fn metrics(&self) -> Option<Arc<dyn StoreMetrics>> {
        Some(self.shared.stats.clone())
    }
}

fn unreachable_redis(err: &redis::RedisError) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("Redis is unreachable: {err}"),
    )
}

/// Runs `task` on `runtime` and waits for it on this thread, for at most
/// `timeout`. Only for opening, which may block like a journal's disk reads.
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    task: impl std::future::Future<Output = T> + Send + 'static,
    timeout: Duration,
) -> io::Result<T> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = done.send(task.await);
    });
    result
        .recv_timeout(timeout)
        .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "Redis did not answer in time"))
}

impl StoreShared {
    /// The prelude's limits argument: `<events> <bytes>`, what each room's
    /// stream keeps.
    fn limits(&self) -> String {
        format!("{} {}", self.history, self.budget.room_bytes)
    }
}

/// `duration` in whole milliseconds, at least 1.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What the tests of every part of the Redis store share.
#[cfg(test)]
mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use super::RedisStore;
    use crate::core::directory::Directory;
    use crate::core::log::{Event, EventBody, EventLog, Seq};
    use crate::core::log_store::LogStore;
    use crate::core::names::{Name, RoomName};

    pub fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    pub fn say(text: &str) -> EventBody {
        EventBody::Message {
            text: text.into(),
            id: None,
        }
    }

    pub fn lobby(store: &RedisStore) -> Arc<dyn EventLog> {
        store.open(&RoomName::lobby()).unwrap().log
    }

    /// Waits (bounded) until `log` holds `seq`: another node's append
    /// reaches this one through its mirror.
    pub async fn until_head(log: &Arc<dyn EventLog>, seq: Seq) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while log.head() < seq {
                log.wait_after(log.head()).await;
            }
        })
        .await
        .expect("the mirror caught up");
    }

    /// The lobby's log and directory on `store`, as one node opens them.
    pub fn lobby_shared(store: &RedisStore) -> (Arc<dyn EventLog>, Arc<dyn Directory>) {
        let opened = store.open(&RoomName::lobby()).unwrap();
        (opened.log, opened.directory)
    }

    /// Every event of `kind` in the log as `log` sees it, once it holds `seq`.
    pub async fn events_of(log: &Arc<dyn EventLog>, seq: Seq, kind: &str) -> Vec<Arc<Event>> {
        until_head(log, seq).await;
        log.read_since(0, None)
            .events
            .into_iter()
            .filter(|e| e.body.kind() == kind)
            .collect()
    }

    pub const LEASE: Duration = Duration::from_secs(30);
}
