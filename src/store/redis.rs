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
//! | `pushlab:room:{NAME}:stream` | stream | the events: id `<seq>-0`, field `e` = the event's JSON, trimmed with `MAXLEN ~ --history` |
//! | `pushlab:room:{NAME}:messages` | list | the last [`RECENT_MESSAGES`] chat messages, newest first |
//! | `pushlab:room:{NAME}:names` | hash | lower-cased name → session |
//! | `pushlab:room:{NAME}:sessions` | hash | session → name |
//! | `pushlab:room:{NAME}:leases` | sorted set | session, scored by the end of its lease (ms, Redis's clock) |
//! | `pushlab:room:{NAME}:buckets` | hash | session → its rate limit's `tokens since` |
//!
//! and `pushlab:session-rooms` (hash: session → room) for every room. Each
//! reap extends a room's keys to [`ROOM_KEPT_FOR`].
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
//! seqs stay dense and gap-free whichever node appends. Each room has one
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

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::core::directory::{Appending, Directory, Joined, Lookup, Reaped, SignalSink};
use crate::core::error::ApiError;
use crate::core::log::{
    now_millis, Batch, Epoch, Event, EventBody, EventLog, LogError, MemoryLog, Seq, MAX_BATCH,
    RECENT_MESSAGES,
};
use crate::core::log_store::{LogStore, OpenedLog};
use crate::core::names::{Name, RoomName};
use crate::core::presence::SessionId;

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

/// What every script of a room begins with: its keys, and the steps they
/// share. Keys: 1 epoch, 2 seq, 3 stream, 4 messages, 5 names, 6 sessions,
/// 7 leases, 8 buckets, 9 the index of every session's room. Arguments: 1
/// the epoch the node reads under, 2 a new epoch to set if Redis has none,
/// 3 `--history`; each script's own come after.
macro_rules! prelude {
    () => {
        r#"
local function foreign_epoch()
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    redis.call('SET', KEYS[1], ARGV[2])
    return ARGV[2]
  end
  if epoch ~= ARGV[1] then
    return epoch
  end
  return false
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function append(json, message)
  local seq = redis.call('INCR', KEYS[2])
  json = '{"seq":' .. seq .. string.sub(json, 9)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', json)
  if message then
    redis.call('LPUSH', KEYS[4], json)
    redis.call('LTRIM', KEYS[4], 0, 99)
  end
  return {seq, json}
end
local function leave(id, now)
  if redis.call('ZREM', KEYS[7], id) == 0 then
    return false
  end
  local name = redis.call('HGET', KEYS[6], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[8], id)
  redis.call('HDEL', KEYS[9], id)
  if not name then
    return false
  end
  redis.call('HDEL', KEYS[5], string.lower(name))
  return append('{"seq":0,"ts":' .. now .. ',"type":"leave","name":"' .. name .. '"}', false)
end
"#
    };
}

/// The first step of every script that writes: nothing is written under an
/// epoch the node does not read under; `{0, epoch}` tells it Redis's.
macro_rules! epoch_guard {
    () => {
        r#"
local foreign = foreign_epoch()
if foreign then
  return {0, foreign}
end
"#
    };
}

