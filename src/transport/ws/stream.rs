//! One WebSocket's connection, owned by its socket task: whole messages in,
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
//! the protocol's messages. It reads and writes through the connection the
//! upgrade came on (`crate::net::conn`), which counts every byte and cuts a
//! client that takes nothing of what is queued for its send timeout; none
//! of that is done again here.
//!
//! Inbound, a [`FrameReader`] bounds what a client can make the server hold
//! before anything is decoded:
//!
//! - a frame whose header announces more than [`MAX_BODY_BYTES`] is refused
//!   as soon as its header is in, before any of its payload is buffered
//!   (actix-http's codec only checks the size once the whole frame has
//!   arrived, so it would buffer whatever the client keeps sending);
//! - the bytes read and not yet decoded never pass [`READ_BUF_CAP`], one
//!   largest frame: reading stops there until the socket task has decoded
//!   what it holds, so pipelined frames cannot outrun their handling;
//! - the fragments of one message never add up to more than
//!   [`MAX_BODY_BYTES`];
//! - a text message that is not UTF-8 is refused (RFC 6455 §8.1).
//!
//! Each refusal is a [`ReadError`] that names its close code.
//!
//! Fragments are put together here, not by a library: actix-http 3's codec
//! hands out each fragment as a `Frame::Continuation` and leaves aggregation
//! to its caller, and the aggregator that exists (actix-ws's
//! `AggregatedMessageStream`) reads from an actix-web request payload, not
//! from a socket the task owns, and would bring a second crate for about
//! thirty lines of code.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_codec::{Decoder as _, Encoder as _};
use actix_http::ws::{CloseCode, Codec, Frame, Item, Message, ProtocolError};
use actix_web::web::{Bytes, BytesMut};
use bytes::buf::Limit;
use bytes::{Buf as _, BufMut as _};
use tokio::io::AsyncWrite as _;

use tokio::net::TcpStream;

use crate::net::conn::{Conn, ReadySocket};

use crate::core::protocol::MAX_BODY_BYTES;
use crate::http::stats::Stats;
use crate::transport::Transport;

/// The soft limit of a WebSocket's outbound buffer, in bytes.
pub const WS_QUEUE_BYTES: usize = 256 * 1024;

/// How much room a read makes in the read buffer when it has none, in bytes.
const READ_CHUNK: usize = 4 * 1024;

/// The longest frame header, in bytes: two, an eight-byte extended length
/// and a four-byte mask key (RFC 6455 §5.2).
const MAX_HEADER_BYTES: usize = 14;

/// The most bytes read from a client and not yet decoded: one frame of the
/// largest size allowed. Reading stops there until decoding makes room.
pub const READ_BUF_CAP: usize = MAX_BODY_BYTES + MAX_HEADER_BYTES;

/// The largest payload of a control frame, in bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A whole message from the client, continuations already put together.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close,
}

/// What [`WsStream::ready`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// The client may have sent something: [`WsStream::receive`] it.
    Readable,
    /// The connection took some of what was queued, and it was written.
    Sent,
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

/// Why a client's input was refused. Each kind has its close code.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame breaks RFC 6455.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A frame's header announces a payload over [`MAX_BODY_BYTES`].
    #[error("a frame of {0} bytes is over the {MAX_BODY_BYTES}-byte limit")]
    FrameTooLarge(u64),
    /// The fragments of a message add up to more than [`MAX_BODY_BYTES`].
    #[error("a message over the {MAX_BODY_BYTES}-byte limit")]
    MessageTooLarge,
    /// A text message is not valid UTF-8.
    #[error("text that is not UTF-8")]
    InvalidUtf8,
}

impl ReadError {
    /// The close code RFC 6455 (§7.4.1) gives this refusal.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ReadError::Protocol(_) => CloseCode::Protocol,
            ReadError::FrameTooLarge(_) | ReadError::MessageTooLarge => CloseCode::Size,
            ReadError::InvalidUtf8 => CloseCode::Invalid,
        }
    }
}

