//! Each room's log as this node sees it: [`RedisLog`], an in-process window
//! of the stream in Redis, kept by a mirror task that follows the stream
//! with blocking reads, and fed by a writer task that stores the room's
//! appends in groups (see "Appends", "Reads" and "Epochs and lost data" in
//! [`crate::store::redis`]).
//!
//! It owns the window, the following and the writing; the sessions are the
//! directory's, and it knows nothing of rooms, presence or HTTP.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Script};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::core::directory::{idempotency_key, SENT_IDS, SENT_ID_BYTES};
use crate::core::log::{
    now_millis, Batch, Epoch, Event, EventBody, EventLog, LogError, MemoryLog, Seq, MAX_BATCH,
    RECENT_MESSAGES,
};
use crate::core::names::{Name, RoomName};
use crate::core::presence::SessionId;
use crate::store::redis::scripts::Keys;
use crate::store::redis::{
    millis, unreachable_redis, RedisStats, StoreShared, CONNECT_TIMEOUT, OPEN_TIMEOUT,
    REDIS_TIMEOUT, RETRY,
};

/// How long a mirror's `XREAD` blocks before it checks the epoch, in ms.
const BLOCK_MS: u64 = 2_000;
/// How long an append waits for the node's own mirror to hold the event
/// before it answers with the event as Redis returned it.
const MIRROR_WAIT: Duration = Duration::from_secs(2);

/// One room's log in Redis, as this node sees it.
pub struct RedisLog {
    pub(super) mirror: Arc<Mirror>,
    /// Stops the mirror task when the room is closed on this node.
    _stop: DropGuard,
}

/// The in-process side of one room's log, shared by the [`RedisLog`] and
/// its mirror task.
pub(super) struct Mirror {
    pub(super) keys: Keys,
    pub(super) store: Arc<StoreShared>,
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
    /// made. Unbounded as a channel: what it holds is bounded in bytes by
    /// `queued` (see [`Held`]).
    appends: mpsc::UnboundedSender<Queued>,
    /// Bytes of appends the room's writer holds now, queued or being
    /// written: at most [`QueueLimits::room_bytes`].
    ///
    /// [`QueueLimits::room_bytes`]: super::QueueLimits::room_bytes
    queued: Arc<AtomicUsize>,
}

/// One append, queued for the room's writer.
struct Queued {
    /// The event's JSON with `"seq":0`, and whether it is a chat message.
    json: String,
    message: bool,
    /// The session it is from, with its lease and rate limit, if any.
    from: Option<(SessionId, Duration, u32)>,
    /// Its idempotency key (a chat message's `id`), or empty.
    key: String,
    /// Where the writer answers.
    done: oneshot::Sender<Result<Stored, LogError>>,
    /// Its bytes of the room's and the node's bounds, until it is answered.
    held: Held,
}

impl Queued {
    /// Gives back its bytes, then answers: whoever hears the answer finds
    /// them given back.
    fn answer(self, answer: Result<Stored, LogError>) {
        let Queued { done, held, .. } = self;
        drop(held);
        let _ = done.send(answer);
    }
}

/// The bytes one append holds of its room's queue bound and its node's,
/// taken when it is queued and given back when it is dropped: once the
/// writer has answered it, or with the queue.
struct Held {
    bytes: usize,
    room: Arc<AtomicUsize>,
    node: Arc<RedisStats>,
}

