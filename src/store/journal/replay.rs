//! Opening a journal: its epoch file, every segment read back in order, a
//! torn tail cut off, and damage before the end refused or, with
//! `--journal-recover`, recovered from under a new epoch (see the module
//! docs of [`crate::store::journal`]).
//!
//! It runs once, before the writer starts, and does not know the writer
//! thread or the window readers see; the record format is `segment`'s.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::log::{Epoch, Event, EventBody, Seq, RECENT_MESSAGES};
use crate::store::journal::segment::{
    create_segment, list_segments, parse_segment, segment_path, Damage, DamageKind, Segment,
};

pub(super) fn read_or_create_epoch(dir: &Path) -> io::Result<Epoch> {
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

/// The journal as read back, ready to be put into memory.
pub(super) struct Replayed {
    /// The chat history from the oldest segment's checkpoint.
    pub(super) checkpoint: Vec<Arc<Event>>,
    /// Every event still in the journal, in order.
    pub(super) events: Vec<Event>,
    /// The seq the first replayed event has (or the next append gets).
    pub(super) next_seq: Seq,
    pub(super) segments: Vec<Segment>,
}

/// Damage that is not a torn tail: what the journal refuses to open over.
pub(super) struct Found {
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
    pub(super) fn refusal(&self) -> io::Error {
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

pub(super) enum Replay {
    /// Everything is readable; a torn tail, if any, has been cut.
    Clean(Replayed),
    /// Damage that is not a torn tail; nothing has been changed.
    Damaged(Box<Found>),
}

/// Reads every segment back, cutting a torn tail off the last one.
pub(super) fn replay(dir: &Path) -> io::Result<Replay> {
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
pub(super) fn recover(dir: &Path, found: &Found) -> io::Result<Epoch> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::EventLog;
    use crate::store::journal::segment::push_record;
    use crate::store::journal::testing::{name, options, say};
    use crate::store::journal::{JournalLog, JournalOptions};

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
            budget: crate::core::log::LogBudget::unlimited(),
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
            budget: crate::core::log::LogBudget::unlimited(),
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
}
