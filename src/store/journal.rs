//! The durable journal (`--data-dir`): an [`EventLog`] that writes every
//! event to disk, and syncs it, before anyone sees it.
//!
//! One writer thread owns the files. Appends queue up while it syncs, and it
//! takes them all as the next group: one write and one `fdatasync` for the
//! lot, so throughput stays high under load. Only after the sync is an event
//! put into the in-memory window that readers see, so no acknowledgement (the
//! `/send` answer, or a WebSocket event echo) ever comes before the event is
//! durable.
//!
//! On disk, `DIR/epoch` holds the log's epoch, so clients resume without a
//! gap after a restart, and `DIR/segment-<first seq>.log` files hold records:
//!
//! ```text
//! u32 little-endian payload length | u32 little-endian CRC-32 of payload | payload
//! ```
//!
//! A payload is an event's JSON, or a checkpoint `{"checkpoint":[...]}` of the
//! recent chat messages, written first in each segment so that old segments
//! can be deleted without losing the history late joiners get. Segments roll
//! over at a size limit and are deleted once all their events have left the
//! window, so the journal stays bounded.
//!
//! # Damage
//!
//! Reading a segment back ([`parse_segment`]) stops at the first record that
//! is not whole and valid, then looks past it for any later valid record.
//!
//! - Damage with nothing valid after it, in the last segment, is a torn tail:
//!   a crash mid-write, before the sync that would have acknowledged it. It
//!   is cut off, with a warning that names the file and the offset.
//! - Damage with valid records after it, or anywhere in an older segment,
//!   means acknowledged events may be lost. Cutting there and carrying on
//!   would hand their seqs out again under the same epoch, so the journal
//!   refuses to open, naming the file, the offset and `--journal-recover`.
//!   With that flag ([`JournalOptions::recover`]) it moves the segments aside
//!   (`*.damaged`, `*.superseded`), keeps the chat history from before the
//!   damage, and starts a new epoch above every seq it saw: clients get a
//!   gap, and no seq is ever handed out twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::core::log::{
    now_millis, Batch, Epoch, Event, EventBody, EventLog, LogError, MemoryLog, Seq, RECENT_MESSAGES,
};
use crate::core::names::Name;

/// Where a segment rolls over, in bytes.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// The most appends written and synced as one group.
const MAX_GROUP: usize = 4096;
/// The largest record payload accepted when reading back, in bytes; anything
/// larger is a corrupt length.
pub const MAX_RECORD: u32 = 1024 * 1024;
/// The size of a record header (length and CRC), in bytes.
const HEADER: usize = 8;

/// How a journal is laid out.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The directory that holds the epoch and the segments.
    pub dir: PathBuf,
    /// How many events the in-memory window keeps (`--history`).
    pub history: usize,
    /// Where a segment rolls over, in bytes.
    pub segment_bytes: u64,
    /// What to do with damage that is not a torn tail (`--journal-recover`):
    /// refuse to open (false), or move the damaged segments aside and start a
    /// new epoch above every seq seen (true).
    pub recover: bool,
}

impl JournalOptions {
    /// A journal in `dir` with the default segment size, refusing to open
    /// over damage that is not a torn tail.
    pub fn new(dir: impl Into<PathBuf>, history: usize) -> Self {
        JournalOptions {
            dir: dir.into(),
            history,
            segment_bytes: SEGMENT_BYTES,
            recover: false,
        }
    }
}

/// An event log backed by the journal. Reads come from memory.
pub struct JournalLog {
    memory: MemoryLog,
    appends: mpsc::Sender<Append>,
}

struct Append {
    name: Name,
    body: EventBody,
    done: oneshot::Sender<Result<Arc<Event>, LogError>>,
}

impl JournalLog {
    /// Opens (or creates) the journal in `options.dir`, replays it, and
    /// starts its writer thread.
    ///
    /// Fails with [`io::ErrorKind::InvalidData`] when the journal is damaged
    /// before its end and `options.recover` is off; the message names the
    /// file, the offset and the flag.
    pub fn open(options: JournalOptions) -> io::Result<JournalLog> {
        fs::create_dir_all(&options.dir)?;
        let mut epoch = read_or_create_epoch(&options.dir)?;
        let replayed = match replay(&options.dir)? {
            Replay::Clean(replayed) => replayed,
            Replay::Damaged(found) if options.recover => {
                epoch = recover(&options.dir, &found)?;
                match replay(&options.dir)? {
                    Replay::Clean(replayed) => replayed,
                    Replay::Damaged(found) => return Err(found.refusal()),
                }
            }
            Replay::Damaged(found) => return Err(found.refusal()),
        };
        let memory = MemoryLog::resume(
            options.history.max(1),
            epoch,
            replayed.next_seq,
            replayed.checkpoint,
        );
        for event in replayed.events {
            memory
                .restore(event)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
        }
        tracing::info!(
            dir = %options.dir.display(),
            head = memory.head(),
            epoch = %memory.epoch(),
            "journal replayed"
        );
        let mut writer = Writer::open(options, memory.clone(), replayed.segments)?;
        let (appends, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("pushlab-journal".into())
            .spawn(move || writer.run(queue))?;
        Ok(JournalLog { memory, appends })
    }
}

impl EventLog for JournalLog {
    fn epoch(&self) -> Epoch {
        self.memory.epoch()
    }

