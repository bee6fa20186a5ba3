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
//! over at a size limit ([`segment_bytes_for`]: a quarter of the room's
//! byte budget, between 1 and 16 MiB) and are deleted once all their events
//! have left the window, whether by count or by bytes. So a room's journal
//! holds the window's events (at most `--room-bytes` of JSON), the one
//! segment the window starts in, the open one, and a checkpoint (at most
//! 64 KiB) per segment: with the default 8 MiB budget, at most about
//! 1.5 × `--room-bytes`, and never more than `--room-bytes` + 2 segments +
//! one group of appends.
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
//!
//! # Files
//!
//! - this module: [`JournalLog`], its options, and [`JournalStore`], the
//!   [`LogStore`] that keeps a journal per room;
//! - `segment`: the record format and [`parse_segment`];
//! - `replay`: reading a journal back at open, and recovering from damage;
//! - `writer`: the thread that writes, syncs and publishes each group.
//!
//! It implements the core's [`EventLog`] and [`LogStore`], and knows nothing
//! of the rooms above it, of the other stores, or of HTTP.

mod replay;
mod segment;
mod writer;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::core::log::{
    Batch, Epoch, Event, EventBody, EventLog, LogBudget, LogError, MemoryLog, Seq,
};
use crate::core::log_store::{LogStore, OpenedLog};
use crate::core::names::{Name, RoomName};

use replay::{read_or_create_epoch, recover, replay, Replay};
pub use segment::{parse_segment, Damage, DamageKind, ParsedSegment, MAX_RECORD};
use writer::{Append, Writer};

/// Where a segment rolls over at most, in bytes.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Where a segment rolls over at least, in bytes: a segment starts with a
/// checkpoint of up to 64 KiB, so smaller ones would be mostly checkpoint.
pub const MIN_SEGMENT_BYTES: u64 = 1024 * 1024;

/// Where the segments of a room with `room_bytes` of budget roll over, in
/// bytes: a quarter of the budget, between [`MIN_SEGMENT_BYTES`] and
/// [`SEGMENT_BYTES`], so that the segment the window starts in and the open
/// one add at most half the budget to the disk.
pub fn segment_bytes_for(room_bytes: usize) -> u64 {
    (room_bytes as u64 / 4).clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES)
}

/// How a journal is laid out.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The directory that holds the epoch and the segments.
    pub dir: PathBuf,
    /// How many events the in-memory window keeps (`--history`).
    pub history: usize,
    /// The bytes the in-memory window keeps (`--room-bytes`) and the
    /// node's total they count against; the disk follows the window.
    pub budget: LogBudget,
    /// Where a segment rolls over, in bytes.
    pub segment_bytes: u64,
    /// What to do with damage that is not a torn tail (`--journal-recover`):
    /// refuse to open (false), or move the damaged segments aside and start a
    /// new epoch above every seq seen (true).
    pub recover: bool,
}

impl JournalOptions {
    /// A journal in `dir` with no bound in bytes and the largest segment
    /// size, refusing to open over damage that is not a torn tail.
    pub fn new(dir: impl Into<PathBuf>, history: usize) -> Self {
        Self::bounded(dir, history, LogBudget::unlimited())
    }

    /// A journal in `dir` whose window keeps `budget`, with segments sized
    /// for it ([`segment_bytes_for`]).
    pub fn bounded(dir: impl Into<PathBuf>, history: usize, budget: LogBudget) -> Self {
        JournalOptions {
            dir: dir.into(),
            history,
            segment_bytes: segment_bytes_for(budget.room_bytes),
            budget,
            recover: false,
        }
    }
}

/// An event log backed by the journal. Reads come from memory.
///
/// Dropped, it closes its queue and waits for its writer thread to finish
/// the group in hand and exit, so the thread and its files are released
/// by the time the drop returns: drop it off the async workers.
pub struct JournalLog {
    memory: MemoryLog,
    appends: mpsc::Sender<Append>,
    /// The writer thread, joined on drop.
    writer: Option<std::thread::JoinHandle<()>>,
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
            options.budget.clone(),
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
        let writer = std::thread::Builder::new()
            .name("pushlab-journal".into())
            .spawn(move || writer.run(queue))?;
        Ok(JournalLog {
            memory,
            appends,
            writer: Some(writer),
        })
    }
}

impl Drop for JournalLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has written what
        // was queued; then its segment file is closed.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.appends, closed));
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the journal writer panicked");
            }
        }
    }
}

