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
//! window, so the journal stays bounded. A torn or corrupt tail (a crash
//! mid-write) is cut at the last whole record, with a log line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::log::{now_millis, Batch, Epoch, Event, EventBody, EventLog, LogError, MemoryLog, Seq};
use crate::names::Name;

/// Where a segment rolls over, in bytes.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// The most appends written and synced as one group.
const MAX_GROUP: usize = 4096;
/// The largest record payload accepted when reading back; anything larger is
/// a corrupt length.
const MAX_RECORD: u32 = 1024 * 1024;

/// How a journal is laid out.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The directory that holds the epoch and the segments.
    pub dir: PathBuf,
    /// How many events the in-memory window keeps (`--history`).
    pub history: usize,
    /// Where a segment rolls over, in bytes.
    pub segment_bytes: u64,
}

impl JournalOptions {
    /// A journal in `dir` with the default segment size.
    pub fn new(dir: impl Into<PathBuf>, history: usize) -> Self {
        JournalOptions {
            dir: dir.into(),
            history,
            segment_bytes: SEGMENT_BYTES,
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
    pub fn open(options: JournalOptions) -> io::Result<JournalLog> {
        fs::create_dir_all(&options.dir)?;
        let epoch = read_or_create_epoch(&options.dir)?;
        let replayed = replay(&options.dir)?;
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
    fn epoch(&self) -> &Epoch {
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
    let path = dir.join("epoch");
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(Epoch::from_string(text.trim().to_owned()))
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    // Written to the side and renamed, so a crash never leaves half an epoch.
    let epoch = Epoch::random();
    let tmp = dir.join("epoch.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(epoch.as_str().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(epoch)
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

struct Replayed {
    /// The chat history from the oldest segment's checkpoint.
    checkpoint: Vec<Arc<Event>>,
    /// Every event still in the journal, in order.
    events: Vec<Event>,
    /// The seq the first replayed event has (or the next append gets).
    next_seq: Seq,
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct Checkpoint {
    checkpoint: Vec<Box<serde_json::value::RawValue>>,
}

/// Reads every segment back, cutting a torn tail off the last one.
fn replay(dir: &Path) -> io::Result<Replayed> {
    let segments = list_segments(dir)?;
    let mut replayed = Replayed {
        checkpoint: Vec::new(),
        events: Vec::new(),
        next_seq: segments.first().map_or(1, |s| s.first_seq),
        segments: segments.clone(),
    };
    let last = segments.len().saturating_sub(1);
    for (index, segment) in segments.iter().enumerate() {
        let (records, whole_len, problem) = read_records(&segment.path)?;
        if let Some(problem) = problem {
            if index != last {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged before its end ({problem}); pushlab will not guess at what follows",
                        segment.path.display()
                    ),
                ));
            }
            tracing::warn!(
                file = %segment.path.display(),
                kept_bytes = whole_len,
                %problem,
                "journal tail is torn or corrupt; cutting it at the last whole event"
            );
            let file = OpenOptions::new().write(true).open(&segment.path)?;
            file.set_len(whole_len)?;
            file.sync_all()?;
        }
        for payload in records {
            let text = std::str::from_utf8(&payload)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            if text.starts_with("{\"checkpoint\"") {
                if index == 0 {
                    let checkpoint: Checkpoint = serde_json::from_str(text)
                        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                    for raw in checkpoint.checkpoint {
                        let event = Event::from_json(raw.get())
                            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                        replayed.checkpoint.push(Arc::new(event));
                    }
                }
                continue;
            }
            let event = Event::from_json(text)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            let expected = replayed.next_seq + replayed.events.len() as Seq;
            if event.seq != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: expected seq {expected}, found {}",
                        segment.path.display(),
                        event.seq
                    ),
                ));
            }
            replayed.events.push(event);
        }
    }
    Ok(replayed)
}

/// The whole records of a file, the length they take, and what was wrong
/// after them, if anything.
fn read_records(path: &Path) -> io::Result<(Vec<Vec<u8>>, u64, Option<String>)> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    let mut whole: u64 = 0;
    loop {
        let mut header = [0u8; 8];
        match read_full(&mut reader, &mut header)? {
            0 => return Ok((records, whole, None)),
            8 => {}
            n => {
                return Ok((
                    records,
                    whole,
                    Some(format!("a {n}-byte partial record header")),
                ))
            }
        }
        let len = u32::from_le_bytes(header[0..4].try_into().expect("four bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("four bytes"));
        if len > MAX_RECORD {
            return Ok((
                records,
                whole,
                Some(format!("a record length of {len} bytes")),
            ));
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut reader, &mut payload)?;
        if got < payload.len() {
            return Ok((
                records,
                whole,
                Some(format!("a record cut off after {got} of {len} bytes")),
            ));
        }
        if crc32fast::hash(&payload) != crc {
            return Ok((
                records,
                whole,
                Some("a record whose checksum does not match".into()),
            ));
        }
        whole += 8 + u64::from(len);
        records.push(payload);
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
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
                let file = create_segment(&segment.path, &memory)?;
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
        self.file = create_segment(&segment.path, &self.memory)?;
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

/// Creates a segment that opens with a checkpoint of the chat history.
fn create_segment(path: &Path, memory: &MemoryLog) -> io::Result<File> {
    let messages = memory.recent_messages();
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
            (log.epoch().clone(), acked)
        };
        let log = JournalLog::open(options(dir.path())).unwrap();
        assert_eq!(log.epoch(), &epoch);
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

    #[tokio::test]
    async fn damage_before_the_last_segment_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            dir: dir.path().to_owned(),
            history: 10_000,
            segment_bytes: 1024,
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
}
