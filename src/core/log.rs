//! The message log: one append-only, totally ordered sequence of events.
//!
//! Everything pushlab serves comes from here. A transport reads a batch after
//! its cursor, waits for newer events, and appends what its client sends; it
//! does nothing else with the log. This module knows nothing of HTTP, actix or
//! sockets, so a store backed by something other than memory (Redis streams,
//! say) can stand behind the same [`EventLog`] trait without touching them.
//!
//! Each event is serialised to JSON exactly once, when it is appended, and the
//! same bytes are then handed to every reader on every transport.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::core::error::ApiError;
use crate::core::names::Name;

/// A position in the log. The first event has seq 1; 0 means "before everything".
pub type Seq = u64;

/// How many chat messages are kept for late joiners, whatever else is trimmed.
pub const RECENT_MESSAGES: usize = 100;

/// The most bytes of event JSON the chat history for late joiners keeps, in
/// bytes; older messages go first, though the newest is always kept. The
/// welcome sends at most this much of it, so keeping more would be waste.
pub const RECENT_MESSAGE_BYTES: usize = 64 * 1024;

/// What one event costs beyond the allocations of its JSON and of its text
/// and id, in bytes: the `Arc<Event>` allocation (the struct and the Arc's
/// counts, 136 B on x86-64, in jemalloc's 160 B size class), its slot in the
/// window, and the shared buffer's header. Checked against RSS in
/// `docs/benchmarks.md` ("What a full room costs").
pub const EVENT_OVERHEAD: usize = 256;

/// The JSON of an event besides its name, text and id, at most, in bytes:
/// the keys, a 20-digit seq, a 13-digit ts, the type, the punctuation, and a
/// mousemove's two numbers. The JSON is written into a buffer this much
/// larger than those, so it is allocated once, at the size it needs.
const JSON_FRAME: usize = 128;

/// The bytes the allocator hands out for `len` bytes: jemalloc's size
/// classes, four to each doubling, 16 B apart at the smallest.
fn allocated(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let spacing = (len.next_power_of_two() / 8).max(16);
    len.div_ceil(spacing) * spacing
}

/// The most events one read returns; a reader with more to catch up reads again.
pub const MAX_BATCH: usize = 1000;

/// A random id for one incarnation of the log, made when it is created.
///
/// A client sends it back with its cursor. A cursor from another epoch means
/// nothing here, so it is reported as a gap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A new random epoch.
    pub fn random() -> Self {
        Epoch(uuid::Uuid::new_v4().simple().to_string().into())
    }

    /// An epoch with a known value, as restored from disk.
    pub fn from_string(value: String) -> Self {
        Epoch(value.into())
    }

    /// The epoch as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened, without the position the log gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventBody {
    /// A user came online. An observer (a page's own helper session,
    /// registered with `observer: true`) is marked, so that clients leave it
    /// out of who is online.
    Join {
        /// Whether the session is an observer; written only when true.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        observer: bool,
    },
    /// A chat message. `id` is the sender's own tag, echoed so it can match
    /// the event to its pending copy.
    Message {
        /// The trimmed text, 1 to 2000 characters.
        text: String,
        /// The client-chosen id, at most 64 characters.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A cursor moved; `x` and `y` are fractions of the shared canvas.
    Mousemove {
        /// Horizontal position in [0, 1].
        x: f64,
        /// Vertical position in [0, 1].
        y: f64,
    },
    /// A user went offline.
    Leave,
}

impl EventBody {
    /// The wire name of this kind of event.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Join { .. } => "join",
            EventBody::Message { .. } => "message",
            EventBody::Mousemove { .. } => "mousemove",
            EventBody::Leave => "leave",
        }
    }
}

/// One event in the log, immutable once appended.
#[derive(Debug)]
pub struct Event {
    /// Its position: one more than the event before it.
    pub seq: Seq,
    /// Server time when it was appended, in Unix milliseconds.
    pub ts: u64,
    /// Who it is about.
    pub name: Name,
    /// What happened.
    pub body: EventBody,
    /// The event as JSON, made once at append and shared by every reader.
    json: ByteString,
}

/// The wire shape of an event: `seq`, `ts`, `type` and `name` first, then
/// the fields of its kind, so every event reads the same way.
struct EventWire<'a> {
    seq: Seq,
    ts: u64,
    name: &'a str,
    body: &'a EventBody,
}

impl Serialize for EventWire<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("ts", &self.ts)?;
        map.serialize_entry("type", self.body.kind())?;
        map.serialize_entry("name", self.name)?;
        match self.body {
            EventBody::Join { observer } => {
                if *observer {
                    map.serialize_entry("observer", &true)?;
                }
            }
            EventBody::Leave => {}
            EventBody::Message { text, id } => {
                map.serialize_entry("text", text)?;
                if let Some(id) = id {
                    map.serialize_entry("id", id)?;
                }
            }
            EventBody::Mousemove { x, y } => {
                map.serialize_entry("x", x)?;
                map.serialize_entry("y", y)?;
            }
        }
        map.end()
    }
}

impl Event {
    /// Builds an event and its JSON form.
    pub fn new(seq: Seq, ts: u64, name: Name, body: EventBody) -> Self {
        let wire = EventWire {
            seq,
            ts,
            name: name.as_str(),
            body: &body,
        };
        let mut json = Vec::with_capacity(json_capacity(&name, &body));
        // Serialising plain strings and finite numbers cannot fail.
        serde_json::to_writer(&mut json, &wire).expect("an event always serialises");
        let json = String::from_utf8(json).expect("serde_json writes UTF-8");
        Event {
            seq,
            ts,
            name,
            body,
            json: json.into(),
        }
    }