    fn head(&self) -> Seq {
        self.memory.head()
    }

    fn append(
        &self,
        name: Name,
        body: EventBody,
    ) -> BoxFuture<'static, Result<Arc<Event>, LogError>> {
        let (done, result) = oneshot::channel();
        let queued = self.appends.send(Append { name, body, done });
        Box::pin(async move {
            queued.map_err(|_| LogError::Storage("the journal writer has stopped".into()))?;
            result
                .await
                .map_err(|_| LogError::Storage("the journal writer has stopped".into()))?
        })
    }

    fn read_since(&self, since: Seq, epoch: Option<&str>) -> Batch {
        self.memory.read_since(since, epoch)
    }

    fn wait_after(&self, seq: Seq) -> BoxFuture<'static, ()> {
        self.memory.wait_after(seq)
    }

    fn recent_messages(&self) -> Vec<Arc<Event>> {
        self.memory.recent_messages()
    }
}

fn read_or_create_epoch(dir: &Path) -> io::Result<Epoch> {
    match fs::read_to_string(dir.join("epoch")) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(Epoch::from_string(text.trim().to_owned()))
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let epoch = Epoch::random();
    write_epoch(dir, &epoch)?;
    Ok(epoch)
}

/// Replaces the epoch on disk. Written to the side and renamed, so a crash
/// leaves either the old epoch or the new one, never half of one.
fn write_epoch(dir: &Path, epoch: &Epoch) -> io::Result<()> {
    let tmp = dir.join("epoch.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(epoch.as_str().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("epoch"))?;
    File::open(dir)?.sync_all()
}

/// A segment file and the seq of its first event.
#[derive(Debug, Clone)]
struct Segment {
    first_seq: Seq,
    path: PathBuf,
}

fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("segment-{first_seq:020}.log"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(seq) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|digits| digits.parse::<Seq>().ok())
        {
            segments.push(Segment {
                first_seq: seq,
                path,
            });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// What is wrong where a segment stops being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// Fewer bytes are left than a record header takes.
    PartialHeader {
        /// How many bytes are left.
        have: usize,
    },
    /// A header that says zero bytes follow: zero-filled space, which
    /// pushlab never writes (every payload is JSON).
    Empty,
    /// A length over [`MAX_RECORD`].
    TooLong {
        /// The length the header gives.
        len: u32,
    },
    /// The payload runs past the end of the segment.
    CutOff {
        /// How many payload bytes are there.
        have: usize,
        /// How many the header promises.
        len: u32,
    },
    /// The payload does not match its CRC-32.
    Checksum,
    /// The payload matches its checksum but is not an event or a checkpoint
    /// (or a checkpoint anywhere but first).
    Undecodable {
        /// Why it does not decode.
        reason: String,
    },
    /// An event whose seq is not the next one.
    OutOfOrder {
        /// The seq the segment's order calls for.
        expected: Seq,
        /// The seq the event has.
        found: Seq,
    },
    /// The segment does not start where the one before it ends: a segment
    /// in between is missing.
    Missing {
        /// The seq the segment should start at.
        expected: Seq,
    },
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DamageKind::PartialHeader { have } => write!(f, "a {have}-byte partial record header"),
            DamageKind::Empty => f.write_str("an empty record header (zero-filled space)"),
            DamageKind::TooLong { len } => write!(f, "a record length of {len} bytes"),
            DamageKind::CutOff { have, len } => {
                write!(f, "a record cut off after {have} of {len} bytes")
            }
            DamageKind::Checksum => f.write_str("a record whose checksum does not match"),
            DamageKind::Undecodable { reason } => {
                write!(
                    f,
                    "a record that passes its checksum but does not decode: {reason}"
                )
            }
            DamageKind::OutOfOrder { expected, found } => {
                write!(f, "an event with seq {found} where seq {expected} belongs")
            }
            DamageKind::Missing { expected } => write!(
                f,
                "the segment should start at seq {expected}: a segment before it is missing"
            ),
        }
    }
}

/// Where and how a segment is damaged, and what lies beyond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The byte offset of the first record that is not whole and valid.
    pub offset: u64,
    /// What is wrong with it.
    pub kind: DamageKind,
    /// Whether a valid record (right length, right CRC-32, and an event or a
    /// checkpoint) starts anywhere after the damage. If not, the damage is a
    /// torn tail.
    pub valid_after: bool,
    /// The highest seq of any event found after the damage.
    pub highest_seq_after: Option<Seq>,
}

/// A segment read back by [`parse_segment`].
#[derive(Debug, Default)]
pub struct ParsedSegment {
    /// The chat history from the checkpoint the segment opens with, if any.
    pub checkpoint: Vec<Arc<Event>>,
    /// The events before any damage, with dense seqs from the segment's
    /// first seq.
    pub events: Vec<Event>,
    /// How many bytes the whole, valid records take: where a cut goes.
    pub valid_len: u64,
    /// What stopped the reading, if anything did.
    pub damage: Option<Damage>,
}

