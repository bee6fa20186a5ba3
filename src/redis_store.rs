//! The Redis store (`--redis`): every room's log lives in Redis, so several
//! pushlab nodes that name the same Redis serve the same logs, and a client
//! may send each request to any of them.
//!
//! It owns the keys of each room's log and the task that mirrors it into
//! this process. It knows nothing of HTTP, presence or the transports: it is
//! an [`EventLog`] like [`MemoryLog`] and the journal.
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
//! | `pushlab:room:{NAME}:stream` | stream | the events: id `<seq>-0`, field `e` = the event's JSON, trimmed with `MAXLEN ~ --history` |
//! | `pushlab:room:{NAME}:messages` | list | the last [`RECENT_MESSAGES`] chat messages, newest first |
//!
//! # Appends
//!
//! One Lua script ([`APPEND`]) checks the epoch, increments the seq, adds
//! the event to the stream and keeps the chat history, in one atomic step:
//! seqs stay dense and gap-free whichever node appends. An append resolves
//! only once Redis has run the script, so no client is told of an event
//! that is not stored; then it waits (briefly) for this node's mirror to
//! hold the event, so a client reads its own writes on the node it wrote to.
//! When Redis cannot be reached, an append fails with
//! [`LogError::Unavailable`], which clients see as 503 `store_unavailable`.
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

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::log::{
    now_millis, Batch, Epoch, Event, EventBody, EventLog, LogError, MemoryLog, Seq, MAX_BATCH,
    RECENT_MESSAGES,
};
use crate::names::{Name, RoomName};
use crate::rooms::LogStore;

/// The longest one Redis command may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection attempt to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a mirror's `XREAD` blocks before it checks the epoch, in ms.
const BLOCK_MS: u64 = 2_000;
/// How long opening a room waits for its snapshot from Redis.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an append waits for the node's own mirror to hold the event
/// before it answers with the event as Redis returned it.
const MIRROR_WAIT: Duration = Duration::from_secs(2);
/// The pause before a mirror tries Redis again after a failure.
const RETRY: Duration = Duration::from_millis(200);

/// Appends one event. Keys: epoch, seq, stream, messages. Arguments: the
/// epoch the node reads under, a new epoch to set if Redis has none, the
/// event's JSON with `"seq":0`, `--history`, `1` for a chat message.
/// Returns `{seq, json}`, or `{0, epoch}` without appending when the epoch
/// is not the node's.
pub const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  return {0, ARGV[2]}
end
if epoch ~= ARGV[1] then
  return {0, epoch}
end
local seq = redis.call('INCR', KEYS[2])
local json = '{"seq":' .. seq .. string.sub(ARGV[3], 9)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'e', json)
if ARGV[5] == '1' then
  redis.call('LPUSH', KEYS[4], json)
  redis.call('LTRIM', KEYS[4], 0, 99)
end
return {seq, json}
"#;

/// Reads a room's log as it stands, making its epoch if it has none. Keys:
/// epoch, seq, stream, messages. Arguments: a new epoch, the epoch and head
/// the node last saw, how many events to return. If the seq has gone back
/// below the node's head under the same epoch, Redis lost data: the new
/// epoch replaces it. Returns `{epoch, seq, events newest first, messages
/// newest first}`.
pub const SNAPSHOT: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if (not epoch) or (epoch == ARGV[2] and seq < tonumber(ARGV[3])) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[4])
local events = {}
for i, entry in ipairs(entries) do
  events[i] = entry[2][2]
end
return {epoch, seq, events, redis.call('LRANGE', KEYS[4], 0, -1)}
"#;