    /// The event's JSON text, exactly as every transport sends it.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Reads an event back from the JSON [`Event::json`] made.
    pub fn from_json(json: &str) -> Result<Event, String> {
        #[derive(Deserialize)]
        struct Stored {
            seq: Seq,
            ts: u64,
            name: String,
            #[serde(flatten)]
            body: EventBody,
        }
        let stored: Stored = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let name = Name::parse(&stored.name).map_err(|e| e.to_string())?;
        Ok(Event::new(stored.seq, stored.ts, name, stored.body))
    }

    /// The same JSON as a shared buffer: cloning it copies no bytes.
    pub fn json_shared(&self) -> ByteString {
        self.json.clone()
    }

    /// The bytes this event takes in memory, as windows count them against
    /// their budgets: the allocations of its JSON and of the text and id it
    /// also keeps parsed, its name, and [`EVENT_OVERHEAD`].
    pub fn cost(&self) -> usize {
        let fields = match &self.body {
            EventBody::Message { text, id } => {
                allocated(text.len()) + allocated(id.as_ref().map_or(0, String::len))
            }
            _ => 0,
        };
        let json = json_capacity(&self.name, &self.body).max(self.json.len());
        allocated(json) + fields + allocated(self.name.as_str().len() + 16) + EVENT_OVERHEAD
    }
}

/// The buffer an event's JSON is written into: enough for it unless its
/// text needs escaping.
fn json_capacity(name: &Name, body: &EventBody) -> usize {
    let fields = match body {
        EventBody::Message { text, id } => text.len() + id.as_ref().map_or(0, String::len),
        _ => 0,
    };
    JSON_FRAME + name.as_str().len() + fields
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The text was produced by serde_json, so it always parses back.
        let raw: &RawValue = serde_json::from_str(&self.json).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// The answer to "what came after my cursor?".
#[derive(Debug, Clone)]
pub struct Batch {
    /// Events after the cursor, ascending, at most [`MAX_BATCH`].
    pub events: Vec<Arc<Event>>,
    /// The seq of the last event returned, or the reader's cursor if none was.
    pub cursor: Seq,
    /// True when events after the reader's cursor are gone: trimmed from the
    /// window, or the cursor came from another epoch. The batch then starts at
    /// the oldest event still kept.
    pub gap: bool,
    /// The log's newest seq when the batch was read, taken under the same
    /// lock, so a reader can tell whether more is waiting without asking
    /// the log again.
    pub head: Seq,
}

/// Why an append failed. Only stores with storage behind them fail.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store could not make the event durable.
    #[error("the event store failed: {0}")]
    Storage(String),
    /// The store cannot be reached (Redis is down): nothing was stored, or
    /// it cannot be told whether it was, and the client may try again.
    #[error("the event store is unreachable: {0}")]
    Unavailable(String),
    /// The node's windows hold `--total-bytes` between them, and emptying
    /// this room's window would not make room: nothing was stored, and the
    /// client may try again once other rooms trim or close.
    #[error("the node's event windows are full")]
    Full,
}

impl From<LogError> for ApiError {
    /// An append that failed: unreachable storage may be tried again; any
    /// other failure is internal, and logged where it happened.
    fn from(err: LogError) -> Self {
        match err {
            LogError::Unavailable(_) => ApiError::StoreUnavailable,
            LogError::Full => ApiError::StoreFull,
            LogError::Storage(_) => ApiError::Internal,
        }
    }
}

/// The small interface every transport uses.
///
/// Reads are synchronous: a store always serves them from the window it keeps
/// in this process (a Redis-backed store would mirror its stream here). Appends
/// are asynchronous, because a durable store acknowledges only once the event
/// is safe.
pub trait EventLog: Send + Sync + 'static {
    /// This incarnation's epoch. A store whose data can be lost behind its
    /// back (Redis) may change it; every read after that is a gap.
    fn epoch(&self) -> Epoch;

    /// The seq of the newest event, or 0 when the log is empty.
    fn head(&self) -> Seq;

    /// Appends one event and resolves to it once it is in the log.
    ///
    /// The event's place in line is taken when this is called, not when the
    /// future is first polled: appends called one after another are stored
    /// in that order, however their futures are awaited.
    fn append(
        &self,
        name: Name,
        body: EventBody,
    ) -> BoxFuture<'static, Result<Arc<Event>, LogError>>;

    /// The events after `since`, read against the reader's `epoch` if it sent one.
    fn read_since(&self, since: Seq, epoch: Option<&str>) -> Batch;

    /// Resolves as soon as the log holds an event with seq greater than `seq`.
    ///
    /// It is driven by notification: a waiter costs no CPU while it waits.
    fn wait_after(&self, seq: Seq) -> BoxFuture<'static, ()>;

    /// The last [`RECENT_MESSAGES`] chat messages, oldest first, kept even
    /// after the event window has moved past them.
    fn recent_messages(&self) -> Vec<Arc<Event>>;
}

/// Server time in Unix milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The bytes every window of a node holds between them, and their cap
/// (`--total-bytes`). Windows add what they keep and take back what they
/// trim or drop; an addition that would pass the cap is refused.
#[derive(Debug)]
pub struct NodeBytes {
    /// Bytes held now, by [`Event::cost`].
    used: AtomicUsize,
    /// The cap, in bytes.
    total: usize,
}