/// Appends a group of events, in order. Arguments after the prelude's, five
/// for each event: its JSON with `"seq":0`, `1` for a chat message, the
/// session it is from (or empty), that session's lease in ms, and its rate
/// limit per second (0 for none). Returns `{code, text}` for each event in
/// turn: `{seq, json}` when stored, `{-1, code}` when its session is
/// refused; or `{0, epoch}` alone, appending nothing, when the epoch is not
/// the node's.
pub const APPEND: &str = concat!(
    prelude!(),
    epoch_guard!(),
    r#"
local now = now_ms()
local function admit(id, lease, rate)
  if id == '' then
    return false
  end
  local deadline = redis.call('ZSCORE', KEYS[7], id)
  if (not deadline) or tonumber(deadline) < now then
    return 'unknown_session'
  end
  if rate > 0 then
    local burst = rate * 2
    local tokens, since = burst, now
    local bucket = redis.call('HGET', KEYS[8], id)
    if bucket then
      local space = string.find(bucket, ' ')
      tokens = tonumber(string.sub(bucket, 1, space - 1))
      since = tonumber(string.sub(bucket, space + 1))
    end
    tokens = math.min(burst, tokens + (now - since) * rate / 1000)
    if tokens < 1 then
      redis.call('HSET', KEYS[8], id, tokens .. ' ' .. now)
      return 'rate_limited'
    end
    redis.call('HSET', KEYS[8], id, (tokens - 1) .. ' ' .. now)
  end
  redis.call('ZADD', KEYS[7], 'XX', now + lease, id)
  return false
end
local replies = {}
for i = 4, #ARGV, 5 do
  local refused = admit(ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]))
  if refused then
    replies[#replies + 1] = -1
    replies[#replies + 1] = refused
  else
    local stored = append(ARGV[i], ARGV[i + 1] == '1')
    replies[#replies + 1] = stored[1]
    replies[#replies + 1] = stored[2]
  end
end
return replies
"#
);

/// Admits a session and appends its join. Arguments after the prelude's: 4
/// the join's JSON with `"seq":0`, 5 the session, 6 its name, 7 its lease
/// in ms, 8 the room's name, 9 how many names to list at most. A holder of
/// the name whose lease ran out leaves first. Returns `{seq, json, online,
/// names}`, `{0, epoch}` or `{-1, 'name_taken'}`.
pub const JOIN: &str = concat!(
    prelude!(),
    epoch_guard!(),
    r#"
local now = now_ms()
local key = string.lower(ARGV[6])
local holder = redis.call('HGET', KEYS[5], key)
if holder then
  local deadline = redis.call('ZSCORE', KEYS[7], holder)
  if deadline and tonumber(deadline) >= now then
    return {-1, 'name_taken'}
  end
  if not leave(holder, now) then
    redis.call('HDEL', KEYS[5], key)
  end
end
local id = ARGV[5]
redis.call('HSET', KEYS[5], key, id)
redis.call('HSET', KEYS[6], id, ARGV[6])
redis.call('ZADD', KEYS[7], now + tonumber(ARGV[7]), id)
redis.call('HSET', KEYS[9], id, ARGV[8])
local joined = append(ARGV[4], false)
local online = redis.call('HLEN', KEYS[6])
local names
if online <= tonumber(ARGV[9]) then
  names = redis.call('HVALS', KEYS[6])
else
  names = redis.call('HRANDFIELD', KEYS[5], tonumber(ARGV[9]))
  for i, k in ipairs(names) do
    names[i] = redis.call('HGET', KEYS[6], redis.call('HGET', KEYS[5], k))
  end
  names[#names + 1] = ARGV[6]
end
return {joined[1], joined[2], online, names}
"#
);

/// Ends a session. Arguments after the prelude's: 4 the session. Returns
/// `{seq, json}` of its leave, `{0, epoch}`, or `{-1, 'unknown_session'}`
/// if it had ended already.
pub const LEAVE: &str = concat!(
    prelude!(),
    epoch_guard!(),
    r#"
return leave(ARGV[4], now_ms()) or {-1, 'unknown_session'}
"#
);

/// Ends the sessions whose lease ran out, at most argument 4 of them, under
/// whatever epoch Redis has, and keeps the room's keys for argument 5 ms
/// more. Returns `{ended, online}`.
pub const REAP: &str = concat!(
    prelude!(),
    r#"
for i = 1, 8 do
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))
local ended = 0
if #expired > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  for _, id in ipairs(expired) do
    if leave(id, now) then
      ended = ended + 1
    end
  end
end
return {ended, redis.call('ZCARD', KEYS[7])}
"#
);

/// Renews leases. Arguments after the prelude's: 4 the lease in ms, then
/// the sessions. Returns the sessions that are no longer live.
pub const RENEW: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local deadline = now + tonumber(ARGV[4])
local gone = {}
for i = 5, #ARGV do
  local current = redis.call('ZSCORE', KEYS[7], ARGV[i])
  if current and tonumber(current) >= now then
    redis.call('ZADD', KEYS[7], deadline, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"#
);

/// Finds a session. Arguments after the prelude's: 4 the session. Returns
/// `{1, name}` if live in this room, `{2, room}` if live in another, `{0,
/// ''}` otherwise.
pub const LOOKUP: &str = concat!(
    prelude!(),
    r#"
local id = ARGV[4]
local deadline = redis.call('ZSCORE', KEYS[7], id)
if deadline and tonumber(deadline) >= now_ms() then
  return {1, redis.call('HGET', KEYS[6], id)}
end
local room = redis.call('HGET', KEYS[9], id)
if room and not deadline then
  return {2, room}
end
return {0, ''}
"#
);

/// Relays a WebRTC signal to every node, if its target is online in the
/// room. Arguments after the prelude's: 4 the target's lower-cased name, 5
/// the channel, 6 the message. Returns how many nodes took it, or -1 if the
/// target is not online.
pub const SIGNAL: &str = concat!(
    prelude!(),
    r#"
if redis.call('HEXISTS', KEYS[5], ARGV[4]) == 0 then
  return -1
end
return redis.call('PUBLISH', ARGV[5], ARGV[6])
"#
);

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
    scripts: Scripts,
    stats: Arc<RedisStats>,
    /// Where each open room takes the WebRTC signals other nodes relay.
    signal_sinks: SignalSinks,
}

/// Room → where this node delivers the signals relayed to its users.
type SignalSinks = Arc<Mutex<HashMap<RoomName, Weak<SignalSink>>>>;

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
                scripts: Scripts::load(),
                stats: Arc::default(),
                signal_sinks,
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
}

