//! HTTP/2 frames, counted per stream: an HTTP/2 connection carries many
//! requests at once, so its bytes cannot be split between them by time as
//! an HTTP/1.1 connection's are (see [`super::traffic`]). [`FrameCounter`]
//! reads the 9-byte header of every frame that goes by, in each direction
//! (RFC 9113 §4.1), and tells the connection's [`StreamMeter`] the frame's
//! stream and size; the frames' contents are left to the HTTP/2 layer.
//!
//! It sits above TLS, so what it counts is the frames before encryption:
//! headers as HPACK compressed them, bodies, and the frames' own headers.
//! It knows nothing of requests, routes or rooms.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{sleep, Sleep};

use super::traffic::StreamMeter;

/// How long an HTTP/2 connection may stay open with no stream, as nginx's
/// `keepalive_timeout`: its client answering pings does not keep it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// The client connection preface (RFC 9113 §3.4), which precedes its first
/// frame and belongs to no stream.
const CLIENT_PREFACE_BYTES: usize = 24;

/// The size of a frame header.
const FRAME_HEADER_BYTES: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;

/// A frame header as it stands on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The payload's length.
    pub length: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        FrameHeader {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    /// The whole frame's size: header and payload.
    fn size(&self) -> usize {
        FRAME_HEADER_BYTES + self.length
    }

    /// Whether it ends its sender's side of the stream.
    fn ends_stream(&self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.flags & END_STREAM != 0
    }
}

/// Finds the frame headers in one direction's bytes, however they are cut.
#[derive(Debug, Default)]
struct FrameReader {
    /// Bytes still to pass before the first frame (the client preface).
    preface_left: usize,
    /// The frame header being read, and how much of it is in.
    header: [u8; FRAME_HEADER_BYTES],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
}

impl FrameReader {
    fn after(preface: usize) -> Self {
        FrameReader {
            preface_left: preface,
            ..Default::default()
        }
    }

    /// Passes `bytes`, calling `frame` for each header completed in them.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                &mut self.preface_left
            } else {
                &mut self.payload_left
            };
            if *skip > 0 {
                let passed = (*skip).min(bytes.len());
                *skip -= passed;
                bytes = &bytes[passed..];
                continue;
            }
            let take = (FRAME_HEADER_BYTES - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == FRAME_HEADER_BYTES {
                self.have = 0;
                let header = FrameHeader::parse(&self.header);
                self.payload_left = header.length;
                frame(header);
            }
        }
    }
}

/// Counts one HTTP/2 connection's frames, both ways, into its
/// [`StreamMeter`].
#[derive(Debug)]
pub struct FrameCounter {
    inbound: FrameReader,
    outbound: FrameReader,
    streams: Arc<StreamMeter>,
    /// Runs while the connection has no stream; boxed, and there only then.
    idle: Option<Pin<Box<Sleep>>>,
}

impl Default for FrameCounter {
    fn default() -> Self {
        FrameCounter {
            inbound: FrameReader::after(CLIENT_PREFACE_BYTES),
            outbound: FrameReader::default(),
            streams: Arc::default(),
            idle: None,
        }
    }
}

impl FrameCounter {
    /// The meter the connection's requests bind their charges to.
    pub fn streams(&self) -> &Arc<StreamMeter> {
        &self.streams
    }

    /// Counts bytes read from the client (after decryption).
    pub fn read(&mut self, bytes: &[u8]) {
        let streams = &self.streams;
        let mut opened = false;
        self.inbound.feed(bytes, |frame| {
            // Client streams are odd; a HEADERS frame on a new one opens it.
            if frame.kind == HEADERS && frame.stream % 2 == 1 {
                streams.opened(frame.stream);
                opened = true;
            }
            streams.read(
                frame.stream,
                frame.size(),
                frame.ends_stream(),
                frame.kind == RST_STREAM,
            );
        });
        if opened {
            // A request, however quickly answered, is use: the clock
            // starts again from the next time there is no stream.
            self.idle = None;
        }
    }

