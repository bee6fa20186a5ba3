//! A lean HTTP/1.1 client for the load generator: one request at a time on
//! one keep-alive connection, read in the task that asked. The subscribers'
//! hot paths use it, and so does the one `GET /stats` a step makes, so the
//! tool needs no other HTTP client.
//!
//! hyper's client runs each connection as a task of its own and hands body
//! chunks over a channel, so every response (every long-poll answer, every
//! SSE chunk) costs the load generator extra wake-ups; with a thousand
//! subscribers on one core that, not the server, set the ceiling. Here the
//! subscriber's own task writes the request and reads the answer, with
//! httparse parsing the status line, headers and chunk sizes. It speaks only
//! what the benchmarks need: GET and POST, answers framed by Content-Length
//! or chunked.

use std::borrow::Cow;

use anyhow::{bail, ensure, Context as _};
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::net::Conn;

/// The most headers an answer may carry.
const MAX_HEADERS: usize = 32;

/// How much each read asks for, in bytes.
const READ_CHUNK: usize = 16 * 1024;

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// One HTTP/1.1 keep-alive connection.
pub struct Http1 {
    stream: Conn,
    host: String,
    /// Bytes read and not yet parsed.
    buf: BytesMut,
}

/// An answer's status line and headers, read; its body is next.
pub struct Head {
    pub status: u16,
    framing: Framing,
}

impl Http1 {
    pub fn new(stream: Conn, host: String) -> Self {
        Http1 {
            stream,
            host,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Sends a request with `body` (empty for a GET) and reads the answer's
    /// head.
    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<Head> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if method == "POST" {
            request.push_str("Content-Type: text/plain;charset=UTF-8\r\n");
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.stream.write_all(request.as_bytes()).await?;
        self.read_head().await
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Bytes)> {
        let head = self.request(method, path, body).await?;
        let body = self.read_body(&head).await?;
        Ok((head.status, body))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(READ_CHUNK);
        let read = self.stream.read_buf(&mut self.buf).await?;
        ensure!(read > 0, "the server closed the connection");
        Ok(())
    }

    async fn read_head(&mut self) -> anyhow::Result<Head> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) =
                response.parse(&self.buf).context("an HTTP answer's head")?
            {
                let status = response.code.unwrap_or(0);
                let mut framing = Framing::Length(0);
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        let value = std::str::from_utf8(header.value)?.trim();
                        framing = Framing::Length(value.parse().context("Content-Length")?);
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding")
                        && header.value.eq_ignore_ascii_case(b"chunked")
                    {
                        framing = Framing::Chunked;
                    }
                }
                self.buf.advance(len);
                return Ok(Head { status, framing });
            }
            self.fill().await?;
        }
    }

    /// Reads a whole body.
    pub async fn read_body(&mut self, head: &Head) -> anyhow::Result<Bytes> {
        match head.framing {
            Framing::Length(len) => {
                while self.buf.len() < len {
                    self.fill().await?;
                }
                Ok(self.buf.split_to(len).freeze())
            }
            Framing::Chunked => {
                let mut body = BytesMut::new();
                while let Some(chunk) = self.next_chunk().await? {
                    body.extend_from_slice(&chunk);
                }
                Ok(body.freeze())
            }
        }
    }

    /// The next chunk of a chunked body, or `None` after the last.
    pub async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        let (size_len, size) = loop {
            match httparse::parse_chunk_size(&self.buf) {
                Ok(httparse::Status::Complete(parsed)) => break parsed,
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(_) => bail!("a bad chunk size line"),
            }
        };
        let size = usize::try_from(size)?;
        // The chunk, then its CRLF.
        while self.buf.len() < size_len + size + 2 {
            self.fill().await?;
        }
        self.buf.advance(size_len);
        let chunk = self.buf.split_to(size).freeze();
        ensure!(&self.buf[..2] == b"\r\n", "a chunk without its CRLF");
        self.buf.advance(2);
        if size == 0 {
            return Ok(None);
        }
        Ok(Some(chunk))
    }
}

/// Splits a Server-Sent Events stream into its events' `data`, as chunks
/// arrive. Comments and other fields are skipped.
#[derive(Default)]
pub struct SseEvents {
    /// Bytes of events not yet handed out.
    pending: BytesMut,
    /// The data line last handed out, borrowed by the caller.
    event: Bytes,
}

impl SseEvents {
    /// Adds a chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The `data` of the next complete event, if there is one. A single
    /// data line (all pushlab sends) is handed out without a copy.
    pub fn next_data(&mut self) -> anyhow::Result<Option<Cow<'_, str>>> {
        loop {
            let Some(end) = memchr::memmem::find(&self.pending, b"\n\n") else {
                return Ok(None);
            };
            let event = self.pending.split_to(end + 2);
            let mut lines = event[..end]
                .split(|&b| b == b'\n')
                .filter_map(|line| line.strip_prefix(b"data:"))
                .map(|value| value.strip_prefix(b" ").unwrap_or(value));
            let Some(first) = lines.next() else {
                // A comment or a retry-only event: nothing to hand out.
                continue;
            };
            let data = match lines.next() {
                None => {
                    let start = first.as_ptr() as usize - event.as_ptr() as usize;
                    let range = start..start + first.len();
                    drop(lines);
                    self.event = event.freeze().slice(range);
                    Cow::Borrowed(std::str::from_utf8(&self.event).context("SSE data is UTF-8")?)
                }
                Some(second) => {
                    let mut joined = Vec::from(first);
                    for line in std::iter::once(second).chain(lines) {
                        joined.push(b'\n');
                        joined.extend_from_slice(line);
                    }
                    Cow::Owned(String::from_utf8(joined).context("SSE data is UTF-8")?)
                }
            };
            return Ok(Some(data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole_and_comments_are_skipped() {
        let mut events = SseEvents::default();
        events.push(b"retry: 1000\ndata: {\"a\"");
        assert!(events.next_data().unwrap().is_none());
        events.push(b":1}\n\n: heartbeat\n\nid: 7\ndata: x\ndata: y\n\n");
        assert_eq!(events.next_data().unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(events.next_data().unwrap().as_deref(), Some("x\ny"));
        assert!(events.next_data().unwrap().is_none());
    }
}
