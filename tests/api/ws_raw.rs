//! WebSocket input written as raw bytes on a TCP socket, the way a broken or
//! hostile client sends it: frames that announce more than the limit, text
//! that is not UTF-8, oversized fragmented messages, thousands of pipelined
//! frames. A client library would refuse to send most of these, so these
//! tests build every frame by hand (RFC 6455 §5.2).

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The largest frame payload or message the server takes (`MAX_BODY_BYTES`).
const LIMIT: usize = 64 * 1024;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Any key will do; the server must unmask whatever it is.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The header of a masked client frame announcing `len` payload bytes,
/// mask key included.
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut bytes = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => bytes.push(0x80 | len as u8),
        126..=0xFFFF => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&len.to_be_bytes());
        }
    }
    bytes.extend_from_slice(&MASK);
    bytes
}

/// A whole masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header(fin, opcode, payload.len() as u64);
    bytes.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    bytes
}

/// A frame from the server, which sends them unmasked.
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// A WebSocket client that speaks bytes, not messages.
struct RawSocket {
    reader: OwnedReadHalf,
    /// Taken by a test that writes from another task.
    writer: Option<OwnedWriteHalf>,
    /// Bytes read from the server and not yet parsed into frames.
    unread: Vec<u8>,
}

impl RawSocket {
    /// Connects to `/ws` with a hand-written upgrade request and reads the 101.
    async fn open(app: &TestApp) -> RawSocket {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            app.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (reader, writer) = stream.into_split();
        let mut socket = RawSocket {
            reader,
            writer: Some(writer),
            unread: Vec::new(),
        };
        let end = loop {
            if let Some(at) = socket.unread.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                socket.read_more().await,
                "the connection ended in the handshake"
            );
        };
        let head: Vec<u8> = socket.unread.drain(..end).collect();
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        socket
    }

    async fn send(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("the writer is here");
        writer.write_all(bytes).await.unwrap();
    }

    /// Reads whatever the server sent next; false once the connection ended.
    async fn read_more(&mut self) -> bool {
        let mut chunk = [0; 8192];
        match tokio::time::timeout(PATIENCE, self.reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.unread.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("the server sent nothing for {PATIENCE:?}"),
        }
    }

    /// The next frame from the server, or `None` once the connection ended.
    async fn next_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some(frame) = self.parse_frame() {
                return Some(frame);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let bytes = &self.unread;
        if bytes.len() < 2 {
            return None;
        }
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, start) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => {
                let len = u64::from_be_bytes(bytes[2..10].try_into().unwrap());
                (len as usize, 10)
            }
            126 | 127 => return None,
            len => (len as usize, 2),
        };
        if bytes.len() < start + len {
            return None;
        }
        let opcode = bytes[0] & 0x0F;
        let payload = bytes[start..start + len].to_vec();
        self.unread.drain(..start + len);
        Some(ServerFrame { opcode, payload })
    }

    /// Reads past the server's text frames (its hello, error replies) to
    /// its close frame, and returns the close code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let frame = self
                .next_frame()
                .await
                .expect("the connection ended without a close frame");
            match frame.opcode {
                TEXT | PING => continue,
                CLOSE => {
                    assert!(frame.payload.len() >= 2, "a close frame without a code");
                    return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                }
                other => panic!("unexpected frame with opcode {other}: {frame:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_frame_announcing_more_than_the_limit_is_closed_with_1009_before_its_payload_arrives() {
    // Arrange
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;

    // Act: only the header of a 1 GiB frame, not one byte of its payload.
    socket.send(&header(true, BINARY, 1 << 30)).await;

    // Assert
    assert_eq!(socket.close_code().await, 1009);
}

#[tokio::test]
async fn a_client_that_keeps_sending_a_huge_frame_is_closed_with_1009_and_cut_off() {
    // Arrange
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;
    let mut writer = socket.writer.take().unwrap();

    // Act: a 1 GiB frame's header, then 64 MiB of its payload, far more
    // than the kernel buffers of both ends hold together.
    let sender = tokio::spawn(async move {
        writer.write_all(&header(true, BINARY, 1 << 30)).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            writer.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });

    // Assert: the close comes, then the server ends the connection without
    // reading on, so the sender finds it gone before its 64 MiB are through.
    assert_eq!(socket.close_code().await, 1009);
    while socket.next_frame().await.is_some() {}
    let sent = tokio::time::timeout(PATIENCE, sender).await;
    assert!(
        matches!(sent, Ok(Ok(Err(_)))),
        "the connection was not cut: {sent:?}"
    );
}

#[tokio::test]
async fn a_message_of_exactly_the_limit_is_taken() {
    // Arrange
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;
    let hello = socket.next_frame().await.unwrap();
    assert_eq!(hello.opcode, TEXT);

    // Act: 64 KiB of text that is not a valid message.
    socket.send(&frame(true, TEXT, &[b'x'; LIMIT])).await;

    // Assert: an error reply, not a close.
    let reply = socket.next_frame().await.unwrap();
    assert_eq!(reply.opcode, TEXT, "{reply:?}");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["code"], "bad_json", "{reply}");
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    // Arrange
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;

    // Act: "Ã" cut after its first byte.
    socket
        .send(&frame(true, TEXT, b"{\"type\":\"\xC3\"}"))
        .await;

    // Assert
    assert_eq!(socket.close_code().await, 1007);
}

#[tokio::test]
async fn text_fragments_that_are_not_utf8_together_close_with_1007() {
    // Arrange
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;

    // Act: the second fragment ends in the middle of a character.
    socket.send(&frame(false, TEXT, b"{\"type\":")).await;
    socket
        .send(&frame(true, CONTINUATION, b"\"\xE2\x82\"}"))
        .await;

    // Assert
    assert_eq!(socket.close_code().await, 1007);
}

#[tokio::test]
async fn fragments_beyond_the_limit_close_with_1009() {
    // Arrange
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;
    let half = vec![b'x'; LIMIT / 2 + 1];

    // Act: two fragments, each under the limit, together over it.
    socket.send(&frame(false, TEXT, &half)).await;
    socket.send(&frame(true, CONTINUATION, &half)).await;

    // Assert
    assert_eq!(socket.close_code().await, 1009);
}

#[tokio::test]
async fn pipelined_small_frames_are_all_handled() {
    // Arrange: 2000 pings, about 26 KB, in a single write.
    let app = spawn_app().await;
    let mut socket = RawSocket::open(&app).await;
    let count: u32 = 2000;
    let pings: Vec<u8> = (0..count)
        .flat_map(|i| frame(true, PING, &i.to_be_bytes()))
        .collect();

    // Act
    socket.send(&pings).await;

    // Assert: a pong for every ping, in order, and no close.
    let mut next = 0;
    while next < count {
        let frame = socket
            .next_frame()
            .await
            .expect("the connection stays open");
        match frame.opcode {
            TEXT => continue,
            PONG => {
                assert_eq!(frame.payload, next.to_be_bytes());
                next += 1;
            }
            other => panic!("unexpected frame with opcode {other}: {frame:?}"),
        }
    }
}