impl NodeBytes {
    /// A node whose windows may hold `total` bytes between them.
    pub fn new(total: usize) -> Arc<NodeBytes> {
        Arc::new(NodeBytes {
            used: AtomicUsize::new(0),
            total,
        })
    }

    /// The bytes every window holds now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Adds `bytes` if that keeps the node within its cap.
    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.total)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// How many bytes of events a window may keep: its own budget, and the
/// node's total it shares with every other window.
#[derive(Debug, Clone)]
pub struct LogBudget {
    /// The most one window keeps, in bytes by [`Event::cost`]
    /// (`--room-bytes`). The newest event is kept whatever its size.
    pub room_bytes: usize,
    /// The node's total (`--total-bytes`), shared by every window.
    pub node: Arc<NodeBytes>,
}

impl LogBudget {
    /// Windows of at most `room_bytes` each, and `total_bytes` together.
    pub fn new(room_bytes: usize, total_bytes: usize) -> LogBudget {
        LogBudget {
            room_bytes,
            node: NodeBytes::new(total_bytes),
        }
    }

    /// No bound in bytes: only the count of events bounds the window.
    pub fn unlimited() -> LogBudget {
        LogBudget::new(usize::MAX, usize::MAX)
    }
}

/// The in-memory log: a bounded window of recent events.
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<Shared>,
}

struct Shared {
    /// Fixed at creation; see [`Epoch`].
    epoch: Epoch,
    /// The events themselves and the chat history, under one lock so that a
    /// seq is handed out and stored in one step.
    state: RwLock<Window>,
    /// The newest seq. Waiters watch it; it only ever grows.
    head: watch::Sender<Seq>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A closed room gives its bytes back to the node.
        let window = self.state.get_mut();
        window.budget.node.release(window.bytes);
    }
}

struct Window {
    /// The last events, oldest first, with consecutive seqs: at most
    /// `capacity` of them and `budget.room_bytes` of them, and only what
    /// the node's total allows.
    events: VecDeque<Arc<Event>>,
    /// How many events the window keeps (`--history`).
    capacity: usize,
    /// The bytes the window may keep, and the node's total.
    budget: LogBudget,
    /// What `events` cost, by [`Event::cost`]; counted in `budget.node`.
    bytes: usize,
    /// The seq the next append gets.
    next_seq: Seq,
    /// The last [`RECENT_MESSAGES`] chat messages, oldest first, at most
    /// [`RECENT_MESSAGE_BYTES`] of JSON (the newest always).
    messages: VecDeque<Arc<Event>>,
    /// The JSON bytes of `messages`.
    message_bytes: usize,
}

/// What an insert does with an event the node's total has no room for,
/// even once the room's window is empty.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Refuse it: the seq is not used ([`LogError::Full`]).
    Refuse,
    /// It is stored elsewhere already (a journal, Redis): its seq is used
    /// and the window moves past it without keeping it, so readers behind
    /// get a gap.
    PassOver,
}

impl Window {
    /// Drops the oldest event, giving its bytes back. False if empty.
    fn trim_oldest(&mut self) -> bool {
        match self.events.pop_front() {
            Some(old) => {
                let cost = old.cost();
                self.bytes -= cost;
                self.budget.node.release(cost);
                true
            }
            None => false,
        }
    }

    /// Keeps `message` in the chat history, dropping the oldest past
    /// [`RECENT_MESSAGES`] or [`RECENT_MESSAGE_BYTES`].
    fn remember(&mut self, message: Arc<Event>) {
        self.message_bytes += message.json().len();
        self.messages.push_back(message);
        while self.messages.len() > RECENT_MESSAGES
            || (self.message_bytes > RECENT_MESSAGE_BYTES && self.messages.len() > 1)
        {
            if let Some(old) = self.messages.pop_front() {
                self.message_bytes -= old.json().len();
            }
        }
    }
}

impl MemoryLog {
    /// An empty log keeping the last `capacity` events, with a random
    /// epoch and no bound in bytes.
    pub fn new(capacity: usize) -> Self {
        Self::bounded(capacity, LogBudget::unlimited())
    }

    /// An empty log keeping the last `capacity` events within `budget`,
    /// with a random epoch.
    pub fn bounded(capacity: usize, budget: LogBudget) -> Self {
        Self::with_epoch(capacity, budget, Epoch::random())
    }

    /// An empty log with a given epoch.
    pub fn with_epoch(capacity: usize, budget: LogBudget, epoch: Epoch) -> Self {
        let capacity = capacity.max(1);
        let (head, _) = watch::channel(0);
        MemoryLog {
            shared: Arc::new(Shared {
                epoch,
                state: RwLock::new(Window {
                    events: VecDeque::with_capacity(capacity.min(1 << 16)),
                    capacity,
                    budget,
                    bytes: 0,
                    next_seq: 1,
                    messages: VecDeque::with_capacity(RECENT_MESSAGES),
                    message_bytes: 0,
                }),
                head,
            }),
        }
    }

    /// Appends at once, stamping the event with the current time. Fails
    /// with [`LogError::Full`] when the node's total has no room for it
    /// even once this window is empty.
    pub fn append_now(&self, name: Name, body: EventBody) -> Result<Arc<Event>, LogError> {
        let inserted = self.insert_if(
            |seq| Some(Event::new(seq, now_millis(), name, body)),
            WhenFull::Refuse,
        )?;
        Ok(inserted.expect("an unconditional insert always makes its event"))
    }