/// Turns the bytes a client sends into whole messages, holding at most
/// [`READ_BUF_CAP`] bytes undecoded and [`MAX_BODY_BYTES`] of a fragmented
/// message. It knows no socket: bytes come in through [`FrameReader::feed`],
/// or from a socket through [`WsStream::receive`].
pub struct FrameReader {
    codec: Codec,
    /// Bytes read and not yet decoded; never more than [`READ_BUF_CAP`]
    /// once what it holds has been decoded.
    buf: BytesMut,
    /// A fragmented message being put together: whether it is text, and its
    /// payload so far.
    partial: Option<(bool, BytesMut)>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new(BytesMut::new())
    }
}

impl FrameReader {
    /// A reader that starts with bytes already read (after a handshake).
    pub fn new(buf: BytesMut) -> Self {
        FrameReader {
            codec: Codec::new().max_size(MAX_BODY_BYTES),
            buf,
            partial: None,
        }
    }

    /// How many more bytes may be read before the next decode.
    pub fn room(&self) -> usize {
        READ_BUF_CAP.saturating_sub(self.buf.len())
    }

    /// Bytes read and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of a fragmented message put together so far.
    pub fn partial_len(&self) -> usize {
        self.partial.as_ref().map_or(0, |(_, so_far)| so_far.len())
    }

