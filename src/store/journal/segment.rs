//! The journal's files: the record format (length, CRC-32, payload), the
//! segment files and their names, and [`parse_segment`], which reads one
//! segment back and says where and how it is damaged.
//!
//! It owns the bytes on disk and nothing else: it does not know the window
//! readers see, the writer thread, or what opening a damaged journal does
//! about the damage (see `replay`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::core::log::{Event, Seq};

/// The largest record payload accepted when reading back, in bytes; anything
/// larger is a corrupt length.
pub const MAX_RECORD: u32 = 1024 * 1024;
/// The size of a record header (length and CRC), in bytes.
const HEADER: usize = 8;

/// A segment file and the seq of its first event.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) first_seq: Seq,
    pub(super) path: PathBuf,
}

pub(super) fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("segment-{first_seq:020}.log"))
}

pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
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

pub(super) fn push_record(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Creates a segment that opens with a checkpoint of the chat history
/// (`messages`, oldest first).
pub(super) fn create_segment(path: &Path, messages: &[Arc<Event>]) -> io::Result<File> {
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
    use crate::core::log::EventBody;
    use crate::store::journal::testing::{name, say};

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
                _ => EventBody::Join { observer: false },
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
