//! The WebTransport subscriber: one QUIC connection per subscriber, from
//! its own UDP socket on one of the loopback source addresses, pinning the
//! certificate hash `GET /config` gives, as a browser's
//! `serverCertificateHashes` does.
//!
//! It reads the server's stream as newline-delimited JSON and, with
//! `cursors=datagrams`, the datagrams beside it. Bytes on the wire are
//! quinn's own UDP counts for the connection (QUIC packets, headers, acks
//! and retransmissions included), added to the step's [`Wire`] as they grow.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use parking_lot::Mutex;
use wtransport::tls::Sha256Digest;

use crate::clients::{pushlab_item_in, Ready, Step};
use crate::net::Wire;
use crate::tally::Seen;

/// How much of the server's stream is read at once, in bytes.
const READ_CHUNK: usize = 16 * 1024;

/// The longest line the server's stream may send, in bytes: pushlab's own
/// bound on a message, and some room for the event around it.
const MAX_LINE: usize = 96 * 1024;

/// Runs one WebTransport subscriber until it fails or is aborted; ready at
/// its `hello`.
pub async fn subscribe(
    step: &Step,
    index: usize,
    datagrams: bool,
    seen: &Mutex<Seen>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let hash = step
        .wt_hash
        .context("the server gives no WebTransport certificate hash in /config")?;
    let bind = SocketAddr::new(step.sources.pick(index), 0);
    let config = wtransport::ClientConfig::builder()
        .with_bind_address(bind)
        .with_server_certificate_hashes([Sha256Digest::new(hash)])
        .build();
    let endpoint = wtransport::Endpoint::client(config).context("a QUIC client endpoint")?;
    let cursors = if datagrams { "&cursors=datagrams" } else { "" };
    let url = format!("https://{}/wt?since={}{cursors}", step.server, step.since);
    step.wire.request();
    let connection = endpoint
        .connect(url)
        .await
        .context("opening the WebTransport session")?;
    let mut meter = QuicMeter::default();
    let mut stream = connection
        .accept_uni()
        .await
        .context("the server's stream")?;
    let mut lines = Lines::default();
    let mut buf = vec![0; READ_CHUNK];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                let Some(read) = read.context("reading the server's stream")? else {
                    bail!("the server finished its stream");
                };
                lines.push(&buf[..read])?;
                while let Some(line) = lines.next_line()? {
                    if pushlab_item_in(seen, &step.tally, line, !datagrams)? == "hello" {
                        ready.fire();
                    }
                }
            }
            datagram = connection.receive_datagram(), if datagrams => {
                let datagram = datagram.context("receiving a datagram")?;
                let payload = datagram.payload();
                let json = std::str::from_utf8(&payload).context("a datagram is UTF-8")?;
                pushlab_item_in(seen, &step.tally, json, false)?;
            }
        }
        meter.update(connection.quic_connection(), &step.wire);
    }
}

/// What of a connection's UDP bytes has been added to a [`Wire`].
#[derive(Default)]
struct QuicMeter {
    received: u64,
    sent: u64,
    datagrams: u64,
}

impl QuicMeter {
    fn update(&mut self, connection: &wtransport::quinn::Connection, wire: &Wire) {
        let stats = connection.stats();
        let (received, sent) = (stats.udp_rx.bytes, stats.udp_tx.bytes);
        let datagrams = stats.frame_rx.datagram;
        wire.datagrams
            .fetch_add(datagrams.saturating_sub(self.datagrams), Ordering::Relaxed);
        self.datagrams = datagrams;
        wire.received
            .fetch_add(received.saturating_sub(self.received), Ordering::Relaxed);
        wire.sent
            .fetch_add(sent.saturating_sub(self.sent), Ordering::Relaxed);
        (self.received, self.sent) = (received, sent);
    }
}

/// Cuts a byte stream into newline-terminated UTF-8 lines, as chunks
/// arrive; a line longer than [`MAX_LINE`] is an error.
#[derive(Default)]
struct Lines {
    /// Bytes not yet handed out.
    pending: BytesMut,
    /// The line last handed out, borrowed by the caller.
    line: BytesMut,
}

impl Lines {
    fn push(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.pending.extend_from_slice(chunk);
        if memchr::memchr(b'\n', &self.pending).is_none() && self.pending.len() > MAX_LINE {
            bail!("a line of the server's stream passed {MAX_LINE} bytes");
        }
        Ok(())
    }

    /// The next complete line, without its newline.
    fn next_line(&mut self) -> anyhow::Result<Option<&str>> {
        let Some(end) = memchr::memchr(b'\n', &self.pending) else {
            return Ok(None);
        };
        self.line = self.pending.split_to(end + 1);
        self.line.truncate(end);
        let line = std::str::from_utf8(&self.line).context("a line is UTF-8")?;
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_come_out_whole() {
        let mut lines = Lines::default();
        lines.push(b"{\"type\":\"hel").unwrap();
        assert!(lines.next_line().unwrap().is_none());
        lines.push(b"lo\"}\n{\"seq\":1}\n{\"se").unwrap();

        assert_eq!(lines.next_line().unwrap(), Some("{\"type\":\"hello\"}"));
        assert_eq!(lines.next_line().unwrap(), Some("{\"seq\":1}"));
        assert_eq!(lines.next_line().unwrap(), None);
        lines.push(b"q\":2}\n").unwrap();
        assert_eq!(lines.next_line().unwrap(), Some("{\"seq\":2}"));
    }

    #[test]
    fn a_line_past_the_bound_is_refused() {
        let mut lines = Lines::default();

        let pushed = lines.push(&vec![b'a'; MAX_LINE + 1]);

        assert!(pushed.is_err());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused() {
        let mut lines = Lines::default();
        lines.push(b"\xff\xfe\n").unwrap();

        assert!(lines.next_line().is_err());
    }
}