/// Marks the journal in `dir` as used now, for `--room-retention`: its
/// epoch file's modification time, set when the journal opens and when
/// its writer stops.
pub(crate) fn mark_used(dir: &std::path::Path) {
    let marked = fs::File::options()
        .write(true)
        .open(dir.join("epoch"))
        .and_then(|file| file.set_modified(SystemTime::now()));
    if let Err(err) = marked {
        tracing::warn!(%err, dir = %dir.display(), "could not mark a journal as used");
    }
}

/// When the journal in `dir` was last used: the newest modification time
/// of its files (the epoch file is marked at open and close, a segment
/// changes with every append).
fn last_used(dir: &std::path::Path) -> io::Result<SystemTime> {
    let mut newest = fs::metadata(dir)?.modified()?;
    for entry in fs::read_dir(dir)? {
        newest = newest.max(entry?.metadata()?.modified()?);
    }
    Ok(newest)
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

/// Durable logs (`--data-dir`): a journal per room. The lobby's is the
/// directory itself, so a journal written before rooms existed is the
/// lobby's; every other room's is `rooms/<name>/` below it, opened only
/// when the room is, and deleted once unused past `--room-retention`.
pub struct JournalStore {
    /// The `--data-dir`.
    pub dir: PathBuf,
    /// Events each log keeps in memory (`--history`).
    pub history: usize,
    /// Bytes each log keeps in memory (`--room-bytes`), and the node's
    /// total (`--total-bytes`) they share.
    pub budget: LogBudget,
    /// `--journal-recover`: start a damaged journal under a new epoch
    /// instead of refusing to start.
    pub recover: bool,
}

impl JournalStore {
    fn dir_of(&self, room: &RoomName) -> PathBuf {
        if room.as_str() == RoomName::LOBBY {
            self.dir.clone()
        } else {
            self.dir.join("rooms").join(room.as_str())
        }
    }
}

impl LogStore for JournalStore {
    fn budget(&self) -> &LogBudget {
        &self.budget
    }

    fn open(&self, room: &RoomName) -> io::Result<OpenedLog> {
        let options = JournalOptions {
            recover: self.recover,
            ..JournalOptions::bounded(self.dir_of(room), self.history, self.budget.clone())
        };
        let dir = options.dir.clone();
        let log = JournalLog::open(options)?;
        mark_used(&dir);
        Ok(OpenedLog::here(Arc::new(log)))
    }

    /// Deletes `rooms/<name>/` if none of its files changed for
    /// `unused_for`; never the lobby's, which is the data dir itself.
    fn delete_if_unused(&self, room: &RoomName, unused_for: Duration) -> io::Result<bool> {
        if room.as_str() == RoomName::LOBBY {
            return Ok(false);
        }
        let dir = self.dir_of(room);
        let unused = match last_used(&dir) {
            Ok(at) => at.elapsed().unwrap_or_default(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        if unused < unused_for {
            return Ok(false);
        }
        fs::remove_dir_all(&dir)?;
        Ok(true)
    }

    fn kept(&self) -> io::Result<Vec<RoomName>> {
        let rooms = self.dir.join("rooms");
        let entries = match std::fs::read_dir(&rooms) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut kept = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            // Only directories this store made have valid room names.
            match name.to_str().map(RoomName::parse) {
                Some(Ok(room)) => kept.push(room),
                _ => {
                    tracing::warn!(?name, dir = %rooms.display(), "not a room's journal; left alone")
                }
            }
        }
        kept.sort();
        Ok(kept)
    }
}

/// What the tests of every part of the journal share.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use super::JournalOptions;
    use crate::core::log::EventBody;
    use crate::core::names::Name;

    pub fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    pub fn say(text: &str) -> EventBody {
        EventBody::Message {
            text: text.into(),
            id: None,
        }
    }

    pub fn options(dir: &Path) -> JournalOptions {
        JournalOptions::new(dir, 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{name, options, say};
    use super::*;

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
    async fn an_append_the_node_total_has_no_room_for_is_refused_before_it_is_written() {
        // Arrange: a node total smaller than one message.
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions::bounded(dir.path(), 100, LogBudget::new(1 << 20, 100));
        let log = JournalLog::open(options.clone()).unwrap();

        // Act
        let refused = log.append(name("a"), say("too much")).await;

        // Assert
        assert!(matches!(refused, Err(LogError::Full)), "{refused:?}");
        assert_eq!(log.head(), 0);
        drop(log);
        assert_eq!(
            JournalLog::open(options).unwrap().head(),
            0,
            "nothing written"
        );
    }
}