    /// An empty log that continues an earlier one: the next event gets
    /// `next_seq`, and `messages` (oldest first) are its chat history.
    pub fn resume(
        capacity: usize,
        budget: LogBudget,
        epoch: Epoch,
        next_seq: Seq,
        messages: Vec<Arc<Event>>,
    ) -> Self {
        let log = Self::with_epoch(capacity, budget, epoch);
        {
            let mut window = log.shared.state.write();
            window.next_seq = next_seq.max(1);
            for message in messages {
                window.remember(message);
            }
        }
        log.shared.head.send_replace(next_seq.max(1) - 1);
        log
    }

    /// Puts an event already built (with its seq and ts) into the log, as a
    /// journal does once the event is durable. Its seq must be the next one.
    ///
    /// It is stored elsewhere already, so it is never refused: when the
    /// node's total has no room for it even once this window is empty, the
    /// window moves past it, and readers behind get a gap.
    pub fn restore(&self, event: Event) -> Result<Arc<Event>, LogError> {
        let seq = event.seq;
        let mut event = Some(event);
        let inserted = self.insert_if(
            |next| if seq == next { event.take() } else { None },
            WhenFull::PassOver,
        )?;
        inserted.ok_or_else(|| {
            LogError::Storage(format!("out of order: expected the next seq, found {seq}"))
        })
    }

    /// The bytes the window holds now, by [`Event::cost`]: at most the
    /// room's budget (or the one newest event, if that is larger).
    pub fn bytes(&self) -> usize {
        self.shared.state.read().bytes
    }

    /// The seq of the oldest event the window keeps, or of the next one
    /// when it keeps none: everything before it has been trimmed.
    pub fn oldest(&self) -> Seq {
        let window = self.shared.state.read();
        window.events.front().map_or(window.next_seq, |e| e.seq)
    }

    /// Whether an event costing `cost` could be kept now, trimming this
    /// window as far as it takes: a check before writing an event
    /// elsewhere, not a reservation.
    pub fn could_keep(&self, cost: usize) -> bool {
        let window = self.shared.state.read();
        let node = &window.budget.node;
        node.used().saturating_sub(window.bytes) + cost <= node.total()
    }

    /// Stores the event `build` makes for the next seq, if it makes one,
    /// trimming the oldest events past the window's count or bytes, and
    /// then as many as the node's total needs.
    fn insert_if(
        &self,
        build: impl FnOnce(Seq) -> Option<Event>,
        when_full: WhenFull,
    ) -> Result<Option<Arc<Event>>, LogError> {
        let event = {
            let mut window = self.shared.state.write();
            let seq = window.next_seq;
            let Some(event) = build(seq) else {
                return Ok(None);
            };
            let event = Arc::new(event);
            let cost = event.cost();
            while window.events.len() >= window.capacity
                || (window.bytes + cost > window.budget.room_bytes && !window.events.is_empty())
            {
                window.trim_oldest();
            }
            // The node's total, the one atomic step of an append: other
            // rooms' bytes are theirs to trim, so this room trims its own.
            let kept = loop {
                if window.budget.node.reserve(cost) {
                    break true;
                }
                if !window.trim_oldest() {
                    break false;
                }
            };
            if !kept && when_full == WhenFull::Refuse {
                return Err(LogError::Full);
            }
            window.next_seq += 1;
            if kept {
                window.bytes += cost;
                window.events.push_back(event.clone());
            } else {
                tracing::warn!(
                    seq,
                    "the node's event windows are full; an event stored elsewhere is passed over"
                );
            }
            if matches!(event.body, EventBody::Message { .. }) {
                window.remember(event.clone());
            }
            event
        };
        // Publish outside the lock. Appends can finish out of order, so the
        // head only ever moves forward.
        let seq = event.seq;
        self.shared.head.send_if_modified(|head| {
            if seq > *head {
                *head = seq;
                true
            } else {
                false
            }
        });
        Ok(Some(event))
    }
}

impl EventLog for MemoryLog {
    fn epoch(&self) -> Epoch {
        self.shared.epoch.clone()
    }

    fn head(&self) -> Seq {
        self.shared.state.read().next_seq - 1
    }

    fn append(
        &self,
        name: Name,
        body: EventBody,
    ) -> BoxFuture<'static, Result<Arc<Event>, LogError>> {
        Box::pin(std::future::ready(self.append_now(name, body)))
    }

    fn read_since(&self, since: Seq, epoch: Option<&str>) -> Batch {
        let window = self.shared.state.read();
        let head = window.next_seq - 1;
        let first = window.events.front().map_or(window.next_seq, |e| e.seq);
        let foreign_epoch = epoch.is_some_and(|e| e != self.shared.epoch.as_str());
        // A cursor ahead of the head cannot come from this epoch either.
        let reset = foreign_epoch || since > head;
        let gap = reset || since + 1 < first;
        let start = if gap { first } else { since + 1 };
        let skip = (start - first) as usize;
        let events: Vec<Arc<Event>> = window
            .events
            .iter()
            .skip(skip)
            .take(MAX_BATCH)
            .cloned()
            .collect();
        let cursor = match events.last() {
            Some(last) => last.seq,
            None if gap => start - 1,
            None => since,
        };
        Batch {
            events,
            cursor,
            gap,
            head,
        }
    }

    fn wait_after(&self, seq: Seq) -> BoxFuture<'static, ()> {
        let mut head = self.shared.head.subscribe();
        Box::pin(async move {
            // The sender lives as long as the log; if it is gone, so is the
            // server, and there is nothing left to wait for.
            let _ = head.wait_for(|head| *head > seq).await;
        })
    }

    fn recent_messages(&self) -> Vec<Arc<Event>> {
        self.shared.state.read().messages.iter().cloned().collect()
    }
}

