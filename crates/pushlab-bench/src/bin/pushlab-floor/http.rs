//! The floor's HTTP/1.1: reads a request head and says what it asks for,
//! a WebSocket upgrade or a long-poll, and writes the answers. A long-poll
//! connection is kept alive, one request after another.
//!
//! The least a long-poll server can do: no header map kept, no routing
//! table, no middleware; the head is parsed in place with httparse and
//! each answer goes out in one write.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::log::{empty_answer, EventLog};

/// The longest request head read, in bytes; a longer one is refused (431).
pub const MAX_HEAD_BYTES: usize = 8 << 10;
/// The most headers a request may carry.
const MAX_HEADERS: usize = 32;
/// How long a long-poll is held when it does not say, and the longest it
/// may ask for, in seconds (as pushlab).
const DEFAULT_HOLD_SECS: u64 = 25;
const MAX_HOLD_SECS: u64 = 30;
/// What the read buffer grows by, in bytes: more than a request head.
const READ_CHUNK: usize = 1024;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket handshake, with its `Sec-WebSocket-Key`.
    Upgrade { key: String },
    /// `GET /longpoll`: events after `since` (after the head when absent),
    /// held up to `hold`; `close` when the client will not keep the
    /// connection.
    LongPoll {
        since: Option<u64>,
        hold: Duration,
        close: bool,
    },
}