impl ParsedSegment {
    /// The highest seq the segment names: in its events, its checkpoint, or
    /// in any valid event after the damage.
    pub fn highest_seq(&self) -> Option<Seq> {
        let events = self.events.last().map(|e| e.seq);
        let checkpoint = self.checkpoint.iter().map(|e| e.seq).max();
        let after = self.damage.as_ref().and_then(|d| d.highest_seq_after);
        events.max(checkpoint).max(after)
    }
}

/// One record's payload, decoded.
enum Decoded {
    Checkpoint(Vec<Arc<Event>>),
    Event(Event),
}

#[derive(Deserialize)]
struct Checkpoint {
    checkpoint: Vec<Box<serde_json::value::RawValue>>,
}

fn decode(payload: &[u8]) -> Result<Decoded, String> {
    let text = std::str::from_utf8(payload).map_err(|err| err.to_string())?;
    if text.starts_with("{\"checkpoint\"") {
        let checkpoint: Checkpoint = serde_json::from_str(text).map_err(|err| err.to_string())?;
        let messages = checkpoint
            .checkpoint
            .iter()
            .map(|raw| Event::from_json(raw.get()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        return Ok(Decoded::Checkpoint(messages));
    }
    Event::from_json(text).map(Decoded::Event)
}

/// The payload of the record at `at`, if its header and checksum are right.
fn frame(bytes: &[u8], at: usize) -> Result<&[u8], DamageKind> {
    let rest = &bytes[at..];
    if rest.len() < HEADER {
        return Err(DamageKind::PartialHeader { have: rest.len() });
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 {
        return Err(DamageKind::Empty);
    }
    if len > MAX_RECORD {
        return Err(DamageKind::TooLong { len });
    }
    let have = rest.len() - HEADER;
    if have < len as usize {
        return Err(DamageKind::CutOff { have, len });
    }
    let payload = &rest[HEADER..HEADER + len as usize];
    if crc32fast::hash(payload) != crc {
        return Err(DamageKind::Checksum);
    }
    Ok(payload)
}

/// Reads a segment whose first event has seq `first_seq`.
///
/// A pure function of the bytes: it never panics, and the events it returns
/// have dense seqs from `first_seq` (so never a repeated one). It stops at
/// the first record that is not whole and valid and reports it as
/// [`ParsedSegment::damage`], having looked past it, byte by byte, for any
/// later valid record: if there is none, the damage is a torn tail that can
/// be cut at [`ParsedSegment::valid_len`].
pub fn parse_segment(bytes: &[u8], first_seq: Seq) -> ParsedSegment {
    let mut parsed = ParsedSegment::default();
    let mut at = 0;
    let mut next = Some(first_seq);
    while at < bytes.len() {
        let decoded = frame(bytes, at).and_then(|payload| {
            let decoded = decode(payload).map_err(|reason| DamageKind::Undecodable { reason })?;
            Ok((payload.len(), decoded))
        });
        let kind = match decoded {
            Ok((len, Decoded::Checkpoint(messages))) if at == 0 => {
                parsed.checkpoint = messages;
                at += HEADER + len;
                continue;
            }
            Ok((_, Decoded::Checkpoint(_))) => DamageKind::Undecodable {
                reason: "a checkpoint after the first record".into(),
            },
            Ok((len, Decoded::Event(event))) if Some(event.seq) == next => {
                next = event.seq.checked_add(1);
                parsed.events.push(event);
                at += HEADER + len;
                continue;
            }
            Ok((_, Decoded::Event(event))) => match next {
                Some(expected) => DamageKind::OutOfOrder {
                    expected,
                    found: event.seq,
                },
                None => DamageKind::Undecodable {
                    reason: "an event after the highest possible seq".into(),
                },
            },
            Err(kind) => kind,
        };
        let (valid_after, highest_seq_after) = look_past(bytes, at + 1);
        parsed.damage = Some(Damage {
            offset: at as u64,
            kind,
            valid_after,
            highest_seq_after,
        });
        break;
    }
    parsed.valid_len = at as u64;
    parsed
}

/// Looks for valid records from `from` on: whether there is any, and the
/// highest event seq among them. After a valid record it goes on at the next
/// record; anywhere else it tries the next byte.
fn look_past(bytes: &[u8], from: usize) -> (bool, Option<Seq>) {
    let mut found = false;
    let mut highest: Option<Seq> = None;
    let mut at = from;
    while at + HEADER < bytes.len() {
        let Ok(payload) = frame(bytes, at) else {
            at += 1;
            continue;
        };
        match decode(payload) {
            Ok(Decoded::Event(event)) => {
                highest = highest.max(Some(event.seq));
            }
            Ok(Decoded::Checkpoint(messages)) => {
                highest = highest.max(messages.iter().map(|e| e.seq).max());
            }
            Err(_) => {
                at += 1;
                continue;
            }
        }
        found = true;
        at += HEADER + payload.len();
    }
    (found, highest)
}

/// The journal as read back, ready to be put into memory.
struct Replayed {
    /// The chat history from the oldest segment's checkpoint.
    checkpoint: Vec<Arc<Event>>,
    /// Every event still in the journal, in order.
    events: Vec<Event>,
    /// The seq the first replayed event has (or the next append gets).
    next_seq: Seq,
    segments: Vec<Segment>,
}

/// Damage that is not a torn tail: what the journal refuses to open over.
struct Found {
    /// Every segment, oldest first.
    segments: Vec<Segment>,
    /// Which of them is damaged first.
    damaged: usize,
    damage: Damage,
    /// The highest seq anything in the journal names, damaged parts and
    /// segment names included. A new epoch starts above it.
    highest_seq: Seq,
    /// The chat messages before the damage, oldest first.
    messages: Vec<Arc<Event>>,
}

impl Found {
    /// The error that stops the server, naming the file, the offset and the
    /// way out.
    fn refusal(&self) -> io::Error {
        let path = self.segments[self.damaged].path.display();
        let what_follows = if self.damage.valid_after {
            "valid records follow it"
        } else {
            "later segments follow it"
        };
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the journal is damaged before its end: {path} at byte {offset}: {kind}; \
                 {what_follows}, so acknowledged events may be lost, and starting would hand \
                 their seqs out again. Nothing was changed. To start anyway, run once with \
                 --journal-recover (PUSHLAB_JOURNAL_RECOVER=true): the damaged segment is moved \
                 aside as *.damaged, the chat history before it is kept, and a new epoch starts \
                 above seq {highest}, so clients see a gap",
                offset = self.damage.offset,
                kind = self.damage.kind,
                highest = self.highest_seq,
            ),
        )
    }
}

enum Replay {
    /// Everything is readable; a torn tail, if any, has been cut.
    Clean(Replayed),
    /// Damage that is not a torn tail; nothing has been changed.
    Damaged(Box<Found>),
}

/// Reads every segment back, cutting a torn tail off the last one.
fn replay(dir: &Path) -> io::Result<Replay> {
    let segments = list_segments(dir)?;
    let mut replayed = Replayed {
        checkpoint: Vec::new(),
        events: Vec::new(),
        next_seq: segments.first().map_or(1, |s| s.first_seq),
        segments: segments.clone(),
    };
    let last = segments.len().saturating_sub(1);
    for (index, segment) in segments.iter().enumerate() {
        let bytes = fs::read(&segment.path)?;
        let mut parsed = parse_segment(&bytes, segment.first_seq);
        let expected = replayed.next_seq + replayed.events.len() as Seq;
        if segment.first_seq != expected {
            parsed.damage = Some(Damage {
                offset: 0,
                kind: DamageKind::Missing { expected },
                valid_after: true,
                highest_seq_after: parsed.highest_seq(),
            });
            parsed.events.clear();
            parsed.checkpoint.clear();
        }
        if index == 0 {
            replayed.checkpoint = std::mem::take(&mut parsed.checkpoint);
        }
        match parsed.damage.take() {
            None => {}
            Some(damage) if index == last && !damage.valid_after => {
                tracing::warn!(
                    file = %segment.path.display(),
                    offset = damage.offset,
                    cut_bytes = bytes.len() as u64 - damage.offset,
                    problem = %damage.kind,
                    "the journal ends in a torn tail (a write the crash interrupted, never \
                     acknowledged); cutting {} at byte {}",
                    segment.path.display(),
                    damage.offset,
                );
                let file = OpenOptions::new().write(true).open(&segment.path)?;
                file.set_len(parsed.valid_len)?;
                file.sync_all()?;
            }
            Some(damage) => {
                replayed.events.append(&mut parsed.events);
                let mut highest = segments.iter().map(|s| s.first_seq).max().unwrap_or(0);
                highest = highest.max(damage.highest_seq_after.unwrap_or(0));
                highest = highest.max(replayed.events.last().map_or(0, |e| e.seq));
                for later in &segments[index + 1..] {
                    let bytes = fs::read(&later.path)?;
                    let later = parse_segment(&bytes, later.first_seq);
                    highest = highest.max(later.highest_seq().unwrap_or(0));
                }
                return Ok(Replay::Damaged(Box::new(Found {
                    messages: chat_history(&replayed),
                    segments,
                    damaged: index,
                    damage,
                    highest_seq: highest,
                })));
            }
        }
        replayed.events.append(&mut parsed.events);
    }
    Ok(Replay::Clean(replayed))
}

/// The last [`RECENT_MESSAGES`] chat messages replayed so far, oldest first.
fn chat_history(replayed: &Replayed) -> Vec<Arc<Event>> {
    let mut messages: Vec<Arc<Event>> = replayed.checkpoint.clone();
    for event in &replayed.events {
        if matches!(event.body, EventBody::Message { .. }) {
            messages.push(Arc::new(Event::new(
                event.seq,
                event.ts,
                event.name.clone(),
                event.body.clone(),
            )));
        }
    }
    let skip = messages.len().saturating_sub(RECENT_MESSAGES);
    messages.split_off(skip)
}

/// Starts a new epoch after damage: a new segment above every seq seen,
/// holding the chat history, and every old segment moved aside.
///
/// The order makes a crash at any point safe. The new epoch is written
/// first, so the old one never comes back with events missing. The new
/// segment comes next, and the damaged segment is moved last, so until the
/// end the damage stays in view and the next start refuses again.
fn recover(dir: &Path, found: &Found) -> io::Result<Epoch> {
    let epoch = Epoch::random();
    write_epoch(dir, &epoch)?;
    let first_seq = found.highest_seq.saturating_add(1);
    create_segment(&segment_path(dir, first_seq), &found.messages)?;
    let mut moved = Vec::new();
    for (index, segment) in found.segments.iter().enumerate() {
        if index < found.damaged {
            moved.push(move_aside(&segment.path, "superseded")?);
        } else if index > found.damaged {
            moved.push(move_aside(&segment.path, "damaged")?);
        }
    }
    moved.push(move_aside(&found.segments[found.damaged].path, "damaged")?);
    File::open(dir)?.sync_all()?;
    tracing::warn!(
        file = %found.segments[found.damaged].path.display(),
        offset = found.damage.offset,
        problem = %found.damage.kind,
        new_epoch = %epoch,
        first_seq,
        moved = ?moved,
        "recovered the journal from damage before its end: a new epoch starts at seq {first_seq}, \
         and clients will see a gap"
    );
    Ok(epoch)
}

/// Renames `path` to `path.<suffix>` (or `path.<suffix>.<n>` if that is
/// taken), so nothing is overwritten. Returns the new path.
fn move_aside(path: &Path, suffix: &str) -> io::Result<PathBuf> {
    let mut aside = PathBuf::from(format!("{}.{suffix}", path.display()));
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{}.{suffix}.{n}", path.display()));
        n += 1;
    }
    fs::rename(path, &aside)?;
    Ok(aside)
}

