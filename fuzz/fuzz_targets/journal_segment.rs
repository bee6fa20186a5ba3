//! Feeds arbitrary bytes to the journal's segment reader, the code that
//! reads back whatever a crash or a failing disk left behind.
//!
//! Beyond "never panics", it checks that the reader never hands out a seq
//! twice: the events it returns have dense seqs from the segment's first,
//! the damage it reports is where the valid records end, and cutting there
//! leaves a clean segment with the same events.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pushlab::journal::parse_segment;

fuzz_target!(|data: &[u8]| {
    // The first eight bytes choose the segment's first seq, so that seqs at
    // the top of the range are tried as well.
    let (first_seq, bytes) = match data.split_first_chunk::<8>() {
        Some((head, rest)) => (u64::from_le_bytes(*head), rest),
        None => (1, data),
    };
    let parsed = parse_segment(bytes, first_seq);
    for (i, event) in parsed.events.iter().enumerate() {
        assert_eq!(Some(event.seq), first_seq.checked_add(i as u64), "dense seqs");
    }
    assert!(parsed.valid_len <= bytes.len() as u64);
    match &parsed.damage {
        None => assert_eq!(parsed.valid_len, bytes.len() as u64),
        Some(damage) => {
            assert_eq!(damage.offset, parsed.valid_len);
            assert!(damage.valid_after || damage.highest_seq_after.is_none());
        }
    }
    let cut = parse_segment(&bytes[..parsed.valid_len as usize], first_seq);
    assert!(cut.damage.is_none(), "a cut segment is clean");
    assert_eq!(cut.events.len(), parsed.events.len());
    for (kept, read) in cut.events.iter().zip(&parsed.events) {
        assert_eq!(kept.json(), read.json());
    }
});
