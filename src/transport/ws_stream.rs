//! One WebSocket's TCP stream, owned by its socket task: whole messages in,
//! frames out, with the outbound side bounded in bytes.
//!
//! Frames are encoded straight into one write buffer and written with a
//! plain `send` from the socket task itself, so a delivery costs one task
//! wake-up and one copy. That buffer *is* the outbound queue: log events are
//! encoded only while it is under its soft limit ([`WS_QUEUE_BYTES`]), so a
//! client that stops reading simply stops being fed and resumes from its
//! cursor later. Small control frames may go past the soft limit up to a hard
//! limit (twice the soft one); a socket that reaches it is closed, so a
//! client's memory on the server never grows past that.
//!
//! Buffers are released whenever they empty, so an idle socket holds no
//! buffer memory at all. This module knows frames and bytes, not the log or
//! the protocol's messages.

use std::io;

use actix_codec::{Decoder as _, Encoder as _};
use actix_http::ws::{Codec, Frame, Item, Message, ProtocolError};
use actix_web::web::{Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::protocol::MAX_BODY_BYTES;
use crate::stats::{Stats, Transport};

/// The soft limit of a WebSocket's outbound buffer, in bytes.
pub const WS_QUEUE_BYTES: usize = 256 * 1024;

/// How much a read asks the kernel for at most, in bytes.
const READ_CHUNK: usize = 4 * 1024;

/// A write buffer that has emptied keeps its allocation up to this size, in
/// bytes; a bigger one (left over from a burst) is released.
const KEEP_WRITE_CAPACITY: usize = 4 * 1024;

/// A whole message from the client, continuations already put together.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close,
}

/// What happened to a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Refused: the buffer is at its hard limit.
    Overflow,
}

/// What a read turned up.
#[derive(Debug)]
pub enum Received {
    /// Bytes arrived; take the messages with [`WsStream::next_message`].
    Data,
    /// Nothing to read after all (a spurious wake-up).
    Nothing,
    /// The client closed its side, or the connection failed.
    Gone,
}

/// The server side of one WebSocket connection.
pub struct WsStream {
    stream: TcpStream,
    codec: Codec,
    /// Bytes read and not yet decoded.
    read_buf: BytesMut,
    /// Encoded frames not yet accepted by the kernel.
    write_buf: BytesMut,
    /// A fragmented message being put together: whether it is text, and its
    /// payload so far.
    partial: Option<(bool, BytesMut)>,
    /// `write_buf.len()` as last reported to the stats.
    reported_queued: usize,
    stats: std::sync::Arc<Stats>,
}

impl WsStream {
    /// Wraps an upgraded connection; `read_buf` holds whatever the client
    /// sent after its handshake and was already read. The server sets
    /// `TCP_NODELAY` on every connection it accepts (`src/lib.rs`).
    pub fn new(stream: TcpStream, read_buf: BytesMut, stats: std::sync::Arc<Stats>) -> Self {
        WsStream {
            stream,
            codec: Codec::new().max_size(MAX_BODY_BYTES),
            read_buf,
            write_buf: BytesMut::new(),
            partial: None,
            reported_queued: 0,
            stats,
        }
    }

    /// Whether another log event may be queued now (the soft limit).
    pub fn has_room(&self) -> bool {
        self.write_buf.len() < WS_QUEUE_BYTES
    }

    /// Bytes encoded and not yet written to the connection.
    pub fn queued(&self) -> usize {
        self.write_buf.len()
    }

    /// Encodes a frame unless that would pass the hard limit.
    pub fn push(&mut self, message: Message) -> Pushed {
        if self.write_buf.len() + frame_len(&message) > 2 * WS_QUEUE_BYTES
            && !self.write_buf.is_empty()
        {
            return Pushed::Overflow;
        }
        self.encode(message);
        Pushed::Queued
    }

    /// Encodes a frame past every limit: a log event the caller made room
    /// for with [`WsStream::has_room`], or the closing frame.
    pub fn push_unchecked(&mut self, message: Message) {
        self.encode(message);
    }