/// Where a reader is: the seq of the last event it has, and the epoch that
/// seq belongs to, when it knows one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The last seq the reader has; 0 before everything.
    pub seq: Seq,
    /// The epoch the seq came from. A foreign one makes the first read a gap.
    pub epoch: Option<String>,
}

/// What one step of a [`Reader`] turned up.
#[derive(Debug, Default)]
pub struct Read {
    /// Set when events after the reader's cursor are gone (trimmed, or the
    /// cursor came from another epoch): the seq just before the first event
    /// that follows, which is where the reader now stands.
    pub gap: Option<Seq>,
    /// Events after the cursor, ascending.
    pub events: Vec<Arc<Event>>,
    /// Whether the log already holds events past these.
    pub more: bool,
}

/// One client's way through the log, the same for every transport.
///
/// It keeps the cursor, checks the client's epoch on its first read only,
/// applies the gap rule, stops partway through a batch when the transport's
/// budget is spent (the rest is read again from the cursor), and keeps one
/// wake-up subscription across polls. A transport only turns each [`Read`]
/// into its own wire shape.
pub struct Reader {
    log: Arc<dyn EventLog>,
    /// The last seq this reader has taken.
    cursor: Seq,
    /// The epoch the cursor belongs to: the client's until the first read,
    /// then the log's as it was then. Checked on every read, so a store
    /// whose epoch changes under a reader (Redis lost its data) gives it a
    /// gap instead of silently reusing its cursor.
    epoch: Option<String>,
    /// Resolves once the log has events after the cursor; kept until it
    /// fires or the cursor moves, so a reader subscribes once per wait.
    newer: Option<BoxFuture<'static, ()>>,
    /// Counts this reader among its room's while it lives.
    _counted: Option<Counted>,
}