/// The upper bounds of the round-trip histogram's buckets, in
/// microseconds: 100 µs to 2.5 s, past [`REDIS_TIMEOUT`].
pub const RTT_BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Redis round trips and failures, for `/metrics`.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Commands and scripts sent.
    pub calls: AtomicU64,
    /// Of those, how many failed (unreachable, timed out, refused).
    pub errors: AtomicU64,
    /// Their round-trip times added up, in microseconds.
    pub rtt_micros: AtomicU64,
    /// Round trips per bucket, not cumulative: `[i]` counts those longer
    /// than `RTT_BUCKETS_MICROS[i - 1]` and at most `RTT_BUCKETS_MICROS[i]`;
    /// the last, those longer than every bound.
    pub rtt_buckets: [AtomicU64; RTT_BUCKETS_MICROS.len() + 1],
}

impl RedisStats {
    fn record(&self, started: Instant, ok: bool) {
        self.observe(started.elapsed(), ok);
    }

    /// Counts one call that took `rtt` and failed unless `ok`.
    pub fn observe(&self, rtt: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.rtt_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = RTT_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.rtt_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
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
    append: Script,
    snapshot: Script,
    stats: Arc<RedisStats>,
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://HOST:PORT/DB`). Fails if it
    /// cannot be reached now.
    pub fn connect(url: &str, history: usize) -> io::Result<RedisStore> {
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
        let manager = wait_on(
            runtime.handle(),
            async move {
                connecting
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|err| unreachable_redis(&err))
            },
            OPEN_TIMEOUT,
        )??;
        Ok(RedisStore {
            shared: Arc::new(StoreShared {
                client,
                manager,
                runtime: runtime.handle().clone(),
                history: history.max(1),
                append: Script::new(APPEND),
                snapshot: Script::new(SNAPSHOT),
                stats: Arc::default(),
            }),
            runtime: Some(runtime),
        })
    }

    /// Its Redis round trips and failures.
    pub fn stats(&self) -> Arc<RedisStats> {
        self.shared.stats.clone()
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
    fn open(&self, room: &RoomName) -> io::Result<Arc<dyn EventLog>> {
        Ok(Arc::new(RedisLog::open(self.shared.clone(), room)?))
    }

    /// Rooms live in Redis and open on first use, on whichever node.
    fn kept(&self) -> io::Result<Vec<RoomName>> {
        Ok(Vec::new())
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

/// The names of one room's keys.
struct Keys {
    epoch: String,
    seq: String,
    stream: String,
    messages: String,
}

impl Keys {
    fn of(room: &RoomName) -> Keys {
        let key = |what: &str| format!("pushlab:room:{{{room}}}:{what}");
        Keys {
            epoch: key("epoch"),
            seq: key("seq"),
            stream: key("stream"),
            messages: key("messages"),
        }
    }
}

/// One room's log in Redis, as this node sees it.
pub struct RedisLog {
    mirror: Arc<Mirror>,
    /// Stops the mirror task when the room is closed on this node.
    _stop: DropGuard,
}

/// The in-process side of one room's log, shared by the [`RedisLog`] and
/// its mirror task.
struct Mirror {
    keys: Keys,
    store: Arc<StoreShared>,
    /// The window readers read. Replaced whole when the epoch changes, or
    /// when events were trimmed in Redis before this node read them.
    window: RwLock<MemoryLog>,
    /// `(generation, head)`: the head of the window, and how many times the
    /// window has restarted under a new epoch. Waiters watch it.
    head: watch::Sender<(u64, Seq)>,
    /// Asks the mirror task to read the log afresh (an append found another
    /// epoch in Redis).
    reload: Notify,
}

impl RedisLog {
    fn open(store: Arc<StoreShared>, room: &RoomName) -> io::Result<RedisLog> {
        let (head, _) = watch::channel((0, 0));
        let mirror = Arc::new(Mirror {
            keys: Keys::of(room),
            // A placeholder until the snapshot replaces it, before `open`
            // returns.
            window: RwLock::new(MemoryLog::new(1)),
            head,
            reload: Notify::new(),
            store: store.clone(),
        });
        let stop = CancellationToken::new();
        let (ready, loaded) = std::sync::mpsc::sync_channel(1);
        store.runtime.spawn(mirror.clone().run(stop.clone(), ready));
        let outcome = loaded.recv_timeout(OPEN_TIMEOUT).unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "Redis did not answer in time",
            ))
        });
        if let Err(err) = outcome {
            stop.cancel();
            return Err(err);
        }
        Ok(RedisLog {
            mirror,
            _stop: stop.drop_guard(),
        })
    }
}