impl Held {
    /// Takes `bytes` of the room's and the node's bounds, or nothing if
    /// either would pass its limit.
    fn take(mirror: &Mirror, bytes: usize) -> Option<Held> {
        let limits = mirror.store.queue_limits;
        let node = &mirror.store.stats;
        if !take_bytes(&mirror.queued, bytes, limits.room_bytes) {
            return None;
        }
        if !take_bytes(&node.queued_bytes, bytes, limits.node_bytes) {
            mirror.queued.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        Some(Held {
            bytes,
            room: mirror.queued.clone(),
            node: node.clone(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.room.fetch_sub(self.bytes, Ordering::AcqRel);
        self.node
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Adds `bytes` to `held` if that stays within `limit`.
fn take_bytes(held: &AtomicUsize, bytes: usize, limit: usize) -> bool {
    held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
        now.checked_add(bytes).filter(|&then| then <= limit)
    })
    .is_ok()
}

/// What [`APPEND`] did with one event.
///
/// [`APPEND`]: super::scripts::APPEND
enum Stored {
    /// Stored it as this seq and JSON.
    Appended(Seq, String),
    /// Its session sent its idempotency key before, stored as this seq.
    Repeated(Seq),
    /// Refused its session with this code.
    Refused(String),
}

/// What became of an append made through the room's writer.
pub(super) enum Answer {
    /// Stored as this event.
    Stored(Arc<Event>),
    /// Sent before by its session, with the same `id`, and stored then as
    /// this seq: not stored again.
    Repeated(Seq),
    /// Refused, its session with this code.
    Refused(String),
}

/// The most appends one [`APPEND`] call takes: more wait for the next.
///
/// [`APPEND`]: super::scripts::APPEND
const MAX_GROUP: usize = 256;

impl RedisLog {
    pub(super) fn open(store: Arc<StoreShared>, room: &RoomName) -> io::Result<RedisLog> {
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
            queued: Arc::default(),
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
            self.store.budget.clone(),
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
                self.store.budget.clone(),
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
    /// which may refuse it with a code, and against the idempotency keys it
    /// sent last. The append is queued when this is called, so appends
    /// called one after another are stored in that order, however their
    /// futures are awaited.
    pub(super) fn append(
        self: &Arc<Self>,
        from: Option<(SessionId, Duration, u32)>,
        name: Name,
        body: EventBody,
    ) -> BoxFuture<'static, Result<Answer, LogError>> {
        let message = matches!(body, EventBody::Message { .. });
        let key = match from {
            Some(_) => idempotency_key(&body).unwrap_or_default().to_owned(),
            None => String::new(),
        };
        // The script puts the seq in place of this 0.
        let json = Event::new(0, now_millis(), name, body).json().to_owned();
        let bytes = json.len() + key.len() + std::mem::size_of::<Queued>();
        let Some(held) = Held::take(self, bytes) else {
            // Redis is slow or gone and the writer holds its fill: refused
            // now, never buffered.
            return Box::pin(std::future::ready(Err(LogError::Unavailable(
                "the room's queue to Redis is full".into(),
            ))));
        };
        let (done, stored) = oneshot::channel();
        let queued = self.appends.send(Queued {
            json,
            message,
            from,
            key,
            done,
            held,
        });
        let mirror = self.clone();
        Box::pin(async move {
            let stopped = || LogError::Unavailable("the Redis store has stopped".into());
            queued.map_err(|_| stopped())?;
            Ok(match stored.await.map_err(|_| stopped())?? {
                Stored::Appended(seq, json) => Answer::Stored(mirror.settled(seq, &json).await),
                Stored::Repeated(seq) => Answer::Repeated(seq),
                Stored::Refused(code) => Answer::Refused(code),
            })
        })
    }

    /// The room's writer: takes every append queued while its last call
    /// ran, up to [`MAX_GROUP`], and stores them with one [`APPEND`] call,
    /// for as long as the mirror lives (the log's, or the directory's that
    /// shares it). One busy socket's messages, or many sockets', cost one
    /// round trip to Redis per group, not one each; and readers get the
    /// group from one `XREAD`, so they write it in one batch.
    ///
    /// [`APPEND`]: super::scripts::APPEND
    async fn write_appends(mirror: Weak<Mirror>, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
            let Some(mirror) = mirror.upgrade() else {
                return;
            };
            let mut args = Vec::with_capacity(2 + group.len() * 6);
            args.extend([SENT_IDS.to_string(), SENT_ID_BYTES.to_string()]);
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
                    std::mem::take(&mut queued.key),
                ]);
            }
            match mirror.write_group(&args, group.len()).await {
                Ok(replies) => {
                    for (queued, reply) in group.drain(..).zip(replies) {
                        queued.answer(Ok(reply));
                    }
                }
                Err(err) => {
                    let unavailable = matches!(err, LogError::Unavailable(_));
                    for queued in group.drain(..) {
                        let err = err.to_string();
                        queued.answer(Err(if unavailable {
                            LogError::Unavailable(err)
                        } else {
                            LogError::Storage(err)
                        }));
                    }
                }
            }
        }
    }