    /// Ready once the connection has had no stream for [`IDLE_TIMEOUT`];
    /// `cx` is woken then. A stream opening stops the clock, and the last
    /// one closing starts it again.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.streams.tracked() > 0 {
            self.idle = None;
            return Poll::Pending;
        }
        self.idle
            .get_or_insert_with(|| Box::pin(sleep(IDLE_TIMEOUT)))
            .as_mut()
            .poll(cx)
    }

    /// Counts bytes written to the client (before encryption).
    pub fn wrote(&mut self, bytes: &[u8]) {
        let streams = &self.streams;
        self.outbound.feed(bytes, |frame| {
            streams.wrote(
                frame.stream,
                frame.size(),
                frame.ends_stream(),
                frame.kind == RST_STREAM,
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut bytes = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
        ];
        bytes.extend(stream.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, payload));
        bytes
    }

    #[test]
    fn frame_headers_are_found_however_the_bytes_are_cut() {
        // Arrange: two frames, read one byte at a time.
        let mut wire = frame(HEADERS, 0x4, 1, 20);
        wire.extend(frame(DATA, END_STREAM, 1, 70_000));
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();

        // Act
        for byte in wire.chunks(1) {
            reader.feed(byte, |header| seen.push(header));
        }

        // Assert
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].kind, seen[0].stream, seen[0].length),
            (HEADERS, 1, 20)
        );
        assert_eq!((seen[1].length, seen[1].ends_stream()), (70_000, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_goes_idle_only_once_it_has_had_no_stream_for_the_timeout() {
        use std::future::poll_fn;
        // Arrange: the client opens stream 1 and leaves it open.
        let mut counter = FrameCounter::default();
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(HEADERS, 0x4, 1, 10));
        counter.read(&wire);

        // Act / Assert: held open however long the stream is.
        tokio::time::sleep(IDLE_TIMEOUT * 3).await;
        let open = poll_fn(|cx| Poll::Ready(counter.poll_idle(cx))).await;
        assert!(open.is_pending(), "a connection with a stream is not idle");

        // Both sides end the stream: the clock starts then.
        counter.read(&frame(DATA, END_STREAM, 1, 0));
        counter.wrote(&frame(HEADERS, 0x4 | END_STREAM, 1, 5));
        let started = tokio::time::Instant::now();
        poll_fn(|cx| counter.poll_idle(cx)).await;
        assert_eq!(started.elapsed(), IDLE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_between_two_looks_still_restarts_the_idle_clock() {
        use std::future::poll_fn;
        // Arrange: idle for most of the timeout.
        let mut counter = FrameCounter::default();
        counter.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let waiting = poll_fn(|cx| Poll::Ready(counter.poll_idle(cx))).await;
        assert!(waiting.is_pending());
        tokio::time::sleep(IDLE_TIMEOUT - Duration::from_secs(1)).await;

        // Act: a whole request and answer before the clock is looked at.
        counter.read(&frame(HEADERS, 0x4 | END_STREAM, 1, 10));
        counter.wrote(&frame(HEADERS, 0x4 | END_STREAM, 1, 5));
        let started = tokio::time::Instant::now();
        poll_fn(|cx| counter.poll_idle(cx)).await;

        // Assert: a full timeout from the request, not from before it.
        assert_eq!(started.elapsed(), IDLE_TIMEOUT);
    }

    #[test]
    fn the_client_preface_belongs_to_no_frame() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(0x4, 0, 0, 6));
        let mut reader = FrameReader::after(CLIENT_PREFACE_BYTES);
        let mut seen = Vec::new();
        reader.feed(&wire, |header| seen.push(header));
        assert_eq!(
            seen,
            vec![FrameHeader {
                length: 6,
                kind: 0x4,
                flags: 0,
                stream: 0
            }]
        );
    }
}