impl Mirror {
    fn window(&self) -> MemoryLog {
        self.window.read().clone()
    }

    /// Follows the stream until `stop`: a snapshot first (whose outcome goes
    /// to `ready`), then blocking reads, with a fresh snapshot whenever the
    /// connection broke or the epoch may have changed.
    async fn run(self: Arc<Self>, stop: CancellationToken, ready: SyncSender<io::Result<()>>) {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            loaded = self.load() => loaded,
        };
        let opened = first.is_ok();
        let _ = ready.send(first.map_err(|err| unreachable_redis(&err)));
        if !opened {
            return;
        }
        let mut reader = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                () = self.follow(&mut reader) => {}
            }
            loop {
                let loaded = tokio::select! {
                    _ = stop.cancelled() => return,
                    loaded = self.load() => loaded,
                };
                match loaded {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(%err, stream = %self.keys.stream, "cannot read the log from Redis; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(RETRY) => {}
                        }
                    }
                }
            }
        }
    }

    /// Reads the log as Redis has it. Under the epoch the window already
    /// has, with nothing lost, the window stays and the stream is followed
    /// from its head; otherwise the window starts again under Redis's epoch.
    async fn load(&self) -> redis::RedisResult<()> {
        let window = self.window();
        let (known_epoch, known_head) = (window.epoch(), window.head());
        let history = self.store.history;
        let mut conn = self.store.manager.clone();
        let started = Instant::now();
        let snapshot: redis::RedisResult<(String, Seq, Vec<String>, Vec<String>)> = self
            .store
            .snapshot
            .key(&self.keys.epoch)
            .key(&self.keys.seq)
            .key(&self.keys.stream)
            .key(&self.keys.messages)
            .arg(Epoch::random().as_str())
            .arg(known_epoch.as_str())
            .arg(known_head)
            .arg(history)
            .invoke_async(&mut conn)
            .await;
        self.store.stats.record(started, snapshot.is_ok());
        let (epoch, seq, events, messages) = snapshot?;
        if epoch == known_epoch.as_str() && seq >= known_head {
            return Ok(());
        }
        let events: Vec<Event> = events.iter().rev().filter_map(|json| parse(json)).collect();
        let first = events.first().map_or(seq + 1, |e| e.seq);
        let history_before: Vec<Arc<Event>> = messages
            .iter()
            .rev()
            .filter_map(|json| parse(json))
            .filter(|m| m.seq < first)
            .map(Arc::new)
            .collect();
        let fresh = MemoryLog::resume(
            history,
            Epoch::from_string(epoch),
            first,
            history_before
                .into_iter()
                .rev()
                .take(RECENT_MESSAGES)
                .rev()
                .collect(),
        );
        for event in events {
            if let Err(err) = fresh.restore(event) {
                tracing::error!(%err, stream = %self.keys.stream, "the stream in Redis is out of order");
            }
        }
        let head = fresh.head();
        tracing::info!(epoch = %fresh.epoch(), head, stream = %self.keys.stream, "log read from Redis");
        *self.window.write() = fresh;
        self.head.send_modify(|(generation, h)| {
            *generation += 1;
            *h = head;
        });
        Ok(())
    }

    /// Follows the stream with blocking reads until a snapshot is called
    /// for: the connection broke, the epoch in Redis is not the window's,
    /// the stream went back, or an append asked.
    async fn follow(&self, reader: &mut Option<MultiplexedConnection>) {
        loop {
            let conn = match reader {
                Some(conn) => conn,
                None => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(CONNECT_TIMEOUT)
                        .set_response_timeout(Duration::from_millis(BLOCK_MS) + REDIS_TIMEOUT);
                    match self
                        .store
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                    {
                        Ok(conn) => reader.insert(conn),
                        Err(err) => {
                            tracing::warn!(%err, "cannot connect to Redis to follow a log");
                            tokio::time::sleep(RETRY).await;
                            return;
                        }
                    }
                }
            };
            let after = self.window.read().head();
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(MAX_BATCH)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&self.keys.stream)
                .arg(format!("{after}-0"));
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                read = xread.query_async(conn) => read,
                () = self.reload.notified() => {
                    // The blocked read would hold this connection; start afresh.
                    *reader = None;
                    return;
                }
            };
            match read {
                Err(err) => {
                    self.store.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%err, stream = %self.keys.stream, "lost the stream in Redis; reconnecting");
                    *reader = None;
                    tokio::time::sleep(RETRY).await;
                    return;
                }
                // Quiet for a while: make sure the epoch still holds.
                Ok(None) => {
                    if !self.epoch_holds().await {
                        return;
                    }
                }
                Ok(Some(reply)) => {
                    for id in reply.keys.iter().flat_map(|key| &key.ids) {
                        let Some(event) = id.get::<String>("e").and_then(|json| parse(&json))
                        else {
                            continue;
                        };
                        if !self.take(event) {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn epoch_holds(&self) -> bool {
        let mut conn = self.store.manager.clone();
        let started = Instant::now();
        let epoch: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(&mut conn)
            .await;
        self.store.stats.record(started, epoch.is_ok());
        matches!(epoch, Ok(Some(epoch)) if epoch == self.window.read().epoch().as_str())
    }

    /// Puts an event read from the stream into the window. Returns false if
    /// the stream went back (Redis lost data), which calls for a snapshot.
    fn take(&self, event: Event) -> bool {
        let mut window = self.window();
        let head = window.head();
        if event.seq <= head {
            return false;
        }
        if event.seq > head + 1 {
            // Trimmed in Redis before this node read them: the window goes
            // on after the hole, so readers behind it get a gap.
            tracing::warn!(from = head + 1, to = event.seq - 1, stream = %self.keys.stream, "events trimmed before this node read them");
            window = MemoryLog::resume(
                self.store.history,
                window.epoch(),
                event.seq,
                window.recent_messages(),
            );
            *self.window.write() = window.clone();
        }
        let seq = event.seq;
        // The seq was checked above, so it is the window's next.
        let _ = window.restore(event);
        self.head.send_modify(|(_, h)| *h = seq);
        true
    }

    /// Appends through [`APPEND`], once more after a snapshot if Redis has
    /// another epoch than the window.
    async fn append(&self, json: String, message: bool) -> Result<Arc<Event>, LogError> {
        for _ in 0..2 {
            let expected = self.window.read().epoch();
            let mut conn = self.store.manager.clone();
            let started = Instant::now();
            let reply: redis::RedisResult<(Seq, String)> = self
                .store
                .append
                .key(&self.keys.epoch)
                .key(&self.keys.seq)
                .key(&self.keys.stream)
                .key(&self.keys.messages)
                .arg(expected.as_str())
                .arg(Epoch::random().as_str())
                .arg(&json)
                .arg(self.store.history)
                .arg(u8::from(message))
                .invoke_async(&mut conn)
                .await;
            self.store.stats.record(started, reply.is_ok());
            match reply {
                Err(err)
                    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() =>
                {
                    return Err(LogError::Unavailable(err.to_string()))
                }
                Err(err) => return Err(LogError::Storage(err.to_string())),
                Ok((0, epoch)) => {
                    tracing::warn!(%epoch, stream = %self.keys.stream, "the epoch in Redis changed; reading the log afresh");
                    self.reload.notify_one();
                    let mut head = self.head.subscribe();
                    let generation = head.borrow().0;
                    let _ =
                        tokio::time::timeout(MIRROR_WAIT, head.wait_for(|(g, _)| *g != generation))
                            .await;
                }
                Ok((seq, json)) => return Ok(self.settled(seq, &json).await),
            }
        }
        Err(LogError::Unavailable(
            "the epoch in Redis kept changing".into(),
        ))
    }

    /// The event Redis stored as `seq`, from the window once the mirror has
    /// it, or as Redis returned it if the mirror is slow.
    async fn settled(&self, seq: Seq, json: &str) -> Arc<Event> {
        let mut head = self.head.subscribe();
        let generation = head.borrow().0;
        let _ = tokio::time::timeout(
            MIRROR_WAIT,
            head.wait_for(|(g, h)| *g != generation || *h >= seq),
        )
        .await;
        let batch = self.window.read().read_since(seq - 1, None);
        match batch.events.into_iter().next() {
            Some(event) if !batch.gap && event.seq == seq && event.json() == json => event,
            _ => {
                Arc::new(parse(json).expect("the script returns the JSON it was given, with a seq"))
            }
        }
    }
}

fn parse(json: &str) -> Option<Event> {
    match Event::from_json(json) {
        Ok(event) => Some(event),
        Err(err) => {
            tracing::error!(%err, "an event in Redis does not parse; skipped");
            None
        }
    }
}

impl EventLog for RedisLog {
    fn epoch(&self) -> Epoch {
        self.mirror.window.read().epoch()
    }

    fn head(&self) -> Seq {
        self.mirror.window.read().head()
    }

    fn append(
        &self,
        name: Name,
        body: EventBody,
    ) -> BoxFuture<'static, Result<Arc<Event>, LogError>> {
        let message = matches!(body, EventBody::Message { .. });
        // The script puts the seq in place of this 0.
        let json = Event::new(0, now_millis(), name, body).json().to_owned();
        let mirror = self.mirror.clone();
        let task = self
            .mirror
            .store
            .runtime
            .spawn(async move { mirror.append(json, message).await });
        Box::pin(async move {
            task.await
                .map_err(|_| LogError::Unavailable("the Redis store has stopped".into()))?
        })
    }

    fn read_since(&self, since: Seq, epoch: Option<&str>) -> Batch {
        self.mirror.window.read().read_since(since, epoch)
    }

    fn wait_after(&self, seq: Seq) -> BoxFuture<'static, ()> {
        let mut head = self.mirror.head.subscribe();
        let (generation, now) = *head.borrow();
        Box::pin(async move {
            if seq > now {
                // A cursor ahead of the head belongs to another epoch: the
                // next read reports the gap.
                return;
            }
            let _ = head.wait_for(|(g, h)| *g != generation || *h > seq).await;
        })
    }

    fn recent_messages(&self) -> Vec<Arc<Event>> {
        self.mirror.window.read().recent_messages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Cursor, Reader};
    use pushlab_testkit::RedisServer;

    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    fn say(text: &str) -> EventBody {
        EventBody::Message {
            text: text.into(),
            id: None,
        }
    }

    fn lobby(store: &RedisStore) -> Arc<dyn EventLog> {
        store.open(&RoomName::lobby()).unwrap()
    }

    /// Waits (bounded) until `log` holds `seq`: another node's append
    /// reaches this one through its mirror.
    async fn until_head(log: &Arc<dyn EventLog>, seq: Seq) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while log.head() < seq {
                log.wait_after(log.head()).await;
            }
        })
        .await
        .expect("the mirror caught up");
    }

    #[tokio::test]
    async fn two_nodes_share_one_dense_log_with_one_epoch_and_one_history() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let (on_a, on_b) = (lobby(&a), lobby(&b));

        // Act
        let mut appends = Vec::new();
        for i in 0..20 {
            let log = if i % 2 == 0 { &on_a } else { &on_b };
            appends.push(log.append(name("ann"), say(&format!("m{i}"))));
        }
        let mut seqs: Vec<Seq> = futures_util::future::join_all(appends)
            .await
            .into_iter()
            .map(|event| event.unwrap().seq)
            .collect();
        until_head(&on_a, 20).await;
        until_head(&on_b, 20).await;

        // Assert
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "dense, gap-free");
        assert_eq!(on_a.epoch(), on_b.epoch());
        let read = |log: &Arc<dyn EventLog>| -> Vec<String> {
            log.read_since(0, None)
                .events
                .iter()
                .map(|e| e.json().to_owned())
                .collect()
        };
        assert_eq!(read(&on_a), read(&on_b), "the same bytes on both nodes");
        let late = lobby(&RedisStore::connect(&redis.url(), 100).unwrap());
        assert_eq!(late.recent_messages().len(), 20, "history for late joiners");
        assert_eq!(late.head(), 20);
    }

    #[tokio::test]
    async fn an_append_is_readable_on_its_own_node_as_soon_as_it_is_acknowledged() {
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 100).unwrap();
        let log = lobby(&store);

        for i in 1..=50 {
            let event = log.append(name("ann"), say("hi")).await.unwrap();

            assert_eq!(event.seq, i);
            assert_eq!(log.head(), i, "read your own writes");
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_refuses_appends_and_acknowledges_nothing() {
        let mut redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 100).unwrap();
        let log = lobby(&store);
        log.append(name("ann"), say("before")).await.unwrap();

        redis.kill();
        let refused = log.append(name("ann"), say("lost?")).await;

        assert!(
            matches!(refused, Err(LogError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(log.head(), 1);
    }

    #[tokio::test]
    async fn a_redis_back_with_its_data_resumes_without_loss_or_duplicates() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let mut redis = RedisServer::start_persistent(dir.path());
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let (on_a, on_b) = (lobby(&a), lobby(&b));
        let epoch = on_a.epoch();
        let mut reader = Reader::new(on_b.clone(), Cursor::default());
        on_a.append(name("ann"), say("one")).await.unwrap();

        // Act
        redis.restart();
        let mut appended = None;
        for _ in 0..100 {
            match on_a.append(name("ann"), say("two")).await {
                Ok(event) => {
                    appended = Some(event);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        until_head(&on_b, 2).await;

        // Assert
        assert_eq!(appended.expect("appends work again").seq, 2);
        assert_eq!(on_a.epoch(), epoch, "the same epoch");
        let read = reader.next(usize::MAX);
        assert_eq!(read.gap, None);
        let texts: Vec<Seq> = read.events.iter().map(|e| e.seq).collect();
        assert_eq!(texts, [1, 2]);
    }

    #[tokio::test]
    async fn a_redis_that_lost_its_data_starts_a_new_epoch_and_readers_see_a_gap() {
        // Arrange
        let mut redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let (on_a, on_b) = (lobby(&a), lobby(&b));
        for _ in 0..5 {
            on_a.append(name("ann"), say("before")).await.unwrap();
        }
        until_head(&on_b, 5).await;
        let old = on_b.epoch();
        let mut reader = Reader::new(on_b.clone(), Cursor::default());
        assert_eq!(reader.next(usize::MAX).events.len(), 5);

        // Act: a restart without persistence
        redis.restart();
        let mut appended = None;
        for _ in 0..100 {
            match on_a.append(name("ann"), say("after")).await {
                Ok(event) => {
                    appended = Some(event);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let appended = appended.expect("appends work again");
        tokio::time::timeout(Duration::from_secs(10), async {
            while on_b.epoch() == old || on_b.head() < appended.seq {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the other node follows the new epoch");

        // Assert
        assert_ne!(on_a.epoch(), old);
        assert_eq!(on_a.epoch(), on_b.epoch());
        let read = reader.next(usize::MAX);
        assert_eq!(read.gap, Some(0), "the reader is told");
        assert_eq!(read.events.last().map(|e| e.seq), Some(appended.seq));
    }
}