/// The channel every node's WebRTC signals go through, each message
/// `ROOM\nTO\nFRAME`: room and user names have no line breaks, and the frame
/// is compact JSON.
pub const SIGNALS: &str = "pushlab:signals";

/// Follows [`SIGNALS`] on a connection of its own and hands each signal to
/// the room it is for, if this node has that room open; reconnects after a
/// failure, until the store's runtime stops. A signal relayed while this
/// node is not subscribed is lost, as a WebRTC signal on a broken socket is:
/// the peers' negotiation times out and the page tries again.
async fn follow_signals(client: Client, sinks: SignalSinks) {
    use futures_util::StreamExt as _;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(SIGNALS).await {
                Ok(()) => {
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        match message.get_payload::<String>() {
                            Ok(payload) => dispatch_signal(&sinks, &payload),
                            Err(err) => tracing::warn!(%err, "a relayed signal is not text"),
                        }
                    }
                    tracing::warn!("lost the signal channel in Redis; reconnecting");
                }
                Err(err) => tracing::warn!(%err, "cannot subscribe to signals in Redis"),
            },
            Err(err) => tracing::warn!(%err, "cannot connect to Redis for signals"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Delivers one relayed signal on this node, to its room's sink.
fn dispatch_signal(sinks: &SignalSinks, payload: &str) {
    let mut parts = payload.splitn(3, '\n');
    let (Some(room), Some(to), Some(frame)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::warn!("a relayed signal is malformed");
        return;
    };
    let (Ok(room), Ok(to)) = (RoomName::parse(room), Name::parse(to)) else {
        tracing::warn!("a relayed signal names no valid room or user");
        return;
    };
    let sink = {
        let mut sinks = sinks.lock();
        let sink = sinks.get(&room).and_then(Weak::upgrade);
        if sink.is_none() {
            // A room closed on this node: forget it.
            sinks.remove(&room);
        }
        sink
    };
    if let Some(deliver) = sink {
        deliver(&to, ByteString::from(frame.to_owned()));
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

/// Every script, loaded once; each runs by its SHA.
struct Scripts {
    append: Script,
    join: Script,
    leave: Script,
    reap: Script,
    renew: Script,
    lookup: Script,
    signal: Script,
    snapshot: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            reap: Script::new(REAP),
            renew: Script::new(RENEW),
            lookup: Script::new(LOOKUP),
            signal: Script::new(SIGNAL),
            snapshot: Script::new(SNAPSHOT),
        }
    }
}

/// The names of one room's keys, in the order the scripts' prelude takes
/// them.
struct Keys {
    room: RoomName,
    epoch: String,
    seq: String,
    stream: String,
    messages: String,
    /// Lower-cased name → session.
    names: String,
    /// Session → name.
    sessions: String,
    /// Session → the end of its lease, in ms of Redis's clock.
    leases: String,
    /// Session → its rate limit's `tokens since`.
    buckets: String,
}

/// Session → the room it is in, for every room: how a node tells a session
/// of another room from an unknown one.
const SESSION_ROOMS: &str = "pushlab:session-rooms";

impl Keys {
    fn of(room: &RoomName) -> Keys {
        let key = |what: &str| format!("pushlab:room:{{{room}}}:{what}");
        Keys {
            room: room.clone(),
            epoch: key("epoch"),
            seq: key("seq"),
            stream: key("stream"),
            messages: key("messages"),
            names: key("names"),
            sessions: key("sessions"),
            leases: key("leases"),
            buckets: key("buckets"),
        }
    }

    /// `script` with every key of the prelude.
    fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in [
            &self.epoch,
            &self.seq,
            &self.stream,
            &self.messages,
            &self.names,
            &self.sessions,
            &self.leases,
            &self.buckets,
        ] {
            invocation.key(key);
        }
        invocation.key(SESSION_ROOMS);
        invocation
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
    /// Appends waiting for the room's writer task, in the order they were
    /// made.
    appends: mpsc::UnboundedSender<Queued>,
}

/// One append, queued for the room's writer.
struct Queued {
    /// The event's JSON with `"seq":0`, and whether it is a chat message.
    json: String,
    message: bool,
    /// The session it is from, with its lease and rate limit, if any.
    from: Option<(SessionId, Duration, u32)>,
    /// Where the writer answers.
    done: oneshot::Sender<Result<Stored, LogError>>,
}

/// What [`APPEND`] did with one event: stored it as `(seq, json)`, or
/// refused its session with a code.
type Stored = Result<(Seq, String), String>;

/// The most appends one [`APPEND`] call takes: more wait for the next.
const MAX_GROUP: usize = 256;

impl RedisLog {
    fn open(store: Arc<StoreShared>, room: &RoomName) -> io::Result<RedisLog> {
        let (head, _) = watch::channel((0, 0));
        let (appends, queue) = mpsc::unbounded_channel();
        let mirror = Arc::new(Mirror {
            keys: Keys::of(room),
            // A placeholder until the snapshot replaces it, before `open`
            // returns.
            window: RwLock::new(MemoryLog::new(1)),
            head,
            reload: Notify::new(),
            appends,
            store: store.clone(),
        });
        let stop = CancellationToken::new();
        let (ready, loaded) = std::sync::mpsc::sync_channel(1);
        store.runtime.spawn(mirror.clone().run(stop.clone(), ready));
        store
            .runtime
            .spawn(Mirror::write_appends(Arc::downgrade(&mirror), queue));
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
            .scripts
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
                    let mut in_order = true;
                    for id in reply.keys.iter().flat_map(|key| &key.ids) {
                        let Some(event) = id.get::<String>("e").and_then(|json| parse(&json))
                        else {
                            continue;
                        };
                        in_order = self.take(event);
                        if !in_order {
                            break;
                        }
                    }
                    // Waiters wake once per read, however many events it
                    // brought, so each reader writes them in one batch.
                    let head = self.window.read().head();
                    self.head.send_if_modified(|(_, h)| {
                        let moved = *h != head;
                        *h = head;
                        moved
                    });
                    if !in_order {
                        return;
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

    /// Puts an event read from the stream into the window, without waking
    /// its waiters yet. Returns false if the stream went back (Redis lost
    /// data), which calls for a snapshot.
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
        // The seq was checked above, so it is the window's next.
        let _ = window.restore(event);
        true
    }

    /// Appends an event through the room's writer; from a session, checked
    /// against its lease and its rate limit (`(session, lease, rate)`),
    /// which may refuse it with a code. The append is queued when this is
    /// called, so appends called one after another are stored in that
    /// order, however their futures are awaited.
    fn append(
        self: &Arc<Self>,
        from: Option<(SessionId, Duration, u32)>,
        name: Name,
        body: EventBody,
    ) -> BoxFuture<'static, Result<Result<Arc<Event>, String>, LogError>> {
        let message = matches!(body, EventBody::Message { .. });
        // The script puts the seq in place of this 0.
        let json = Event::new(0, now_millis(), name, body).json().to_owned();
        let (done, stored) = oneshot::channel();
        let queued = self.appends.send(Queued {
            json,
            message,
            from,
            done,
        });
        let mirror = self.clone();
        Box::pin(async move {
            let stopped = || LogError::Unavailable("the Redis store has stopped".into());
            queued.map_err(|_| stopped())?;
            match stored.await.map_err(|_| stopped())?? {
                Ok((seq, json)) => Ok(Ok(mirror.settled(seq, &json).await)),
                Err(code) => Ok(Err(code)),
            }
        })
    }

    /// The room's writer: takes every append queued while its last call
    /// ran, up to [`MAX_GROUP`], and stores them with one [`APPEND`] call,
    /// for as long as the mirror lives (the log's, or the directory's that
    /// shares it). One busy socket's messages, or many sockets', cost one
    /// round trip to Redis per group, not one each; and readers get the
    /// group from one `XREAD`, so they write it in one batch.
    async fn write_appends(mirror: Weak<Mirror>, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
            let Some(mirror) = mirror.upgrade() else {
                return;
            };
            let mut args = Vec::with_capacity(group.len() * 5);
            for queued in &mut group {
                let (session, lease, rate) = match queued.from {
                    Some((session, lease, rate)) => (session.to_string(), millis(lease), rate),
                    None => (String::new(), 0, 0),
                };
                args.extend([
                    // Only the script needs the JSON; Redis answers with it.
                    std::mem::take(&mut queued.json),
                    u8::from(queued.message).to_string(),
                    session,
                    lease.to_string(),
                    rate.to_string(),
                ]);
            }
            match mirror.write_group(&args).await {
                Ok(replies) => {
                    for (queued, reply) in group.drain(..).zip(replies) {
                        let _ = queued.done.send(Ok(reply));
                    }
                }
                Err(err) => {
                    let unavailable = matches!(err, LogError::Unavailable(_));
                    for queued in group.drain(..) {
                        let err = err.to_string();
                        let _ = queued.done.send(Err(if unavailable {
                            LogError::Unavailable(err)
                        } else {
                            LogError::Storage(err)
                        }));
                    }
                }
            }
        }
    }

    /// Runs [`APPEND`] on a group's `args`, once more after a snapshot if
    /// Redis has another epoch than the window. Returns, for each append,
    /// the seq and JSON stored or the code its session was refused with.
    async fn write_group(&self, args: &[String]) -> Result<Vec<Stored>, LogError> {
        for _ in 0..2 {
            let reply: Vec<(i64, String)> = self.call(&self.store.scripts.append, args).await?;
            if let [(0, epoch)] = reply.as_slice() {
                self.epoch_changed(epoch).await;
                continue;
            }
            if reply.len() * 5 != args.len() {
                return Err(LogError::Storage(
                    "APPEND answered for another number of events".into(),
                ));
            }
            return Ok(reply
                .into_iter()
                .map(|(code, text)| match Seq::try_from(code) {
                    Ok(seq) if seq > 0 => Ok((seq, text)),
                    _ => Err(text),
                })
                .collect());
        }
        Err(LogError::Unavailable(
            "the epoch in Redis kept changing".into(),
        ))
    }

    /// Has the mirror read the log afresh, Redis having `epoch` where the
    /// window has another, and waits (briefly) until it has.
    async fn epoch_changed(&self, epoch: &str) {
        tracing::warn!(epoch, stream = %self.keys.stream, "the epoch in Redis changed; reading the log afresh");
        self.reload.notify_one();
        let mut head = self.head.subscribe();
        let generation = head.borrow().0;
        let _ = tokio::time::timeout(MIRROR_WAIT, head.wait_for(|(g, _)| *g != generation)).await;
    }

    /// Runs a script that writes to the log ([`JOIN`], [`LEAVE`]) with the prelude's arguments and `args`, once more after a
    /// snapshot if Redis has another epoch than the window. Returns the event
    /// stored with the rest of the script's reply, or the code it refused
    /// with.
    async fn write(&self, script: &Script, args: &[String]) -> Result<Written, LogError> {
        for _ in 0..2 {
            let reply: Vec<redis::Value> = self.call(script, args).await?;
            let mut reply = reply.into_iter();
            let (code, text): (i64, String) = match (reply.next(), reply.next()) {
                (Some(code), Some(text)) => (
                    redis::from_redis_value(&code).map_err(store_error)?,
                    redis::from_redis_value(&text).map_err(store_error)?,
                ),
                _ => return Err(LogError::Storage("a script's reply is too short".into())),
            };
            match Seq::try_from(code) {
                Ok(0) => self.epoch_changed(&text).await,
                Ok(seq) => {
                    return Ok(Written::Stored(
                        self.settled(seq, &text).await,
                        reply.collect(),
                    ))
                }
                Err(_) => return Ok(Written::Refused),
            }
        }
        Err(LogError::Unavailable(
            "the epoch in Redis kept changing".into(),
        ))
    }

    /// Runs a script that only reads or renews presence, with the prelude's
    /// arguments and `args`.
    async fn call<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[String],
    ) -> Result<T, LogError> {
        let mut invocation = self.keys.invoke(script);
        invocation
            .arg(self.window.read().epoch().as_str())
            .arg(Epoch::random().as_str())
            .arg(self.store.history);
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.store.manager.clone();
        let started = Instant::now();
        let reply = invocation.invoke_async(&mut conn).await;
        self.store.stats.record(started, reply.is_ok());
        reply.map_err(store_error)
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

/// The sessions of one room, in Redis beside its log: see [`Directory`]
/// and the module docs. It shares the log's mirror, so a `join` or `leave`
/// it writes is read back like any other event.
pub struct RedisDirectory {
    mirror: Arc<Mirror>,
    /// Sessions online on every node, as the last `join` or reap counted.
    online: Arc<AtomicUsize>,
}

/// The most names a `join` lists; the rest show up as they move or speak.
const JOIN_NAMES: usize = crate::core::directory::WELCOME_USERS;

/// How long Redis keeps a room that no node has open: every node that has
/// it open extends this at each reap (about once a second). A room unused
/// for longer is gone, and opens again empty under a new epoch, as a
/// reclaimed room of the in-memory store does.
pub const ROOM_KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many expired leases one reap ends at most; the next reap goes on.
const REAP_BATCH: usize = 1_000;

impl Directory for RedisDirectory {
    fn join(
        &self,
        session: SessionId,
        name: &Name,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Joined, ApiError>> {
        let mirror = self.mirror.clone();
        let args = [
            Event::new(0, now_millis(), name.clone(), EventBody::Join)
                .json()
                .to_owned(),
            session.to_string(),
            name.to_string(),
            millis(lease).to_string(),
            mirror.keys.room.to_string(),
            JOIN_NAMES.to_string(),
        ];
        let (name, counted) = (name.clone(), self.online.clone());
        on_store(&self.mirror.store, async move {
            match mirror.write(&mirror.store.scripts.join, &args).await? {
                Written::Refused => Err(ApiError::NameTaken(name.to_string())),
                Written::Stored(event, rest) => {
                    let (online, names): (usize, Vec<String>) =
                        redis::from_redis_value(&redis::Value::Array(rest))
                            .map_err(|err| LogError::Storage(err.to_string()))?;
                    let mut names: Vec<Name> =
                        names.iter().filter_map(|n| Name::parse(n).ok()).collect();
                    names.sort_by_key(Name::key);
                    names.dedup_by_key(|n| n.key());
                    counted.store(online, Ordering::Relaxed);
                    Ok(Joined {
                        event,
                        names,
                        online,
                    })
                }
            }
        })
    }

    fn lookup(&self, session: SessionId) -> BoxFuture<'static, Result<Lookup, ApiError>> {
        let mirror = self.mirror.clone();
        on_store(&self.mirror.store, async move {
            let (found, what): (u8, String) = mirror
                .call(&mirror.store.scripts.lookup, &[session.to_string()])
                .await?;
            Ok(match found {
                1 => Name::parse(&what).map_or(Lookup::Unknown, Lookup::Live),
                2 => RoomName::parse(&what).map_or(Lookup::Unknown, Lookup::Elsewhere),
                _ => Lookup::Unknown,
            })
        })
    }

    fn append(
        &self,
        session: SessionId,
        name: Name,
        body: EventBody,
        lease: Duration,
        rate: u32,
    ) -> Appending {
        let appended = self.mirror.append(Some((session, lease, rate)), name, body);
        Appending::deciding(Box::pin(async move {
            match appended.await? {
                Ok(event) => Ok(event),
                Err(code) if code == "rate_limited" => Err(ApiError::RateLimited),
                Err(_) => Err(ApiError::UnknownSession),
            }
        }))
    }

    fn leave(
        &self,
        session: SessionId,
    ) -> BoxFuture<'static, Result<Option<Arc<Event>>, ApiError>> {
        let mirror = self.mirror.clone();
        on_store(&self.mirror.store, async move {
            match mirror
                .write(&mirror.store.scripts.leave, &[session.to_string()])
                .await?
            {
                Written::Stored(event, _) => Ok(Some(event)),
                Written::Refused => Ok(None),
            }
        })
    }

    fn renew(
        &self,
        sessions: Vec<SessionId>,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Vec<SessionId>, LogError>> {
        let mirror = self.mirror.clone();
        let mut args = vec![millis(lease).to_string()];
        args.extend(sessions.iter().map(SessionId::to_string));
        on_store(&self.mirror.store, async move {
            let gone: Vec<String> = mirror.call(&mirror.store.scripts.renew, &args).await?;
            Ok(gone.iter().filter_map(|id| id.parse().ok()).collect())
        })
    }

    fn went_idle(&self, _sessions: Vec<SessionId>) -> BoxFuture<'static, Result<usize, LogError>> {
        // Another node may be using them: their leases decide.
        Box::pin(std::future::ready(Ok(0)))
    }

    fn reap(&self) -> BoxFuture<'static, Result<Reaped, LogError>> {
        let (mirror, counted) = (self.mirror.clone(), self.online.clone());
        on_store(&self.mirror.store, async move {
            let (ended, online): (usize, usize) = mirror
                .call(
                    &mirror.store.scripts.reap,
                    &[REAP_BATCH.to_string(), millis(ROOM_KEPT_FOR).to_string()],
                )
                .await?;
            if ended > 0 {
                tracing::debug!(ended, room = %mirror.keys.room, "sessions whose lease ran out left");
            }
            counted.store(online, Ordering::Relaxed);
            Ok(Reaped { ended, online })
        })
    }

    fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    fn relay_signal(
        &self,
        to: &Name,
        frame: ByteString,
    ) -> BoxFuture<'static, Result<(), ApiError>> {
        let mirror = self.mirror.clone();
        let args = [
            to.key(),
            SIGNALS.to_owned(),
            format!("{}\n{to}\n{frame}", mirror.keys.room),
        ];
        let to = to.clone();
        on_store(&self.mirror.store, async move {
            let nodes: i64 = mirror.call(&mirror.store.scripts.signal, &args).await?;
            if nodes < 0 {
                return Err(ApiError::UnknownTarget(to.to_string()));
            }
            Ok(())
        })
    }

    fn deliver_signals(&self, deliver: &Arc<SignalSink>) {
        self.mirror
            .store
            .signal_sinks
            .lock()
            .insert(self.mirror.keys.room.clone(), Arc::downgrade(deliver));
    }
}