    /// Runs [`APPEND`] on the `args` of a group of `count` appends, once
    /// more after a snapshot if Redis has another epoch than the window.
    /// Returns what it did with each append.
    ///
    /// [`APPEND`]: super::scripts::APPEND
    async fn write_group(&self, args: &[String], count: usize) -> Result<Vec<Stored>, LogError> {
        for _ in 0..2 {
            let reply: Vec<(i64, String)> = self.call(&self.store.scripts.append, args).await?;
            if let [(0, epoch)] = reply.as_slice() {
                self.epoch_changed(epoch).await;
                continue;
            }
            if reply.len() != count {
                return Err(LogError::Storage(
                    "APPEND answered for another number of events".into(),
                ));
            }
            return reply
                .into_iter()
                .map(|(code, text)| match (code, Seq::try_from(code)) {
                    (_, Ok(seq)) if seq > 0 => Ok(Stored::Appended(seq, text)),
                    (-2, _) => text.parse().map(Stored::Repeated).map_err(|_| {
                        LogError::Storage(format!("APPEND answered a seq that is none: {text:?}"))
                    }),
                    _ => Ok(Stored::Refused(text)),
                })
                .collect();
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
    ///
    /// [`JOIN`]: super::scripts::JOIN
    /// [`LEAVE`]: super::scripts::LEAVE
    pub(super) async fn write(
        &self,
        script: &Script,
        args: &[String],
    ) -> Result<Written, LogError> {
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
    pub(super) async fn call<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[String],
    ) -> Result<T, LogError> {
        let mut invocation = self.keys.invoke(script);
        invocation
            .arg(self.window.read().epoch().as_str())
            .arg(Epoch::random().as_str())
            .arg(self.store.limits());
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

/// What a writing script did.
pub(super) enum Written {
    /// It stored this event; the rest of its reply follows.
    Stored(Arc<Event>, Vec<redis::Value>),
    /// It refused: the name is taken ([`JOIN`]), the session ended already
    /// ([`LEAVE`]).
    ///
    /// [`JOIN`]: super::scripts::JOIN
    /// [`LEAVE`]: super::scripts::LEAVE
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
                Answer::Stored(event) => Ok(event),
                // Only a session's appends are checked for keys sent before.
                Answer::Repeated(seq) => Err(LogError::Storage(format!(
                    "an append from no session was taken as sent before, as {seq}"
                ))),
                Answer::Refused(code) => Err(LogError::Storage(format!(
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
    use crate::core::error::ApiError;
    use crate::core::log::{Cursor, Reader};
    use crate::store::redis::testing::{lobby, lobby_shared, name, say, until_head, LEASE};
    use crate::store::redis::{QueueLimits, RedisStore};
    use futures_util::FutureExt;
    use pushlab_testkit::RedisServer;

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

    /// Makes appends of about 2 KB to `log` while Redis holds every write,
    /// `count` of them: those taken (still waiting), and how many were
    /// refused at once, each with `store_unavailable`.
    fn fill(log: &RedisLog, count: usize) -> (Vec<AppendingEvent>, usize) {
        let text = "x".repeat(2_000);
        let (mut taken, mut refused) = (Vec::new(), 0);
        for _ in 0..count {
            let mut append = log.append(name("ann"), say(&text));
            match (&mut append).now_or_never() {
                None => taken.push(append),
                Some(Err(err)) => {
                    assert_eq!(ApiError::from(err).code(), "store_unavailable");
                    refused += 1;
                }
                Some(Ok(event)) => panic!("stored while Redis holds writes: {}", event.seq),
            }
        }
        (taken, refused)
    }

    type AppendingEvent = BoxFuture<'static, Result<Arc<Event>, LogError>>;

    #[tokio::test]
    async fn appends_past_a_room_s_or_the_node_s_queue_bytes_are_refused_at_once_while_redis_stalls(
    ) {
        // Arrange: small bounds, two rooms, and a Redis that holds every
        // write for a second.
        let redis = RedisServer::start();
        let limits = QueueLimits {
            room_bytes: 64 * 1024,
            node_bytes: 96 * 1024,
        };
        let store = RedisStore::connect_bounded(
            &redis.url(),
            1000,
            crate::core::log::LogBudget::unlimited(),
            limits,
        )
        .unwrap();
        let room = |n: &str| RedisLog::open(store.shared.clone(), &RoomName::parse(n).unwrap());
        let (first, second) = (room("first").unwrap(), room("second").unwrap());
        assert_eq!(redis.command("CLIENT PAUSE 1000 WRITE"), "+OK");

        // Act: far more than either bound, into one room and then the other.
        let (taken_first, refused_first) = fill(&first, 200);
        let (taken_second, refused_second) = fill(&second, 200);
        let held = (
            first.mirror.queued.load(Ordering::Acquire),
            second.mirror.queued.load(Ordering::Acquire),
            store.shared.stats.queued_bytes.load(Ordering::Acquire),
        );
        let stored = futures_util::future::join_all(taken_first.into_iter().chain(taken_second))
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count();

        // Assert: each room held at most its bound, the node at most its
        // own, the rest was refused, and all that was taken is stored.
        assert!(held.0 <= limits.room_bytes, "{held:?}");
        assert!(
            held.0 > limits.room_bytes - 4 * 1024,
            "the room's bound filled: {held:?}"
        );
        assert!(held.2 <= limits.node_bytes, "{held:?}");
        assert_eq!(held.0 + held.1, held.2, "the node counts every room");
        assert!(
            held.1 < limits.room_bytes / 2 + 4 * 1024,
            "the node's bound came first: {held:?}"
        );
        assert_eq!(refused_first + refused_second + stored, 400);
        assert!(refused_first > 100 && refused_second > 150);
        assert_eq!(
            store.shared.stats.queued_bytes.load(Ordering::Acquire),
            0,
            "all given back"
        );
    }

    #[tokio::test]
    async fn appends_are_stored_in_the_order_they_were_made_and_queued_ones_go_in_one_call() {
        // Arrange: Redis holds every write for a second, so the appends
        // made meanwhile queue behind the first.
        let redis = RedisServer::start();
        let store = RedisStore::connect(&redis.url(), 1000).unwrap();
        let (log, directory) = lobby_shared(&store);
        let session = SessionId::new_v4();
        directory
            .join(session, &name("ann"), LEASE, false)
            .await
            .unwrap();
        let calls_before = store.shared.stats.calls.load(Ordering::Relaxed);
        assert_eq!(redis.command("CLIENT PAUSE 1000 WRITE"), "+OK");

        // Act: 50 appends made one after another, then awaited last first.
        let appends: Vec<_> = (0..50)
            .map(|i| directory.append(session, name("ann"), say(&format!("m{i}")), LEASE, 0))
            .collect();
        let mut seqs = futures_util::future::join_all(appends.into_iter().rev()).await;
        seqs.reverse();

        // Assert: dense seqs in the order made, and at most two calls: the
        // first append, and every one queued behind it.
        let seqs: Vec<Seq> = seqs.into_iter().map(Result::unwrap).collect();
        let first = seqs[0];
        let events = log.read_since(first - 1, None).events;
        assert_eq!(events.len(), 50);
        for (i, event) in events.iter().enumerate() {
            assert_eq!(seqs[i], first + i as Seq);
            assert_eq!(event.seq, seqs[i]);
            assert!(
                event.json().contains(&format!("\"m{i}\"")),
                "{}",
                event.json()
            );
        }
        let calls = store.shared.stats.calls.load(Ordering::Relaxed) - calls_before;
        assert!(calls <= 2, "{calls} calls for 50 appends");
    }
}