/// One reader counted in a tally, until dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Reader {
    /// A reader over `log` that delivers what follows `from`.
    pub fn new(log: Arc<dyn EventLog>, from: Cursor) -> Self {
        Reader {
            log,
            cursor: from.seq,
            epoch: from.epoch.filter(|e| !e.is_empty()),
            newer: None,
            _counted: None,
        }
    }

    /// The same reader, counted in `tally` for as long as it lives.
    pub fn counted_in(mut self, tally: &Arc<AtomicUsize>) -> Self {
        tally.fetch_add(1, Ordering::Relaxed);
        self._counted = Some(Counted(tally.clone()));
        self
    }

    /// The last seq taken.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// The log's epoch, which every cursor this reader hands out belongs to.
    pub fn epoch(&self) -> Epoch {
        self.log.epoch()
    }

    /// Moves the cursor forward to `seq` (never back), as when a welcome
    /// has already described the log up to it.
    pub fn advance_to(&mut self, seq: Seq) {
        if seq > self.cursor {
            self.cursor = seq;
            self.newer = None;
        }
    }

    /// Reads what follows the cursor and moves past it, taking events while
    /// the JSON taken so far is under `budget` bytes. A budget of 0 takes no
    /// event (a gap is still reported); any other budget takes at least one.
    pub fn next(&mut self, budget: usize) -> Read {
        self.next_while(budget, |_| true)
    }

    /// As [`Reader::next`], but stops before the first event `ready` refuses
    /// (which stays after the cursor for a later read), as a transport that
    /// holds each event back for `--delay-ms` does.
    pub fn next_while(&mut self, budget: usize, mut ready: impl FnMut(&Event) -> bool) -> Read {
        // Taken before the read: if the epoch changes in between, the next
        // read is a gap (at worst a second one), never a silent skip.
        let epoch = self.log.epoch();
        let batch = self.log.read_since(self.cursor, self.epoch.as_deref());
        if self.epoch.as_deref() != Some(epoch.as_str()) {
            self.epoch = Some(epoch.as_str().to_owned());
        }
        let before = self.cursor;
        let Batch {
            mut events,
            cursor,
            gap,
            head,
        } = batch;
        let gap = gap.then(|| events.first().map_or(cursor, |e| e.seq - 1));
        if let Some(gap) = gap {
            self.cursor = gap;
        }
        // Keep the events that start under the budget; the batch's own
        // vector is the answer, so nothing is copied.
        let mut used = 0;
        let taken = events
            .iter()
            .take_while(|event| {
                let fits = used < budget && ready(event);
                used += event.json().len();
                fits
            })
            .count();
        events.truncate(taken);
        if let Some(last) = events.last() {
            self.cursor = last.seq;
        }
        if self.cursor != before {
            // The saved wake-up was for the old cursor.
            self.newer = None;
        }
        Read {
            gap,
            events,
            more: self.cursor < head,
        }
    }

    /// Resolves once the log holds an event after the cursor.
    pub fn poll_newer(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let (log, cursor) = (&self.log, self.cursor);
        let newer = self.newer.get_or_insert_with(|| log.wait_after(cursor));
        let ready = newer.as_mut().poll(cx);
        if ready.is_ready() {
            self.newer = None;
        }
        ready
    }

    /// Waits until the log holds an event after the cursor. Dropping the
    /// wait keeps its subscription for the next one.
    pub async fn newer(&mut self) {
        std::future::poll_fn(|cx| self.poll_newer(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    fn say(log: &MemoryLog, text: &str) -> Arc<Event> {
        log.append_now(
            name("alice"),
            EventBody::Message {
                text: text.into(),
                id: None,
            },
        )
        .unwrap()
    }

    /// Bob's message "hi" with the id "m1".
    fn bob_says_hi(log: &MemoryLog) -> Arc<Event> {
        let hi = EventBody::Message {
            text: "hi".into(),
            id: Some("m1".into()),
        };
        log.append_now(name("bob"), hi).unwrap()
    }

    fn mv(log: &MemoryLog) -> Arc<Event> {
        log.append_now(name("alice"), EventBody::Mousemove { x: 0.5, y: 0.5 })
            .unwrap()
    }

    fn reader(log: &MemoryLog, seq: Seq, epoch: Option<&str>) -> Reader {
        Reader::new(
            Arc::new(log.clone()),
            Cursor {
                seq,
                epoch: epoch.map(str::to_owned),
            },
        )
    }

    #[test]
    fn a_reader_takes_what_follows_its_cursor_and_moves_past_it() {
        let log = MemoryLog::new(10);
        for _ in 0..3 {
            mv(&log);
        }
        let mut reader = reader(&log, 1, None);

        let read = reader.next(usize::MAX);

        assert_eq!(
            read.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!((read.gap, read.more, reader.cursor()), (None, false, 3));
        assert!(reader.next(usize::MAX).events.is_empty());
    }

    #[test]
    fn a_reader_stops_when_its_budget_is_spent_and_says_there_is_more() {
        let log = MemoryLog::new(10);
        let one = mv(&log).json().len();
        for _ in 0..4 {
            mv(&log);
        }
        let mut reader = reader(&log, 0, None);

        let first = reader.next(one + 1);
        let nothing = reader.next(0);
        let rest = reader.next(usize::MAX);

        assert_eq!(first.events.len(), 2, "takes while under the budget");
        assert!(first.more);
        assert!(nothing.events.is_empty() && nothing.more);
        assert_eq!(rest.events.first().map(|e| e.seq), Some(3));
        assert!(!rest.more);
    }

    #[test]
    fn a_reader_holds_back_the_events_it_is_told_are_not_ready_and_takes_them_later() {
        let log = MemoryLog::new(10);
        for _ in 0..4 {
            mv(&log);
        }
        let mut reader = reader(&log, 0, None);

        let early = reader.next_while(usize::MAX, |event| event.seq <= 2);
        let later = reader.next_while(usize::MAX, |_| true);

        assert_eq!(
            early.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(early.more, "3 and 4 are still after the cursor");
        assert_eq!(
            later.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(reader.cursor(), 4);
    }

    #[test]
    fn a_reader_reports_a_gap_once_with_the_cursor_before_what_follows() {
        let log = MemoryLog::new(3);
        for _ in 0..10 {
            mv(&log);
        }
        let mut reader = reader(&log, 2, None);

        let read = reader.next(0);
        let again = reader.next(usize::MAX);

        assert_eq!(read.gap, Some(7));
        assert_eq!(reader.cursor(), 10);
        assert_eq!(again.gap, None);
        assert_eq!(again.events.first().map(|e| e.seq), Some(8));
    }

    #[test]
    fn a_reader_checks_the_epoch_on_its_first_read_only() {
        let log = MemoryLog::new(10);
        mv(&log);
        mv(&log);
        let mut foreign = reader(&log, 2, Some("another"));
        let mut own = reader(&log, 2, Some(log.epoch().as_str()));

        assert_eq!(foreign.next(usize::MAX).gap, Some(0));
        assert_eq!(foreign.next(usize::MAX).gap, None);
        assert_eq!(own.next(usize::MAX).gap, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_waits_for_what_follows_its_cursor() {
        let log = MemoryLog::new(10);
        mv(&log);
        let mut reader = reader(&log, 0, None);
        reader.next(usize::MAX);
        let waiting = tokio::time::timeout(Duration::from_secs(60), reader.newer()).await;
        assert!(waiting.is_err(), "nothing newer yet");

        mv(&log);

        tokio::time::timeout(Duration::from_millis(1), reader.newer())
            .await
            .expect("woken by the append");
        assert_eq!(reader.next(usize::MAX).events.len(), 1);
    }

    #[test]
    fn seqs_start_at_one_and_grow_by_one() {
        let log = MemoryLog::new(10);
        let seqs: Vec<Seq> = (0..5).map(|_| mv(&log).seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(log.head(), 5);
    }

    #[test]
    fn an_event_serialises_with_seq_ts_type_and_name() {
        let log = MemoryLog::new(10);
        let event = bob_says_hi(&log);
        let value: serde_json::Value = serde_json::from_str(event.json()).unwrap();
        assert_eq!(value["seq"], 1);
        assert_eq!(value["type"], "message");
        assert_eq!(value["name"], "bob");
        assert_eq!(value["text"], "hi");
        assert_eq!(value["id"], "m1");
        assert!(value["ts"].as_u64().unwrap() > 1_600_000_000_000);
        let leave = log.append_now(name("bob"), EventBody::Leave).unwrap();
        let value: serde_json::Value = serde_json::from_str(leave.json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"seq": 2, "ts": leave.ts, "type": "leave", "name": "bob"})
        );
    }

    #[test]
    fn reading_since_a_cursor_returns_exactly_the_newer_events() {
        let log = MemoryLog::new(10);
        for _ in 0..6 {
            mv(&log);
        }
        let batch = log.read_since(3, Some(log.epoch().as_str()));
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert_eq!(batch.cursor, 6);
        assert!(!batch.gap);
    }

    #[test]
    fn reading_at_the_head_returns_nothing_and_keeps_the_cursor() {
        let log = MemoryLog::new(10);
        mv(&log);
        let batch = log.read_since(1, None);
        assert!(batch.events.is_empty());
        assert_eq!(batch.cursor, 1);
        assert!(!batch.gap);
    }

    #[test]
    fn retention_keeps_only_the_last_events_and_flags_a_gap_for_older_cursors() {
        let log = MemoryLog::new(3);
        for _ in 0..10 {
            mv(&log);
        }
        let batch = log.read_since(2, None);
        assert!(batch.gap);
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        // A cursor just before the oldest kept event lost nothing.
        let batch = log.read_since(7, None);
        assert!(!batch.gap);
        assert_eq!(batch.events.len(), 3);
    }

    #[test]
    fn a_cursor_from_another_epoch_is_a_gap_from_the_oldest_kept_event() {
        let log = MemoryLog::new(100);
        for _ in 0..4 {
            mv(&log);
        }
        let batch = log.read_since(2, Some("some-other-epoch"));
        assert!(batch.gap);
        assert_eq!(batch.events.first().map(|e| e.seq), Some(1));
        assert_eq!(batch.cursor, 4);
    }

    #[test]
    fn a_cursor_ahead_of_the_head_is_a_gap() {
        let log = MemoryLog::new(100);
        mv(&log);
        let batch = log.read_since(50, None);
        assert!(batch.gap);
        assert_eq!(batch.cursor, 1);
        let empty = MemoryLog::new(100);
        let batch = empty.read_since(50, None);
        assert!(batch.gap);
        assert_eq!(batch.cursor, 0);
    }

    #[test]
    fn a_read_returns_at_most_one_batch() {
        let log = MemoryLog::new(5000);
        for _ in 0..2500 {
            mv(&log);
        }
        let batch = log.read_since(0, None);
        assert_eq!(batch.events.len(), MAX_BATCH);
        assert_eq!(batch.cursor, MAX_BATCH as Seq);
        let batch = log.read_since(batch.cursor, None);
        assert_eq!(
            batch.events.first().map(|e| e.seq),
            Some(MAX_BATCH as Seq + 1)
        );
    }

    #[test]
    fn chat_history_survives_a_flood_of_mousemoves() {
        let log = MemoryLog::new(50);
        for i in 0..150 {
            say(&log, &format!("m{i}"));
        }
        for _ in 0..10_000 {
            mv(&log);
        }
        let recent = log.recent_messages();
        assert_eq!(recent.len(), RECENT_MESSAGES);
        assert!(matches!(&recent[0].body, EventBody::Message { text, .. } if text == "m50"));
        assert!(matches!(&recent[99].body, EventBody::Message { text, .. } if text == "m149"));
        assert!(log
            .read_since(0, None)
            .events
            .iter()
            .all(|e| e.body.kind() == "mousemove"));
    }

    #[test]
    fn each_log_has_its_own_epoch() {
        assert_ne!(MemoryLog::new(1).epoch(), MemoryLog::new(1).epoch());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_a_newer_event_is_appended() {
        let log = MemoryLog::new(10);
        mv(&log);
        let waiter = tokio::spawn(log.wait_after(1));
        // Paused time: this only lets the waiter run; nothing can wake it yet.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        mv(&log);
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_after_an_old_cursor_returns_at_once() {
        let log = MemoryLog::new(10);
        mv(&log);
        mv(&log);
        tokio::time::timeout(Duration::from_millis(1), log.wait_after(1))
            .await
            .expect("already newer");
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_all_wake_on_one_append() {
        let log = MemoryLog::new(10);
        let waiters: Vec<_> = (0..1000).map(|_| tokio::spawn(log.wait_after(0))).collect();
        tokio::task::yield_now().await;
        mv(&log);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_millis(1), waiter)
                .await
                .expect("every waiter woke")
                .unwrap();
        }
    }

    #[test]
    fn event_fields_come_in_one_order() {
        let log = MemoryLog::new(10);
        let said = bob_says_hi(&log);
        let expected = format!(
            r#"{{"seq":1,"ts":{},"type":"message","name":"bob","text":"hi","id":"m1"}}"#,
            said.ts
        );
        assert_eq!(said.json(), expected);
        let moved = mv(&log);
        let expected = format!(
            r#"{{"seq":2,"ts":{},"type":"mousemove","name":"alice","x":0.5,"y":0.5}}"#,
            moved.ts
        );
        assert_eq!(moved.json(), expected);
    }

    #[test]
    fn an_event_reads_back_from_its_json() {
        let log = MemoryLog::new(10);
        let said = log
            .append_now(
                name("bob"),
                EventBody::Message {
                    text: "a \"quoted\" line".into(),
                    id: Some("x".into()),
                },
            )
            .unwrap();
        let moved = mv(&log);
        for event in [said, moved] {
            let back = Event::from_json(event.json()).unwrap();
            assert_eq!(
                (back.seq, back.ts, &back.name, &back.body),
                (event.seq, event.ts, &event.name, &event.body)
            );
            assert_eq!(back.json(), event.json());
        }
        assert!(Event::from_json("{\"seq\":1}").is_err());
    }

    #[test]
    fn a_resumed_log_continues_the_seqs_and_keeps_its_history() {
        let old = MemoryLog::new(10);
        let said = say(&old, "kept");
        let log = MemoryLog::resume(
            10,
            LogBudget::unlimited(),
            old.epoch().clone(),
            42,
            vec![said],
        );
        assert_eq!(log.head(), 41);
        assert_eq!(log.recent_messages().len(), 1);
        assert_eq!(mv(&log).seq, 42);
        assert!(log.read_since(10, None).gap);
    }

    /// A chat message of `chars` emoji, as the issue's flood sent them.
    fn emoji(chars: usize) -> EventBody {
        EventBody::Message {
            text: "\u{1F600}".repeat(chars),
            id: None,
        }
    }

    #[test]
    fn a_room_fed_large_messages_keeps_at_most_its_byte_budget_and_an_old_reader_gets_a_gap() {
        // Arrange: a budget of 1 MiB, far less than 10,000 such messages.
        let budget = 1024 * 1024;
        let log = MemoryLog::bounded(10_000, LogBudget::new(budget, usize::MAX));
        let first = log.append_now(name("alice"), emoji(2000)).unwrap();
        let mut reader = reader(&log, first.seq, None);

        // Act
        for _ in 0..1000 {
            log.append_now(name("alice"), emoji(2000)).unwrap();
        }

        // Assert
        assert!(log.bytes() <= budget, "{} bytes kept", log.bytes());
        assert!(
            log.bytes() > budget - first.cost(),
            "and the budget is used"
        );
        let read = reader.next(usize::MAX);
        let oldest = log.read_since(0, None).events[0].seq;
        assert_eq!(read.gap, Some(oldest - 1), "the reader is told");
        assert_eq!(read.events.first().map(|e| e.seq), Some(oldest));
        assert_eq!(log.head(), 1001);
    }

    #[test]
    fn the_chat_history_for_late_joiners_is_bounded_in_bytes() {
        let log = MemoryLog::new(10_000);

        for _ in 0..RECENT_MESSAGES {
            log.append_now(name("alice"), emoji(2000)).unwrap();
        }

        let recent = log.recent_messages();
        let bytes: usize = recent.iter().map(|m| m.json().len()).sum();
        assert!(bytes <= RECENT_MESSAGE_BYTES, "{bytes} bytes of history");
        assert_eq!(recent.last().map(|m| m.seq), Some(log.head()));
    }

    #[test]
    fn the_node_total_is_never_exceeded_and_an_append_past_it_is_refused_after_trimming() {
        // Arrange: three rooms sharing a total of about twelve messages.
        let one = emoji(2000);
        let cost = Event::new(1, 0, name("alice"), one.clone()).cost();
        let node = NodeBytes::new(12 * cost + cost / 2);
        let budget = LogBudget {
            room_bytes: 10 * cost,
            node: node.clone(),
        };
        let rooms: Vec<MemoryLog> = (0..3)
            .map(|_| MemoryLog::bounded(10_000, budget.clone()))
            .collect();

        // Act: the first two rooms fill the total between them.
        for _ in 0..6 {
            for room in &rooms[..2] {
                room.append_now(name("alice"), one.clone()).unwrap();
                assert!(node.used() <= node.total());
            }
        }
        let third = rooms[2].append_now(name("alice"), one.clone());
        let trimmed_own = rooms[0].append_now(name("alice"), one.clone());

        // Assert: the third room has nothing of its own to trim, so it is
        // refused and its seq is not used; the first trims its oldest.
        assert!(matches!(third, Err(LogError::Full)), "{third:?}");
        assert_eq!(rooms[2].head(), 0);
        assert_eq!(trimmed_own.unwrap().seq, 7);
        assert_eq!(rooms[0].read_since(0, None).events.len(), 6);
        assert!(rooms[0].read_since(0, None).gap);
        assert!(node.used() <= node.total());
        let used: usize = rooms.iter().map(MemoryLog::bytes).sum();
        assert_eq!(node.used(), used, "the node counts what the windows hold");
        drop(rooms);
        assert_eq!(node.used(), 0, "closed rooms give their bytes back");
    }

    #[test]
    fn an_event_stored_elsewhere_is_passed_over_when_the_node_is_full() {
        let cost = Event::new(1, 0, name("a"), EventBody::Join { observer: false }).cost();
        let log = MemoryLog::bounded(10, LogBudget::new(usize::MAX, cost - 1));

        let passed = log.restore(Event::new(
            1,
            0,
            name("a"),
            EventBody::Join { observer: false },
        ));

        assert_eq!(passed.unwrap().seq, 1);
        assert_eq!(log.head(), 1);
        assert_eq!(log.bytes(), 0);
        assert!(log.read_since(0, None).gap);
    }

    #[test]
    fn an_event_s_cost_covers_what_it_allocates() {
        let said = Event::new(u64::MAX, u64::MAX, name("bob"), emoji(2000));
        let moved = Event::new(
            u64::MAX,
            u64::MAX,
            name("bob"),
            EventBody::Mousemove {
                x: 0.123456789,
                y: 1e-300,
            },
        );

        assert!(said.json().len() <= json_capacity(&said.name, &said.body));
        assert!(moved.json().len() <= json_capacity(&moved.name, &moved.body));
        assert!(EVENT_OVERHEAD >= allocated(std::mem::size_of::<Event>() + 16) + 8);
        assert_eq!(said.cost(), 8192 + 8192 + 32 + EVENT_OVERHEAD);
        assert_eq!(
            (
                allocated(1),
                allocated(100),
                allocated(8000),
                allocated(8193)
            ),
            (16, 112, 8192, 10240)
        );
    }

    #[test]
    fn restore_accepts_only_the_next_seq() {
        let log = MemoryLog::new(10);
        assert!(log
            .restore(Event::new(
                2,
                0,
                name("a"),
                EventBody::Join { observer: false }
            ))
            .is_err());
        log.restore(Event::new(
            1,
            5,
            name("a"),
            EventBody::Join { observer: false },
        ))
        .unwrap();
        assert_eq!(log.head(), 1);
        assert_eq!(log.read_since(0, None).events[0].ts, 5);
    }
}