/// A request refused, with its status and machine code; the connection
/// closes after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub error: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, error: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            error: error.into(),
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` when more
/// bytes are needed, or the head's length and what it asks for.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(head_too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, "too_many_headers", "at most 32 headers"))
        }
        Err(err) => return Err(Refusal::new(400, "bad_request", format!("{err}"))),
    };
    if length > MAX_HEAD_BYTES {
        return Err(head_too_large());
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|value| {
            value
                .split(|&b| b == b',')
                .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let (path, query) = request
        .path
        .unwrap_or("/")
        .split_once('?')
        .unwrap_or((request.path.unwrap_or("/"), ""));
    if request.method != Some("GET") {
        return Err(Refusal::new(405, "method_not_allowed", "only GET"));
    }
    if has_token("upgrade", "websocket") {
        if header("sec-websocket-version") != Some(b"13") {
            return Err(Refusal::new(
                400,
                "bad_handshake",
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let key = header("sec-websocket-key")
            .and_then(|key| std::str::from_utf8(key).ok())
            .ok_or_else(|| Refusal::new(400, "bad_handshake", "no Sec-WebSocket-Key"))?;
        return Ok(Some((
            length,
            Request::Upgrade {
                key: key.to_string(),
            },
        )));
    }
    if path != "/longpoll" {
        return Err(Refusal::new(
            404,
            "not_found",
            "the floor serves GET /longpoll and WebSockets",
        ));
    }
    let mut since = None;
    let mut hold = DEFAULT_HOLD_SECS;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value.parse::<u64>().map_err(|_| {
                Refusal::new(400, "bad_query", format!("{name} must be a whole number"))
            })
        };
        match name {
            "since" => since = Some(number()?),
            "timeout" => hold = number()?.min(MAX_HOLD_SECS),
            // pushlab's `epoch` and anything else: the floor has one epoch.
            _ => {}
        }
    }
    // HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive
    // unless asked to close.
    let close = if request.version == Some(0) {
        !has_token("connection", "keep-alive")
    } else {
        has_token("connection", "close")
    };
    Ok(Some((
        length,
        Request::LongPoll {
            since,
            hold: Duration::from_secs(hold),
            close,
        },
    )))
}

fn head_too_large() -> Refusal {
    Refusal::new(
        431,
        "head_too_large",
        format!("a request head may take {MAX_HEAD_BYTES} bytes"),
    )
}

/// What a connection turned out to be once its requests are read.
pub enum Outcome {
    /// A WebSocket handshake: its key and the bytes already read after it.
    Upgrade { key: String, rest: Vec<u8> },
    /// The connection is done (closed, refused or failed).
    Done,
}

/// Serves one connection's requests: long-polls, one after another, until
/// it closes, is refused, or asks for a WebSocket.
pub async fn serve(stream: &mut TcpStream, log: &EventLog) -> Outcome {
    let mut buf = Vec::new();
    loop {
        let (length, request) = match read_head(stream, &mut buf).await {
            Ok(Some(head)) => head,
            Ok(None) => return Outcome::Done,
            Err(refusal) => {
                let _ = write_refusal(stream, &refusal).await;
                return Outcome::Done;
            }
        };
        buf.drain(..length);
        match request {
            Request::Upgrade { key } => return Outcome::Upgrade { key, rest: buf },
            Request::LongPoll { since, hold, close } => {
                let body = long_poll(log, since, hold).await;
                let connection = if close { "Connection: close\r\n" } else { "" };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() || close {
                    return Outcome::Done;
                }
            }
        }
    }
}

/// Reads until `buf` starts with a whole request head; `Ok(None)` when the
/// client closed (or failed) first.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(usize, Request)>, Refusal> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf)? {
                return Ok(Some(head));
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// The answer to a long-poll: what came after `since` at once, or else
/// the first events to arrive within `hold`, or else none.
///
/// The connection is not watched while held: a client that goes away is
/// noticed at the answer's write, at most `hold` later.
async fn long_poll(log: &EventLog, since: Option<u64>, hold: Duration) -> String {
    // A cursor from the future (a restarted floor) waits for the next event.
    let since = since.map_or_else(|| log.head(), |since| since.min(log.head()));
    if let Some(answer) = log.answer_after(since) {
        return answer;
    }
    match tokio::time::timeout(hold, log.wait_after(since)).await {
        Ok(()) => log
            .answer_after(since)
            .unwrap_or_else(|| empty_answer(since)),
        Err(_) => empty_answer(since),
    }
}

async fn write_refusal(stream: &mut TcpStream, refusal: &Refusal) -> std::io::Result<()> {
    let body = serde_json::json!({"error": refusal.error, "code": refusal.code}).to_string();
    let reason = match refusal.status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let answer = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        refusal.status,
        body.len()
    );
    stream.write_all(answer.as_bytes()).await
}

/// The handshake's answer to a WebSocket upgrade with `key`.
pub fn switching_protocols(key: &str) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_poll(head: &str) -> Request {
        parse_head(head.as_bytes()).unwrap().unwrap().1
    }

    #[test]
    fn a_long_poll_head_gives_its_cursor_and_hold() {
        let request =
            long_poll("GET /longpoll?since=7&epoch=x&timeout=99 HTTP/1.1\r\nHost: a\r\n\r\n");

        assert_eq!(
            request,
            Request::LongPoll {
                since: Some(7),
                hold: Duration::from_secs(MAX_HOLD_SECS),
                close: false
            }
        );
    }

    #[test]
    fn a_long_poll_without_a_cursor_or_with_close_says_so() {
        let request = long_poll("GET /longpoll HTTP/1.1\r\nConnection: close\r\n\r\n");

        assert_eq!(
            request,
            Request::LongPoll {
                since: None,
                hold: Duration::from_secs(DEFAULT_HOLD_SECS),
                close: true
            }
        );
    }

    #[test]
    fn a_websocket_upgrade_is_told_apart_by_its_upgrade_header() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\
                    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

        let (length, request) = parse_head(head.as_bytes()).unwrap().unwrap();

        assert_eq!(length, head.len());
        assert_eq!(
            request,
            Request::Upgrade {
                key: "dGhlIHNhbXBsZSBub25jZQ==".into()
            }
        );
        // RFC 6455's own example of the accept key.
        assert!(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn a_head_cut_short_asks_for_more() {
        assert_eq!(parse_head(b"GET /longpoll HTTP/1.1\r\nHo"), Ok(None));
    }

    #[test]
    fn a_head_past_its_bound_is_refused_with_431() {
        let head = format!(
            "GET /longpoll HTTP/1.1\r\nX-Pad: {}\r\n",
            "x".repeat(MAX_HEAD_BYTES)
        );

        let refusal = parse_head(head.as_bytes()).unwrap_err();

        assert_eq!((refusal.status, refusal.code), (431, "head_too_large"));
    }

    #[test]
    fn other_paths_methods_and_bad_cursors_are_refused_with_a_code() {
        let refused = |head: &str| parse_head(head.as_bytes()).unwrap_err();

        assert_eq!(refused("GET /ws HTTP/1.1\r\n\r\n").code, "not_found");
        assert_eq!(
            refused("POST /longpoll HTTP/1.1\r\n\r\n").code,
            "method_not_allowed"
        );
        assert_eq!(
            refused("GET /longpoll?since=x HTTP/1.1\r\n\r\n").code,
            "bad_query"
        );
        assert_eq!(refused("GET\0 / HTTP/1.1\r\n\r\n").code, "bad_request");
    }
}