    fn encode(&mut self, message: Message) {
        if let Err(err) = self.codec.encode(message, &mut self.write_buf) {
            // Encoding a server frame cannot fail; if it ever does, the frame
            // is dropped and the reason logged.
            tracing::error!(%err, "could not encode a websocket frame");
        }
    }

    /// Writes as much of the buffer as the kernel takes now, without waiting.
    /// An error means the connection is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.write_buf.is_empty() {
            match self.stream.try_write(&self.write_buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    let _ = self.write_buf.split_to(written);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        if self.write_buf.is_empty() && self.write_buf.capacity() > KEEP_WRITE_CAPACITY {
            self.write_buf = BytesMut::new();
        }
        self.report_queued();
        Ok(())
    }

    fn report_queued(&mut self) {
        let now = self.write_buf.len();
        if now != self.reported_queued {
            let delta = now as i64 - self.reported_queued as i64;
            self.stats.queued(Transport::Ws, delta);
            self.reported_queued = now;
        }
    }

    /// Resolves when the connection may have something to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Resolves when the connection may take more bytes.
    pub async fn writable(&self) -> io::Result<()> {
        self.stream.writable().await
    }

    /// Reads what the kernel has, without waiting.
    pub fn receive(&mut self) -> Received {
        self.read_buf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.read_buf) {
            Ok(0) => Received::Gone,
            Ok(_) => Received::Data,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.release_read_buf();
                Received::Nothing
            }
            Err(_) => Received::Gone,
        }
    }

    /// The next whole message among the bytes read so far, if there is one.
    pub fn next_message(&mut self) -> Result<Option<Inbound>, ProtocolError> {
        loop {
            let Some(frame) = self.codec.decode(&mut self.read_buf)? else {
                self.release_read_buf();
                return Ok(None);
            };
            let message = match frame {
                Frame::Text(text) => Inbound::Text(text),
                Frame::Binary(bytes) => Inbound::Binary(bytes),
                Frame::Ping(payload) => Inbound::Ping(payload),
                Frame::Pong(payload) => Inbound::Pong(payload),
                Frame::Close(_) => Inbound::Close,
                Frame::Continuation(item) => match self.continue_message(item)? {
                    Some(message) => message,
                    None => continue,
                },
            };
            return Ok(Some(message));
        }
    }

    /// Adds a fragment to the message being put together; returns the
    /// message once its last fragment is in.
    fn continue_message(&mut self, item: Item) -> Result<Option<Inbound>, ProtocolError> {
        let (bytes, last) = match item {
            Item::FirstText(bytes) => {
                self.partial = Some((true, BytesMut::from(&bytes[..])));
                return Ok(None);
            }
            Item::FirstBinary(bytes) => {
                self.partial = Some((false, BytesMut::from(&bytes[..])));
                return Ok(None);
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        // The codec already refuses a continuation that never started.
        let Some((is_text, so_far)) = self.partial.as_mut() else {
            return Err(ProtocolError::ContinuationNotStarted);
        };
        if so_far.len() + bytes.len() > MAX_BODY_BYTES {
            return Err(ProtocolError::Overflow);
        }
        so_far.extend_from_slice(&bytes);
        if !last {
            return Ok(None);
        }
        let is_text = *is_text;
        let whole = self
            .partial
            .take()
            .map(|(_, b)| b.freeze())
            .unwrap_or_default();
        Ok(Some(if is_text {
            Inbound::Text(whole)
        } else {
            Inbound::Binary(whole)
        }))
    }

    fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    /// Sends everything still buffered.
    pub async fn drain(&mut self) {
        while !self.write_buf.is_empty() {
            if self.writable().await.is_err() || self.flush().is_err() {
                return;
            }
        }
    }

    /// Sends what is still buffered, then waits for the client's answer to a
    /// close the server started: its own close frame, or the end of its
    /// stream. Reading first matters: closing a socket with unread bytes
    /// makes the kernel send a reset, which can destroy the close frame
    /// before the client reads it.
    pub async fn linger(&mut self) {
        self.drain().await;
        loop {
            if self.readable().await.is_err() {
                return;
            }
            match self.receive() {
                Received::Gone => return,
                Received::Nothing => continue,
                Received::Data => loop {
                    match self.next_message() {
                        Ok(Some(Inbound::Close)) | Err(_) => return,
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                    }
                },
            }
        }
    }

    /// Closes at once: unsent bytes are dropped and the client gets a reset.
    /// For a client that stopped reading, which would not read them anyway.
    pub fn abort(self) {
        // A zero linger does not block: the close sends a reset at once.
        let _ = self.stream.set_zero_linger();
    }
}

impl Drop for WsStream {
    fn drop(&mut self) {
        self.stats
            .queued(Transport::Ws, -(self.reported_queued as i64));
    }
}

/// The encoded size of a frame, near enough for the limit check.
fn frame_len(message: &Message) -> usize {
    let payload = match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        _ => 2,
    };
    payload + 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A server-side stream and the raw client end of the same connection.
    async fn pair() -> (WsStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream = WsStream::new(server, BytesMut::new(), Default::default());
        (stream, client)
    }

    /// What a client sends: masked frames.
    fn client_frames(messages: Vec<Message>) -> BytesMut {
        let mut codec = Codec::new().client_mode();
        let mut bytes = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut bytes).unwrap();
        }
        bytes
    }

    async fn receive_all(stream: &mut WsStream) -> Result<Vec<Inbound>, ProtocolError> {
        let mut messages = Vec::new();
        loop {
            stream.readable().await.unwrap();
            match stream.receive() {
                Received::Gone => return Ok(messages),
                Received::Nothing => continue,
                Received::Data => {
                    while let Some(message) = stream.next_message()? {
                        messages.push(message);
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_message_sent_in_fragments_arrives_whole() {
        let (mut stream, mut client) = pair().await;
        let bytes = client_frames(vec![
            Message::Continuation(Item::FirstText(Bytes::from_static(b"{\"type\":"))),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Continuation(Item::Continue(Bytes::from_static(b"\"leave\""))),
            Message::Continuation(Item::Last(Bytes::from_static(b"}"))),
        ]);
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();

        let messages = receive_all(&mut stream).await.unwrap();

        assert_eq!(
            messages,
            vec![
                Inbound::Ping(Bytes::from_static(b"p")),
                Inbound::Text(Bytes::from_static(b"{\"type\":\"leave\"}")),
            ]
        );
    }

    #[tokio::test]
    async fn fragments_adding_up_to_more_than_the_body_limit_are_refused() {
        let (mut stream, mut client) = pair().await;
        let half = Bytes::from(vec![b'x'; MAX_BODY_BYTES / 2 + 1]);
        let bytes = client_frames(vec![
            Message::Continuation(Item::FirstText(half.clone())),
            Message::Continuation(Item::Last(half)),
        ]);
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();

        let result = receive_all(&mut stream).await;

        assert!(matches!(result, Err(ProtocolError::Overflow)), "{result:?}");
    }

    #[tokio::test]
    async fn the_buffer_has_room_until_its_soft_limit_and_controls_fit_up_to_the_hard_limit() {
        let (mut stream, _client) = pair().await;
        let text = |len: usize| Message::Text("x".repeat(len).into());
        assert!(stream.has_room());

        stream.push_unchecked(text(WS_QUEUE_BYTES));
        assert!(!stream.has_room());
        assert_eq!(stream.push(text(WS_QUEUE_BYTES - 100)), Pushed::Queued);
        assert_eq!(stream.push(text(100)), Pushed::Overflow);
    }

    #[tokio::test]
    async fn flushed_frames_reach_the_client_and_leave_no_buffer_behind() {
        let (mut stream, mut client) = pair().await;
        stream.push_unchecked(Message::Text("x".repeat(10_000).into()));
        assert!(stream.queued() > 10_000);

        stream.flush().unwrap();

        assert_eq!(stream.queued(), 0);
        assert_eq!(
            stream.write_buf.capacity(),
            0,
            "a burst's buffer is released"
        );
        let mut frame = vec![0; 10_004];
        client.read_exact(&mut frame).await.unwrap();
        assert_eq!(
            &frame[..4],
            &[0x81, 126, 0x27, 0x10],
            "a text frame of 10,000 bytes"
        );
    }
}