fn push_record(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The writer thread's state.
struct Writer {
    options: JournalOptions,
    memory: MemoryLog,
    segments: Vec<Segment>,
    file: File,
    file_len: u64,
    buf: Vec<u8>,
    /// Set after a write or sync fails: nothing more is acknowledged.
    failed: Option<String>,
}

impl Writer {
    fn open(
        options: JournalOptions,
        memory: MemoryLog,
        mut segments: Vec<Segment>,
    ) -> io::Result<Writer> {
        let (file, file_len) = match segments.last() {
            Some(last) => {
                let mut file = OpenOptions::new().append(true).open(&last.path)?;
                let len = file.seek(SeekFrom::End(0))?;
                (file, len)
            }
            None => {
                let segment = Segment {
                    first_seq: memory.head() + 1,
                    path: segment_path(&options.dir, memory.head() + 1),
                };
                let file = create_segment(&segment.path, &memory.recent_messages())?;
                let len = file.metadata()?.len();
                segments.push(segment);
                (file, len)
            }
        };
        Ok(Writer {
            options,
            memory,
            segments,
            file,
            file_len,
            buf: Vec::new(),
            failed: None,
        })
    }

    fn run(&mut self, queue: mpsc::Receiver<Append>) {
        // Ends when every sender is gone: the server has stopped, and every
        // acknowledged event was synced before it was acknowledged.
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    /// Writes and syncs a group, then publishes and acknowledges it.
    fn commit(&mut self, group: Vec<Append>) {
        if let Some(reason) = &self.failed {
            for append in group {
                let _ = append.done.send(Err(LogError::Storage(reason.clone())));
            }
            return;
        }
        let first = self.memory.head() + 1;
        let ts = now_millis();
        self.buf.clear();
        let mut events = Vec::with_capacity(group.len());
        let mut waiting = Vec::with_capacity(group.len());
        for (i, append) in group.into_iter().enumerate() {
            let event = Event::new(first + i as Seq, ts, append.name, append.body);
            push_record(&mut self.buf, event.json().as_bytes());
            events.push(event);
            waiting.push(append.done);
        }
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            let reason = format!("could not write the journal: {err}");
            tracing::error!(%reason, "the journal has failed; appends are refused from now on");
            for done in waiting {
                let _ = done.send(Err(LogError::Storage(reason.clone())));
            }
            self.failed = Some(reason);
            return;
        }
        self.file_len += self.buf.len() as u64;
        for (event, done) in events.into_iter().zip(waiting) {
            let _ = done.send(self.memory.restore(event));
        }
        if self.file_len >= self.options.segment_bytes {
            if let Err(err) = self.roll_over() {
                tracing::error!(%err, "could not start a new journal segment; staying on the current one");
            }
        }
    }

    /// Starts a new segment and deletes those the window has left behind.
    fn roll_over(&mut self) -> io::Result<()> {
        let next_seq = self.memory.head() + 1;
        let segment = Segment {
            first_seq: next_seq,
            path: segment_path(&self.options.dir, next_seq),
        };
        self.file = create_segment(&segment.path, &self.memory.recent_messages())?;
        self.file_len = self.file.metadata()?.len();
        self.segments.push(segment);
        // A segment can go once the next one starts at or before the oldest
        // event the window keeps: everything in it is older than that.
        let window_start = next_seq.saturating_sub(self.options.history as Seq);
        while self.segments.len() > 1 && self.segments[1].first_seq <= window_start {
            let old = self.segments.remove(0);
            fs::remove_file(&old.path)?;
            tracing::debug!(file = %old.path.display(), "deleted a journal segment");
        }
        File::open(&self.options.dir)?.sync_all()?;
        Ok(())
    }
}

/// Creates a segment that opens with a checkpoint of the chat history
/// (`messages`, oldest first).
fn create_segment(path: &Path, messages: &[Arc<Event>]) -> io::Result<File> {
    let mut payload = String::from("{\"checkpoint\":[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(message.json());
    }
    payload.push_str("]}");
    let mut buf = Vec::new();
    push_record(&mut buf, payload.as_bytes());
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    file.write_all(&buf)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    fn say(text: &str) -> EventBody {
        EventBody::Message {
            text: text.into(),
            id: None,
        }
    }

    fn options(dir: &Path) -> JournalOptions {
        JournalOptions::new(dir, 1000)
    }

    #[tokio::test]
    async fn acknowledged_events_survive_a_reopen_with_the_same_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (epoch, acked) = {
            let log = JournalLog::open(options(dir.path())).unwrap();
            let mut acked = Vec::new();
            for i in 0..50 {
                acked.push(log.append(name("a"), say(&format!("m{i}"))).await.unwrap());
            }
            (log.epoch(), acked)
        };
        let log = JournalLog::open(options(dir.path())).unwrap();
        assert_eq!(log.epoch(), epoch);
        assert_eq!(log.head(), 50);
        let batch = log.read_since(0, Some(epoch.as_str()));
        assert!(!batch.gap);
        for (kept, sent) in batch.events.iter().zip(&acked) {
            assert_eq!(kept.json(), sent.json());
        }
        let next = log.append(name("a"), EventBody::Leave).await.unwrap();
        assert_eq!(next.seq, 51);
    }

    #[tokio::test]
    async fn concurrent_appends_are_grouped_and_keep_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(JournalLog::open(options(dir.path())).unwrap());
        let appends: Vec<_> = (0..500)
            .map(|i| log.append(name("a"), say(&i.to_string())))
            .collect();
        let mut seqs = Vec::new();
        for append in appends {
            seqs.push(append.await.unwrap().seq);
        }
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_at_the_last_whole_event() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = JournalLog::open(options(dir.path())).unwrap();
            for i in 0..10 {
                log.append(name("a"), say(&format!("m{i}"))).await.unwrap();
            }
        }
        let segment = list_segments(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&segment.path).unwrap().len();
        // Half of the last record is lost, as in a crash mid-write.
        OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let log = JournalLog::open(options(dir.path())).unwrap();
        assert_eq!(log.head(), 9);
        assert_eq!(log.append(name("a"), say("after")).await.unwrap().seq, 10);
        drop(log);
        let log = JournalLog::open(options(dir.path())).unwrap();
        assert_eq!(log.head(), 10);
        let last = log.read_since(9, None).events;
        assert!(matches!(&last[0].body, EventBody::Message { text, .. } if text == "after"));
    }

    #[tokio::test]
    async fn a_corrupt_record_at_the_tail_is_cut_too() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = JournalLog::open(options(dir.path())).unwrap();
            for i in 0..5 {
                log.append(name("a"), say(&format!("m{i}"))).await.unwrap();
            }
        }
        let segment = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&segment.path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        fs::write(&segment.path, bytes).unwrap();
        let log = JournalLog::open(options(dir.path())).unwrap();
        assert_eq!(log.head(), 4);
    }

    #[tokio::test]
    async fn segments_roll_over_and_old_ones_are_deleted_but_history_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            dir: dir.path().to_owned(),
            history: 100,
            segment_bytes: 4096,
            recover: false,
        };
        {
            let log = JournalLog::open(options.clone()).unwrap();
            log.append(name("a"), say("an old message")).await.unwrap();
            for _ in 0..2000 {
                log.append(name("a"), EventBody::Mousemove { x: 0.5, y: 0.5 })
                    .await
                    .unwrap();
            }
        }
        let segments = list_segments(dir.path()).unwrap();
        let total: u64 = segments
            .iter()
            .map(|s| fs::metadata(&s.path).unwrap().len())
            .sum();
        assert!(total < 40_000, "the journal stays bounded: {total} bytes");
        assert!(
            segments[0].first_seq > 1,
            "the oldest segments were deleted"
        );
        let log = JournalLog::open(options).unwrap();
        assert_eq!(log.head(), 2001);
        let history = log.recent_messages();
        assert_eq!(history.len(), 1, "the checkpoint kept the chat history");
        assert_eq!(history[0].seq, 1);
        let window = log.read_since(1901, None);
        assert!(!window.gap);
        assert_eq!(window.events.len(), 100);
    }

    /// A journal with ten acknowledged messages, seqs 1 to 10.
    async fn ten_messages(dir: &Path) -> PathBuf {
        let log = JournalLog::open(options(dir)).unwrap();
        for i in 0..10 {
            log.append(name("a"), say(&format!("m{i}"))).await.unwrap();
        }
        list_segments(dir).unwrap().pop().unwrap().path
    }

    /// Where each record of a segment starts; record `n` holds seq `n`.
    fn record_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            offsets.push(at);
            at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        offsets
    }

    #[tokio::test]
    async fn a_zero_filled_tail_is_cut_and_new_events_continue_the_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let segment = ten_messages(dir.path()).await;
        let whole = fs::metadata(&segment).unwrap().len();
        let mut bytes = fs::read(&segment).unwrap();
        bytes.resize(bytes.len() + 512, 0);
        fs::write(&segment, bytes).unwrap();

        let log = JournalLog::open(options(dir.path())).unwrap();

        assert_eq!(log.head(), 10);
        assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
        assert_eq!(
            log.append(name("a"), EventBody::Leave).await.unwrap().seq,
            11
        );
    }

    #[tokio::test]
    async fn records_that_pass_the_checksum_but_do_not_decode_at_the_tail_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let segment = ten_messages(dir.path()).await;
        let whole = fs::metadata(&segment).unwrap().len();
        let mut bytes = fs::read(&segment).unwrap();
        push_record(&mut bytes, b"not an event");
        push_record(&mut bytes, b"{\"seq\":11}");
        push_record(&mut bytes, &[0xff, 0xfe]);
        fs::write(&segment, bytes).unwrap();

        let log = JournalLog::open(options(dir.path())).unwrap();

        assert_eq!(log.head(), 10);
        assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
        assert_eq!(
            log.append(name("a"), EventBody::Leave).await.unwrap().seq,
            11
        );
    }

    #[tokio::test]
    async fn damage_in_the_middle_of_the_last_segment_refuses_to_start_and_names_the_file_and_offset(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let segment = ten_messages(dir.path()).await;
        let mut bytes = fs::read(&segment).unwrap();
        let offset = record_offsets(&bytes)[4];
        bytes[offset + 12] ^= 0x01;
        fs::write(&segment, &bytes).unwrap();

        let err = JournalLog::open(options(dir.path()))
            .err()
            .expect("refused");

        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let message = err.to_string();
        assert!(
            message.contains(&segment.display().to_string()),
            "{message}"
        );
        assert!(message.contains(&format!("byte {offset}")), "{message}");
        assert!(message.contains("--journal-recover"), "{message}");
        assert_eq!(fs::read(&segment).unwrap(), bytes, "nothing was cut");
    }

    #[tokio::test]
    async fn damage_before_the_last_segment_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            dir: dir.path().to_owned(),
            history: 10_000,
            segment_bytes: 1024,
            recover: false,
        };
        {
            let log = JournalLog::open(options.clone()).unwrap();
            for _ in 0..100 {
                log.append(name("a"), EventBody::Mousemove { x: 0.1, y: 0.1 })
                    .await
                    .unwrap();
            }
        }
        let first = list_segments(dir.path()).unwrap().remove(0);
        let len = fs::metadata(&first.path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&first.path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let err = JournalLog::open(options).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn recovering_from_mid_segment_damage_starts_a_new_epoch_so_clients_see_a_gap() {
        // Arrange: seq 4 is damaged, and seqs 5 to 10 follow it.
        let dir = tempfile::tempdir().unwrap();
        let segment = ten_messages(dir.path()).await;
        let old_epoch = read_or_create_epoch(dir.path()).unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let offset = record_offsets(&bytes)[4];
        bytes[offset + 12] ^= 0x01;
        fs::write(&segment, &bytes).unwrap();

        // Act
        let log = JournalLog::open(JournalOptions {
            recover: true,
            ..options(dir.path())
        })
        .unwrap();

        // Assert
        assert_ne!(log.epoch(), old_epoch);
        assert_eq!(log.head(), 10, "above every seq seen, the damaged ones too");
        let batch = log.read_since(2, Some(old_epoch.as_str()));
        assert!(batch.gap);
        assert!(batch.events.is_empty());
        let history: Vec<String> = log
            .recent_messages()
            .iter()
            .map(|m| match &m.body {
                EventBody::Message { text, .. } => text.clone(),
                other => panic!("not a message: {other:?}"),
            })
            .collect();
        assert_eq!(history, ["m0", "m1", "m2"]);
        assert_eq!(log.append(name("a"), say("new")).await.unwrap().seq, 11);
        let aside = PathBuf::from(format!("{}.damaged", segment.display()));
        assert_eq!(fs::read(&aside).unwrap(), bytes, "kept aside untouched");
        let epoch = log.epoch();
        drop(log);
        let log = JournalLog::open(options(dir.path())).unwrap();
        assert_eq!(log.epoch(), epoch, "the new epoch persists");
        assert_eq!(log.head(), 11);
        assert!(!log.read_since(10, Some(epoch.as_str())).gap);
    }

    #[tokio::test]
    async fn recovering_from_damage_in_an_older_segment_starts_above_the_later_segments() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            dir: dir.path().to_owned(),
            history: 10_000,
            segment_bytes: 1024,
            recover: false,
        };
        {
            let log = JournalLog::open(options.clone()).unwrap();
            for _ in 0..100 {
                log.append(name("a"), EventBody::Mousemove { x: 0.1, y: 0.1 })
                    .await
                    .unwrap();
            }
        }
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() > 2);
        let mut bytes = fs::read(&segments[1].path).unwrap();
        let offset = record_offsets(&bytes)[1];
        bytes[offset + 10] ^= 0x40;
        fs::write(&segments[1].path, &bytes).unwrap();
        let refused = JournalLog::open(options.clone()).err().expect("refused");
        assert!(refused
            .to_string()
            .contains(&segments[1].path.display().to_string()));

        let log = JournalLog::open(JournalOptions {
            recover: true,
            ..options.clone()
        })
        .unwrap();

        assert_eq!(log.head(), 100);
        assert_eq!(
            log.append(name("a"), EventBody::Leave).await.unwrap().seq,
            101
        );
        let remaining = list_segments(dir.path()).unwrap();
        assert_eq!(remaining.len(), 1);
        assert_eq!(remaining[0].first_seq, 101);
        let aside = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".damaged") || n.ends_with(".superseded"))
            .count();
        assert_eq!(aside, segments.len());
    }

    /// A well-formed segment: a checkpoint, then `count` events from `first`.
    fn segment_bytes(first: Seq, count: u64) -> (Vec<u8>, Vec<Event>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        let said = Event::new(first.saturating_sub(1), 7, name("a"), say("hello"));
        push_record(
            &mut bytes,
            format!("{{\"checkpoint\":[{}]}}", said.json()).as_bytes(),
        );
        let mut events = Vec::new();
        for seq in first..first + count {
            let body = match seq % 3 {
                0 => say(&format!("m{seq}")),
                1 => EventBody::Mousemove { x: 0.25, y: 0.75 },
                _ => EventBody::Join,
            };
            let event = Event::new(seq, 1_700_000_000_000 + seq, name("bob"), body);
            starts.push(bytes.len());
            push_record(&mut bytes, event.json().as_bytes());
            events.push(event);
        }
        (bytes, events, starts)
    }

    /// The properties every parse has, whatever the bytes: dense seqs, a
    /// damage offset where the valid records end, and a clean cut there.
    fn assert_sound(bytes: &[u8], first: Seq, parsed: &ParsedSegment) {
        for (i, event) in parsed.events.iter().enumerate() {
            assert_eq!(Some(event.seq), first.checked_add(i as Seq));
        }
        match &parsed.damage {
            None => assert_eq!(parsed.valid_len, bytes.len() as u64),
            Some(damage) => assert_eq!(damage.offset, parsed.valid_len),
        }
        let cut = parse_segment(&bytes[..parsed.valid_len as usize], first);
        assert!(cut.damage.is_none());
        assert_eq!(cut.events.len(), parsed.events.len());
    }

    #[test]
    fn a_whole_segment_parses_into_its_checkpoint_and_events() {
        let (bytes, events, _) = segment_bytes(5, 20);
        let parsed = parse_segment(&bytes, 5);
        assert!(parsed.damage.is_none());
        assert_eq!(parsed.checkpoint.len(), 1);
        assert_eq!(parsed.events.len(), 20);
        for (read, written) in parsed.events.iter().zip(&events) {
            assert_eq!(read.json(), written.json());
        }
    }

    #[test]
    fn an_event_out_of_order_is_damage_even_with_a_good_checksum() {
        let (mut bytes, _, _) = segment_bytes(1, 3);
        let stray = Event::new(2, 0, name("a"), EventBody::Leave);
        push_record(&mut bytes, stray.json().as_bytes());
        let parsed = parse_segment(&bytes, 1);
        assert_eq!(parsed.events.len(), 3);
        let damage = parsed.damage.expect("damage");
        assert_eq!(
            damage.kind,
            DamageKind::OutOfOrder {
                expected: 4,
                found: 2
            }
        );
        assert!(!damage.valid_after, "a torn tail");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_as_a_segment_never_panic_or_repeat_a_seq(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            first in proptest::prelude::any::<Seq>(),
        ) {
            let parsed = parse_segment(&bytes, first);
            assert_sound(&bytes, first, &parsed);
        }

        #[test]
        fn damage_before_the_last_record_is_never_taken_for_a_torn_tail(
            count in 1u64..30,
            first in 1u64..1_000_000,
            at in proptest::prelude::any::<proptest::sample::Index>(),
            mask in 1u8..=255,
            zero_run in 0usize..64,
            cut in proptest::prelude::any::<bool>(),
        ) {
            // Arrange: a flipped byte or a run of zeros somewhere, or the
            // file cut short there.
            let (original, events, starts) = segment_bytes(first, count);
            let pos = at.index(original.len());
            let mut bytes = original.clone();
            if cut {
                bytes.truncate(pos);
            } else if zero_run == 0 {
                bytes[pos] ^= mask;
            } else {
                let end = (pos + zero_run).min(bytes.len());
                bytes[pos..end].fill(0);
            }

            // Act
            let parsed = parse_segment(&bytes, first);

            // Assert
            assert_sound(&bytes, first, &parsed);
            for (read, written) in parsed.events.iter().zip(&events) {
                assert_eq!(read.json(), written.json(), "only what was written");
            }
            let changed = original.iter().zip(&bytes).rposition(|(a, b)| a != b);
            let last_start = *starts.last().unwrap();
            if !cut && changed.is_some_and(|last_changed| last_changed < last_start) {
                let damage = parsed.damage.expect("the change is found");
                assert!(damage.valid_after, "the intact last record is seen");
                assert_eq!(damage.highest_seq_after, Some(first + count - 1));
            }
        }
    }
}
