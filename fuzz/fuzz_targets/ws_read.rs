//! Feeds arbitrary bytes to the WebSocket read path, as a client's socket
//! would deliver them: cut into reads of a size the input picks, each read
//! taking only what the read limit leaves room for, every whole message
//! decoded between reads.
//!
//! Beyond "never panics", it checks the read limits: undecoded bytes never
//! pass `READ_BUF_CAP`, a fragmented message never passes `MAX_BODY_BYTES`,
//! decoding always makes room again (so a connection can never stall), and
//! every text message handed on is UTF-8.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pushlab::protocol::MAX_BODY_BYTES;
use pushlab::ws_stream::{FrameReader, Inbound, READ_BUF_CAP};

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, mut rest)) = data.split_first() else {
        return;
    };
    // From 1 byte (every cut a header can have) to about 16 KiB.
    let read_size = usize::from(read_size) * 64 + 1;
    let mut reader = FrameReader::default();
    while !rest.is_empty() {
        let taken = reader.feed(&rest[..read_size.min(rest.len())]);
        rest = &rest[taken..];
        assert!(reader.buffered() <= READ_BUF_CAP, "{} undecoded", reader.buffered());
        loop {
            match reader.next_message() {
                Ok(Some(Inbound::Text(text))) => {
                    assert!(text.len() <= MAX_BODY_BYTES);
                    assert!(std::str::from_utf8(&text).is_ok());
                }
                Ok(Some(Inbound::Binary(bytes))) => assert!(bytes.len() <= MAX_BODY_BYTES),
                Ok(Some(Inbound::Ping(bytes) | Inbound::Pong(bytes))) => {
                    assert!(bytes.len() <= 125)
                }
                Ok(Some(Inbound::Close)) => {}
                Ok(None) => break,
                // The connection would close here.
                Err(_) => return,
            }
            assert!(reader.partial_len() <= MAX_BODY_BYTES);
        }
        assert!(reader.room() > 0, "decoding left no room to read into");
    }
});