    /// Takes as much of `bytes` as there is room for; returns how many.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.room());
        self.buf.extend_from_slice(&bytes[..taken]);
        taken
    }

    /// The buffer a socket reads into, limited to the room there is.
    fn read_buffer(&mut self) -> Limit<&mut BytesMut> {
        let room = self.room();
        self.buf.reserve(room.min(READ_CHUNK));
        (&mut self.buf).limit(room)
    }

    /// The next whole message among the bytes taken so far, if there is one.
    /// After an error the stream cannot be decoded any further.
    pub fn next_message(&mut self) -> Result<Option<Inbound>, ReadError> {
        loop {
            check_header(&self.buf, self.partial_len())?;
            let Some(frame) = self.codec.decode(&mut self.buf)? else {
                self.release();
                return Ok(None);
            };
            let message = match frame {
                Frame::Text(text) => Inbound::Text(utf8(text)?),
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
    fn continue_message(&mut self, item: Item) -> Result<Option<Inbound>, ReadError> {
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
            return Err(ProtocolError::ContinuationNotStarted.into());
        };
        if so_far.len() + bytes.len() > MAX_BODY_BYTES {
            return Err(ReadError::MessageTooLarge);
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
        // Text is checked whole: a character may be split across fragments.
        Ok(Some(if is_text {
            Inbound::Text(utf8(whole)?)
        } else {
            Inbound::Binary(whole)
        }))
    }

    /// Drops an emptied buffer's allocation.
    fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

/// Refuses a frame from its header alone, before its payload is buffered:
/// a frame announcing more than [`MAX_BODY_BYTES`], a fragment that would
/// take the message being put together (`so_far` bytes) past that, or a
/// control frame announcing more than 125 bytes. A header that is not all
/// in yet, and every other check, is left to the codec.
fn check_header(buf: &[u8], so_far: usize) -> Result<(), ReadError> {
    let (Some(len), Some(&first)) = (announced_len(buf), buf.first()) else {
        return Ok(());
    };
    let opcode = first & 0x0F;
    if opcode & 0x08 != 0 && len > MAX_CONTROL_PAYLOAD {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        return Err(ProtocolError::InvalidLength(len).into());
    }
    // A length with its top bit set is malformed, not large (RFC 6455
    // §5.2); the codec refuses it as a protocol error.
    if len > i64::MAX as u64 {
        return Ok(());
    }
    if len > MAX_BODY_BYTES as u64 {
        return Err(ReadError::FrameTooLarge(len));
    }
    let is_continuation = opcode == 0;
    if is_continuation && so_far as u64 + len > MAX_BODY_BYTES as u64 {
        return Err(ReadError::MessageTooLarge);
    }
    Ok(())
}

/// The payload length a frame's header announces, once its length bytes
/// are in (RFC 6455 §5.2).
fn announced_len(buf: &[u8]) -> Option<u64> {
    match *buf.get(1)? & 0x7F {
        126 => {
            let bytes: [u8; 2] = buf.get(2..4)?.try_into().ok()?;
            Some(u16::from_be_bytes(bytes).into())
        }
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        }
        len => Some(len.into()),
    }
}

fn utf8(text: Bytes) -> Result<Bytes, ReadError> {
    match std::str::from_utf8(&text) {
        Ok(_) => Ok(text),
        Err(_) => Err(ReadError::InvalidUtf8),
    }
}

/// The server side of one WebSocket connection.
///
/// It reads and writes through the connection the upgrade came on, which
/// counts the bytes and cuts a client that takes nothing for its send
/// timeout (see `crate::net::conn`).
pub struct WsStream<S: ReadySocket = TcpStream> {
    conn: Conn<S>,
    /// Encodes outbound frames.
    codec: Codec,
    /// Decodes inbound frames, within the read limits.
    reader: FrameReader,
    /// Encoded frames not yet accepted by the kernel.
    write_buf: BytesMut,
    /// `write_buf.len()` as last reported to the stats.
    reported_queued: usize,
    stats: std::sync::Arc<Stats>,
}

impl<S: ReadySocket> WsStream<S> {
    /// Takes over an upgraded connection; `read_buf` holds whatever the
    /// client sent after its handshake and was already read. The server sets
    /// `TCP_NODELAY` on every connection it accepts (`crate::net::conn`).
    pub fn new(conn: Conn<S>, read_buf: BytesMut, stats: std::sync::Arc<Stats>) -> Self {
        WsStream {
            conn,
            codec: Codec::new(),
            reader: FrameReader::new(read_buf),
            write_buf: BytesMut::new(),
            reported_queued: 0,
            stats,
        }
    }

    /// Whether another log event may be queued now (the soft limit).
    pub fn has_room(&self) -> bool {
        self.write_buf.len() < WS_QUEUE_BYTES
    }

    /// How many bytes of log events may still be queued before the soft
    /// limit; 0 when there is no room.
    pub fn room(&self) -> usize {
        WS_QUEUE_BYTES.saturating_sub(self.write_buf.len())
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
            match self.conn.try_write(&self.write_buf) {
                Ok(written) => self.sent(written)?,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        self.settle_buffer();
        Ok(())
    }

    /// Waits until the connection takes some of the buffer, and writes
    /// that much. Fails with [`io::ErrorKind::TimedOut`] once the client has
    /// taken nothing for the connection's send timeout (the socket's
    /// `--slow-client-timeout`); any other error means the connection is
    /// gone. Cancel-safe: what the kernel took is off the buffer by the
    /// time this resolves, and a wait that is dropped wrote nothing.
    async fn send(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_send(cx)).await
    }

    /// Waits until the client has sent something (when `read`), or until
    /// the connection takes some of what is queued, which is then written
    /// under the send timeout; whichever comes first. One wait for both,
    /// so the socket task's loop can wait on its connection once.
    pub async fn ready(&mut self, read: bool) -> io::Result<Ready> {
        poll_fn(|cx| {
            if !self.write_buf.is_empty() {
                if let Poll::Ready(sent) = self.poll_send(cx) {
                    return Poll::Ready(sent.map(|()| Ready::Sent));
                }
            }
            if read {
                return self.conn.poll_read_ready(cx).map_ok(|()| Ready::Readable);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes some of the buffer once the connection takes it, under its
    /// send timeout. Ready at once with nothing queued.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let written = ready!(Pin::new(&mut self.conn).poll_write(cx, &self.write_buf))?;
        self.sent(written)?;
        self.settle_buffer();
        Poll::Ready(Ok(()))
    }

    /// Takes what the kernel took off the buffer; taking nothing of a
    /// buffer that holds something means the connection is gone.
    fn sent(&mut self, written: usize) -> io::Result<()> {
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Advancing keeps the buffer unshared; splitting the written bytes
        // off would make it a shared one, with an allocation of its own.
        self.write_buf.advance(written);
        Ok(())
    }

    /// Releases the buffer once it is empty, and reports what is queued.
    /// An idle socket so holds no write buffer at all: thousands of parked
    /// sockets would otherwise each keep the pages their last delivery
    /// touched. The next frame allocates what it needs, which for a
    /// delivery costs one small allocation.
    fn settle_buffer(&mut self) {
        if self.write_buf.is_empty() && self.write_buf.capacity() > 0 {
            self.write_buf = BytesMut::new();
        }
        self.report_queued();
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
        self.conn.readable().await
    }

    /// Reads what the kernel has, without waiting, up to the read limit.
    /// With the buffer at its limit nothing is read: a whole frame is
    /// waiting there, and the kernel holds the rest until it is decoded.
    pub fn receive(&mut self) -> Received {
        if self.reader.room() == 0 {
            return Received::Data;
        }
        match self.conn.try_read_buf(&mut self.reader.read_buffer()) {
            Ok(0) => Received::Gone,
            Ok(_) => Received::Data,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.reader.release();
                Received::Nothing
            }
            Err(_) => Received::Gone,
        }
    }

    /// The next whole message among the bytes read so far, if there is one.
    pub fn next_message(&mut self) -> Result<Option<Inbound>, ReadError> {
        self.reader.next_message()
    }

    /// Sends everything still buffered, within the send timeout.
    pub async fn drain(&mut self) {
        while !self.write_buf.is_empty() {
            if self.send().await.is_err() {
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
        self.conn.reset_on_close();
    }
}

impl<S: ReadySocket> Drop for WsStream<S> {
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
    use actix_http::ws::{OpCode, Parser};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    /// A server-side stream and the raw client end of the same connection.
    async fn pair() -> (WsStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let conn = Conn::new(server, std::time::Duration::from_secs(30));
        let stream = WsStream::new(conn, BytesMut::new(), Default::default());
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

    async fn receive_all(stream: &mut WsStream) -> Result<Vec<Inbound>, ReadError> {
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

        assert!(
            matches!(result, Err(ReadError::MessageTooLarge)),
            "{result:?}"
        );
    }

    /// One masked client frame, whatever its payload.
    fn raw_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> BytesMut {
        let mut bytes = BytesMut::new();
        Parser::write_message(&mut bytes, payload, opcode, fin, true);
        bytes
    }

    /// Reads once, then returns the first decoded message or error.
    async fn receive_one(stream: &mut WsStream) -> Result<Option<Inbound>, ReadError> {
        stream.readable().await.unwrap();
        assert!(matches!(stream.receive(), Received::Data));
        stream.next_message()
    }

    #[tokio::test]
    async fn a_frame_announcing_more_than_the_limit_is_refused_from_its_header_alone() {
        let (mut stream, mut client) = pair().await;
        // A binary frame of 1 GiB: FIN + opcode, mask bit + 64-bit length,
        // the length, the mask key. No payload follows.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        client.write_all(&header).await.unwrap();

        let result = receive_one(&mut stream).await;

        assert!(
            matches!(result, Err(ReadError::FrameTooLarge(len)) if len == 1 << 30),
            "{result:?}"
        );
        assert_eq!(result.unwrap_err().close_code(), CloseCode::Size);
    }

    #[tokio::test]
    async fn a_text_message_that_is_not_utf8_is_refused() {
        let (mut stream, mut client) = pair().await;
        client
            .write_all(&raw_frame(OpCode::Text, true, b"caf\xC3"))
            .await
            .unwrap();

        let result = receive_one(&mut stream).await;

        assert!(matches!(result, Err(ReadError::InvalidUtf8)), "{result:?}");
        assert_eq!(result.unwrap_err().close_code(), CloseCode::Invalid);
    }

    #[tokio::test]
    async fn a_character_split_across_text_fragments_arrives_whole() {
        let (mut stream, mut client) = pair().await;
        let mut bytes = raw_frame(OpCode::Text, false, b"caf\xC3");
        bytes.extend_from_slice(&raw_frame(OpCode::Continue, true, b"\xA9"));
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();

        let messages = receive_all(&mut stream).await.unwrap();

        assert_eq!(messages, vec![Inbound::Text(Bytes::from("café"))]);
    }

    #[tokio::test]
    async fn reading_stops_at_one_frame_s_worth_of_undecoded_bytes_and_loses_nothing() {
        let (mut stream, mut client) = pair().await;
        // 1 MiB of pipelined pings, written while the server reads.
        let ping = raw_frame(OpCode::Ping, true, &[7; 100]);
        let count = (1 << 20) / ping.len();
        let pings = ping.repeat(count);
        tokio::spawn(async move {
            client.write_all(&pings).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let cap = READ_BUF_CAP;

        // Reading alone, without decoding, never holds more than a frame.
        for _ in 0..100 {
            stream.readable().await.unwrap();
            stream.receive();
            assert!(
                stream.reader.buffered() <= cap,
                "{}",
                stream.reader.buffered()
            );
            assert!(stream.reader.buf.capacity() <= 2 * cap);
        }
        // Decoding makes room again, and every ping comes through.
        let mut pings = 0;
        loop {
            while let Some(message) = stream.next_message().unwrap() {
                assert_eq!(message, Inbound::Ping(Bytes::from(vec![7; 100])));
                pings += 1;
            }
            stream.readable().await.unwrap();
            match stream.receive() {
                Received::Gone => break,
                Received::Nothing | Received::Data => {}
            }
            assert!(
                stream.reader.buffered() <= cap,
                "{}",
                stream.reader.buffered()
            );
        }
        assert_eq!(pings, count);
    }

    #[test]
    fn a_fragment_that_would_take_its_message_past_the_limit_is_refused_from_its_header() {
        let mut reader = FrameReader::default();
        let first = raw_frame(OpCode::Text, false, &[b'x'; 40 * 1024]);
        let next = raw_frame(OpCode::Continue, true, &[b'x'; 40 * 1024]);
        reader.feed(&first);
        assert_eq!(reader.next_message().unwrap(), None);

        // Only the next fragment's header and mask key.
        reader.feed(&next[..8]);
        let result = reader.next_message();

        assert!(
            matches!(result, Err(ReadError::MessageTooLarge)),
            "{result:?}"
        );
    }

    #[test]
    fn a_control_frame_announcing_more_than_125_bytes_is_refused_from_its_header() {
        let mut reader = FrameReader::default();
        let ping = raw_frame(OpCode::Ping, true, &[0; 126]);
        reader.feed(&ping[..8]);

        let result = reader.next_message();

        assert!(
            matches!(
                result,
                Err(ReadError::Protocol(ProtocolError::InvalidLength(126)))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn a_length_with_its_top_bit_set_is_a_protocol_error_not_a_size_error() {
        let mut reader = FrameReader::default();
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        reader.feed(&header);

        let result = reader.next_message();

        assert_eq!(result.unwrap_err().close_code(), CloseCode::Protocol);
    }

    /// Reads `bytes` as a socket would deliver them, `read_size` at a time,
    /// decoding every whole message between reads, and checks the read
    /// limits throughout. Returns the messages, and the error that stopped
    /// reading if one did.
    fn read_in_chunks(
        bytes: &[u8],
        read_size: usize,
    ) -> Result<(Vec<Inbound>, Option<ReadError>), proptest::test_runner::TestCaseError> {
        let mut reader = FrameReader::default();
        let mut received = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let taken = reader.feed(&rest[..read_size.min(rest.len())]);
            rest = &rest[taken..];
            proptest::prop_assert!(reader.buffered() <= READ_BUF_CAP);
            loop {
                match reader.next_message() {
                    Ok(Some(message)) => {
                        if let Inbound::Text(text) = &message {
                            proptest::prop_assert!(std::str::from_utf8(text).is_ok());
                        }
                        received.push(message);
                    }
                    Ok(None) => break,
                    Err(err) => return Ok((received, Some(err))),
                }
                proptest::prop_assert!(reader.partial_len() <= MAX_BODY_BYTES);
            }
            proptest::prop_assert!(reader.room() > 0, "decoding left no room");
        }
        Ok((received, None))
    }

    proptest::proptest! {
        /// Whatever the bytes, reading never panics and stays within the
        /// read limits: the fuzz target's checks, on stable.
        #[test]
        fn any_bytes_read_in_any_chunks_stay_within_the_read_limits(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
            read_size in 1usize..512,
        ) {
            read_in_chunks(&bytes, read_size)?;
        }

        /// The fuzz target's checks (`fuzz/fuzz_targets/ws_read.rs`) on
        /// valid streams: messages of every kind, some over the limit, sent
        /// in fragments and read in chunks of any size. Every message under
        /// the limit arrives whole and in order; the first one over it is
        /// refused; the read limits hold throughout.
        #[test]
        fn messages_in_any_fragments_and_reads_arrive_whole_within_the_read_limits(
            messages in proptest::collection::vec(
                (
                    0u8..3,
                    proptest::prop_oneof![0usize..300, 20_000usize..70_000],
                    1usize..4,
                    b' '..=b'~',
                ),
                1..8,
            ),
            read_size in 1usize..20_000,
        ) {
            let mut bytes = BytesMut::new();
            let mut expected = Vec::new();
            for (kind, len, fragments, fill) in messages {
                let payload = vec![fill; len];
                let (opcode, fragments) = match kind {
                    0 => (OpCode::Text, fragments),
                    1 => (OpCode::Binary, fragments),
                    _ => (OpCode::Ping, 1),
                };
                let payload = if opcode == OpCode::Ping { &payload[..len % 126] } else { &payload[..] };
                let step = payload.len() / fragments + 1;
                let mut parts = payload.chunks(step).peekable();
                let mut first = true;
                // An empty payload still takes one frame.
                if payload.is_empty() {
                    bytes.extend_from_slice(&raw_frame(opcode, true, &[]));
                }
                while let Some(part) = parts.next() {
                    let fin = parts.peek().is_none();
                    let op = if first { opcode } else { OpCode::Continue };
                    bytes.extend_from_slice(&raw_frame(op, fin, part));
                    first = false;
                }
                let whole = Bytes::copy_from_slice(payload);
                expected.push(match opcode {
                    OpCode::Text => Inbound::Text(whole),
                    OpCode::Binary => Inbound::Binary(whole),
                    _ => Inbound::Ping(whole),
                });
            }
            let (received, refused) = read_in_chunks(&bytes, read_size)?;
            if let Some(err) = &refused {
                proptest::prop_assert_eq!(err.close_code(), CloseCode::Size);
            }
            let over = |m: &Inbound| matches!(m, Inbound::Text(b) | Inbound::Binary(b) if b.len() > MAX_BODY_BYTES);
            let first_over = expected.iter().position(over);
            proptest::prop_assert_eq!(refused.is_some(), first_over.is_some());
            expected.truncate(first_over.unwrap_or(expected.len()));
            proptest::prop_assert_eq!(received, expected);
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_cut_after_the_connection_s_send_timeout() {
        // Arrange: a client with a tiny receive buffer that never reads, and
        // more queued than the kernel can hold.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let _client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let limit = std::time::Duration::from_secs(1);
        let mut stream = WsStream::new(
            Conn::new(server, limit),
            BytesMut::new(),
            Default::default(),
        );
        for _ in 0..64 {
            stream.push_unchecked(Message::Binary(Bytes::from(vec![7; 256 * 1024])));
        }
        stream.flush().unwrap();
        let started = tokio::time::Instant::now();

        // Act
        let result = stream.ready(false).await;

        // Assert
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), limit);
        assert!(stream.queued() > 0);
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