/// Runs `task` on the store's runtime, where every Redis call runs.
fn on_store<T, E>(
    store: &StoreShared,
    task: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> BoxFuture<'static, Result<T, E>>
where
    T: Send + 'static,
    E: From<LogError> + Send + 'static,
{
    let task = store.runtime.spawn(task);
    Box::pin(async move {
        task.await
            .map_err(|_| LogError::Unavailable("the Redis store has stopped".into()))?
    })
}

/// `duration` in whole milliseconds, at least 1.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What a writing script did.
enum Written {
    /// It stored this event; the rest of its reply follows.
    Stored(Arc<Event>, Vec<redis::Value>),
    /// It refused: the name is taken ([`JOIN`]), the session ended already
    /// ([`LEAVE`]).
    Refused,
}

/// A failed Redis call as a log error: unavailable if Redis could not be
/// reached or did not answer, which clients see as `store_unavailable`.
fn store_error(err: redis::RedisError) -> LogError {
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        LogError::Unavailable(err.to_string())
    } else {
        LogError::Storage(err.to_string())
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
        let appended = self.mirror.append(None, name, body);
        Box::pin(async move {
            match appended.await? {
                Ok(event) => Ok(event),
                Err(code) => Err(LogError::Storage(format!(
                    "an append from no session was refused: {code}"
                ))),
            }
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
    use crate::core::log::{Cursor, Reader};
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
        store.open(&RoomName::lobby()).unwrap().log
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

    /// The lobby's log and directory on `store`, as one node opens them.
    fn lobby_shared(store: &RedisStore) -> (Arc<dyn EventLog>, Arc<dyn Directory>) {
        let opened = store.open(&RoomName::lobby()).unwrap();
        (opened.log, opened.directory)
    }

    /// Every event of `kind` in the log as `log` sees it, once it holds `seq`.
    async fn events_of(log: &Arc<dyn EventLog>, seq: Seq, kind: &str) -> Vec<Arc<Event>> {
        until_head(log, seq).await;
        log.read_since(0, None)
            .events
            .into_iter()
            .filter(|e| e.body.kind() == kind)
            .collect()
    }

    const LEASE: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_name_is_taken_on_every_node_until_its_leave_is_written() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((_, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let alice = SessionId::new_v4();

        // Act
        let joined = on_a.join(alice, &name("Alice"), LEASE).await.unwrap();
        let taken = on_b
            .join(SessionId::new_v4(), &name("aLiCe"), LEASE)
            .await
            .unwrap_err();
        let left = on_b.leave(alice).await.unwrap();
        let again = on_b.join(SessionId::new_v4(), &name("alice"), LEASE).await;

        // Assert
        assert_eq!(joined.online, 1);
        assert_eq!(joined.names, [name("Alice")]);
        assert_eq!(taken.code(), "name_taken");
        assert_eq!(left.unwrap().body.kind(), "leave");
        assert!(again.is_ok(), "the name is free once its leave is written");
    }

    #[tokio::test]
    async fn a_session_ended_on_two_nodes_at_once_leaves_once() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((log, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let mut sessions = Vec::new();
        for i in 0..20 {
            let session = SessionId::new_v4();
            on_a.join(session, &name(&format!("u{i}")), LEASE)
                .await
                .unwrap();
            sessions.push(session);
        }

        // Act
        let mut leaves = Vec::new();
        for &session in &sessions {
            leaves.push(on_a.leave(session));
            leaves.push(on_b.leave(session));
        }
        let outcomes = futures_util::future::join_all(leaves).await;

        // Assert
        let written = outcomes.iter().filter(|o| matches!(o, Ok(Some(_)))).count();
        assert_eq!(written, 20, "one leave written per session");
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(events_of(&log, 40, "leave").await.len(), 20);
    }

    #[tokio::test]
    async fn an_expired_lease_is_reaped_once_by_racing_nodes_and_a_renewed_one_lives_on() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 100).unwrap(),
            RedisStore::connect(&redis.url(), 100).unwrap(),
        );
        let ((log, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let short = Duration::from_millis(300);
        let (gone, kept) = (SessionId::new_v4(), SessionId::new_v4());
        on_a.join(gone, &name("gone"), short).await.unwrap();
        on_a.join(kept, &name("kept"), short).await.unwrap();

        // Act: both nodes reap until the first lease has run out; the kept
        // session's node renews it meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut ended = 0;
        let online = loop {
            assert!(tokio::time::Instant::now() < deadline, "never reaped");
            assert!(on_a.renew(vec![kept], short).await.unwrap().is_empty());
            let (x, y) = tokio::join!(on_a.reap(), on_b.reap());
            let (x, y) = (x.unwrap(), y.unwrap());
            ended += x.ended + y.ended;
            if ended > 0 {
                break x.online.min(y.online);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        // Assert
        assert_eq!(ended, 1, "the expired session was reaped by one node");
        assert_eq!(online, 1, "the renewed session is still online");
        let leaves = events_of(&log, 3, "leave").await;
        assert_eq!(leaves.len(), 1);
        assert_eq!(leaves[0].name, name("gone"));
        assert_eq!(on_b.renew(vec![gone], short).await.unwrap(), [gone]);
        assert_eq!(on_b.lookup(kept).await.unwrap(), Lookup::Live(name("kept")));
        assert_eq!(on_b.lookup(gone).await.unwrap(), Lookup::Unknown);
    }

    #[tokio::test]
    async fn appends_are_stored_in_the_order_they_were_made_and_queued_ones_go_in_one_call() {
        // Arrange: Redis holds every write for a second, so the appends
        // made meanwhile queue behind the first.
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 1000).unwrap();
        let (_log, directory) = lobby_shared(&store);
        let session = SessionId::new_v4();
        directory.join(session, &name("ann"), LEASE).await.unwrap();
        let calls_before = store.stats().calls.load(Ordering::Relaxed);
        assert_eq!(redis.command("CLIENT PAUSE 1000 WRITE"), "+OK");

        // Act: 50 appends made one after another, then awaited last first.
        let appends: Vec<_> = (0..50)
            .map(|i| directory.append(session, name("ann"), say(&format!("m{i}")), LEASE, 0))
            .collect();
        let mut events = futures_util::future::join_all(appends.into_iter().rev()).await;
        events.reverse();

        // Assert: dense seqs in the order made, and at most two calls: the
        // first append, and every one queued behind it.
        let events: Vec<Arc<Event>> = events.into_iter().map(Result::unwrap).collect();
        let first = events[0].seq;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.seq, first + i as Seq);
            assert!(
                event.json().contains(&format!("\"m{i}\"")),
                "{}",
                event.json()
            );
        }
        let calls = store.stats().calls.load(Ordering::Relaxed) - calls_before;
        assert!(calls <= 2, "{calls} calls for 50 appends");
    }

    #[tokio::test]
    async fn a_session_rate_limit_holds_across_nodes() {
        // Arrange
        let redis = RedisServer::start();
        let (a, b) = (
            RedisStore::connect(&redis.url(), 1000).unwrap(),
            RedisStore::connect(&redis.url(), 1000).unwrap(),
        );
        let ((_, on_a), (_, on_b)) = (lobby_shared(&a), lobby_shared(&b));
        let session = SessionId::new_v4();
        on_a.join(session, &name("fast"), LEASE).await.unwrap();

        // Act: 40 events at once, alternating nodes, at 5 a second.
        let mut appends = Vec::new();
        for i in 0..40 {
            let node = if i % 2 == 0 { &on_a } else { &on_b };
            appends.push(node.append(session, name("fast"), say("x"), LEASE, 5));
        }
        let outcomes = futures_util::future::join_all(appends).await;

        // Assert: the burst (twice the rate) and whatever refilled meanwhile,
        // not a burst per node.
        let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
        assert!((10..=12).contains(&accepted), "accepted {accepted}");
        assert!(outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|e| e.code() == "rate_limited"));
    }

    #[tokio::test]
    async fn a_session_is_found_in_its_own_room_and_told_apart_in_another() {
        // Arrange
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 100).unwrap();
        let (_, lobby) = lobby_shared(&store);
        let other = store
            .open(&RoomName::parse("other").unwrap())
            .unwrap()
            .directory;
        let session = SessionId::new_v4();
        lobby.join(session, &name("ann"), LEASE).await.unwrap();

        // Act
        let here = lobby.lookup(session).await.unwrap();
        let there = other.lookup(session).await.unwrap();
        let nobody = lobby.lookup(SessionId::new_v4()).await.unwrap();
        let refused = other
            .append(session, name("ann"), say("x"), LEASE, 0)
            .await
            .unwrap_err();

        // Assert
        assert_eq!(here, Lookup::Live(name("ann")));
        assert_eq!(there, Lookup::Elsewhere(RoomName::lobby()));
        assert_eq!(nobody, Lookup::Unknown);
        assert_eq!(refused.code(), "unknown_session", "{refused}");
    }

    #[tokio::test]
    async fn an_open_room_keeps_its_keys_in_redis_for_a_week_from_its_last_reap() {
        // Arrange
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 100).unwrap();
        let (log, directory) = lobby_shared(&store);
        log.append(name("ann"), say("hi")).await.unwrap();
        let stream = Keys::of(&RoomName::lobby()).stream;
        let before = redis.command(&format!("PTTL {stream}"));

        // Act
        directory.reap().await.unwrap();

        // Assert
        assert_eq!(before, ":-1", "kept for good until a node reaps");
        let ttl: u64 = redis.command(&format!("PTTL {stream}"))[1..]
            .parse()
            .unwrap();
        let week = millis(ROOM_KEPT_FOR);
        assert!(ttl <= week && ttl > week - 60_000, "{ttl}");
    }
}
