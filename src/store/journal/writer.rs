//! The journal's writer thread: it owns the open segment, takes every
//! append queued while it synced as one group, writes and syncs the group,
//! and only then puts its events into the window readers see; it rolls
//! segments over and deletes those the window has left behind.
//!
//! It does not read the journal back (see `replay`) and knows the record
//! format only through `segment`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::core::log::{now_millis, Event, EventBody, EventLog, LogError, MemoryLog};
use crate::core::names::Name;
use crate::store::journal::segment::{create_segment, push_record, segment_path, Segment};
use crate::store::journal::JournalOptions;

/// The most appends written and synced as one group.
const MAX_GROUP: usize = 4096;

/// One append, queued for the writer thread.
pub(super) struct Append {
    pub(super) name: Name,
    pub(super) body: EventBody,
    pub(super) done: oneshot::Sender<Result<Arc<Event>, LogError>>,
}

/// The writer thread's state.
pub(super) struct Writer {
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
    pub(super) fn open(
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

    pub(super) fn run(&mut self, queue: mpsc::Receiver<Append>) {
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
        // The room has closed: its journal was last used now.
        crate::store::journal::mark_used(&self.options.dir);
    }

    /// Writes and syncs a group, then publishes and acknowledges it.
    fn commit(&mut self, group: Vec<Append>) {
        if let Some(reason) = &self.failed {
            for append in group {
                let _ = append.done.send(Err(LogError::Storage(reason.clone())));
            }
            return;
        }
        let mut next = self.memory.head() + 1;
        let ts = now_millis();
        self.buf.clear();
        let mut events = Vec::with_capacity(group.len());
        let mut waiting = Vec::with_capacity(group.len());
        for append in group {
            let event = Event::new(next, ts, append.name, append.body);
            // Refused before it is written, when the node's total has no
            // room for it even once this room's window is empty.
            if !self.memory.could_keep(event.cost()) {
                let _ = append.done.send(Err(LogError::Full));
                continue;
            }
            next += 1;
            push_record(&mut self.buf, event.json().as_bytes());
            events.push(event);
            waiting.push(append.done);
        }
        if events.is_empty() {
            return;
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
        // event the window keeps, whether the window was trimmed by count
        // or by bytes: everything in it is older than that.
        let window_start = self.memory.oldest();
        while self.segments.len() > 1 && self.segments[1].first_seq <= window_start {
            let old = self.segments.remove(0);
            fs::remove_file(&old.path)?;
            tracing::debug!(file = %old.path.display(), "deleted a journal segment");
        }
        File::open(&self.options.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::core::log::{EventBody, EventLog, LogBudget, RECENT_MESSAGE_BYTES};
    use crate::store::journal::segment::list_segments;
    use crate::store::journal::testing::{name, options, say};
    use crate::store::journal::{JournalLog, JournalOptions};
    use std::fs;
    use std::sync::Arc;

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
    async fn a_journal_fed_large_messages_keeps_its_window_and_its_disk_within_the_byte_budget() {
        // Arrange: a 256 KiB budget and 128 KiB segments, against 300
        // messages of 2000 emoji (about 2.4 MB of JSON) and --history 10,000.
        let dir = tempfile::tempdir().unwrap();
        let room_bytes = 256 * 1024;
        let options = JournalOptions {
            segment_bytes: 128 * 1024,
            ..JournalOptions::bounded(dir.path(), 10_000, LogBudget::new(room_bytes, usize::MAX))
        };
        let emoji = say(&"\u{1F600}".repeat(2000));

        // Act
        {
            let log = JournalLog::open(options.clone()).unwrap();
            for _ in 0..300 {
                log.append(name("a"), emoji.clone()).await.unwrap();
            }
            assert!(log.memory.bytes() <= room_bytes, "{}", log.memory.bytes());
        }
        let reopened = JournalLog::open(options.clone()).unwrap();

        // Assert: the disk holds the window, the segment it starts in, the
        // open one, and a checkpoint in each.
        let segments = list_segments(dir.path()).unwrap();
        let disk: u64 = segments
            .iter()
            .map(|s| fs::metadata(&s.path).unwrap().len())
            .sum();
        let bound = room_bytes as u64
            + 2 * options.segment_bytes
            + segments.len() as u64 * RECENT_MESSAGE_BYTES as u64;
        assert!(disk <= bound, "{disk} bytes on disk, more than {bound}");
        assert!(reopened.memory.bytes() <= room_bytes);
        assert_eq!(reopened.head(), 300);
        let read = reopened.read_since(0, None);
        assert!(read.gap, "a reader from the start is told what was trimmed");
        assert_eq!(read.events.last().map(|e| e.seq), Some(300));
    }

    #[tokio::test]
    async fn segments_roll_over_and_old_ones_are_deleted_but_history_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            dir: dir.path().to_owned(),
            history: 100,
            budget: crate::core::log::LogBudget::unlimited(),
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
}
