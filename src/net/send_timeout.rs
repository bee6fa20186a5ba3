//! The send timeout: a connection whose client stops taking what the server
//! writes is cut after `--send-timeout`, so its unsent answer (held in the
//! HTTP/1 dispatcher's write buffer) is freed, along with its place under
//! `--max-connections`.
//!
//! Like nginx's `send_timeout`, the clock runs only while a write is waiting
//! for the socket to take bytes, and restarts at every write that makes
//! progress: it bounds the time between two successful writes, not the
//! whole response. A slow reader that keeps reading is never cut, and a
//! connection with nothing to write (idle keep-alive, a held long-poll, a
//! quiet stream) has no clock running at all.
//!
//! [`SendTimeout`] wraps each accepted socket; it knows nothing of HTTP.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_http::Protocol;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep, Sleep};

/// A stream whose writes fail with [`io::ErrorKind::TimedOut`] once one has
/// been waiting for the peer longer than the timeout.
#[derive(Debug)]
pub struct SendTimeout<S> {
    io: S,
    /// How long a write may wait for the socket to take any byte.
    timeout: Duration,
    /// Runs while a write waits. Boxed and only there while one waits, so a
    /// connection with nothing to send carries a pointer, not a timer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> SendTimeout<S> {
    /// Wraps `io`: a write that waits longer than `timeout` fails.
    pub fn new(io: S, timeout: Duration) -> Self {
        SendTimeout {
            io,
            timeout,
            stalled: None,
        }
    }

    /// The stream itself, for a connection that leaves HTTP (a WebSocket
    /// upgrade, which bounds slow clients its own way).
    pub fn into_inner(self) -> S {
        self.io
    }

    /// A reference to the stream itself.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Passes on the result of a write: one that is ready took bytes (or
    /// failed for real), so the next wait starts a new clock.
    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        self.wait(cx)
    }

    /// Runs the clock while the socket takes nothing, and fails once it runs
    /// out. The timer is polled here, so it wakes the connection's task by
    /// itself when it fires.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took nothing within the send timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A finished flush says nothing of the peer (a socket's is a no-op),
        // so only a waiting one touches the clock.
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.wait(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Pending => this.wait(cx),
            ready => ready,
        }
    }
}

/// Takes an accepted socket into HTTP/1 service, as actix-http's own
/// `HttpService::tcp` does, but behind the send timeout. `peer` is the
/// client's address (the socket's own, or the one a relay stands in for).
pub fn accept<S>(
    io: S,
    peer: Option<SocketAddr>,
    timeout: Duration,
) -> (SendTimeout<S>, Protocol, Option<SocketAddr>) {
    (SendTimeout::new(io, timeout), Protocol::Http1, peer)
}

/// Sets `TCP_NODELAY` on an accepted socket. A push server writes small
/// messages that must go out now: with Nagle, a write waits for the
/// previous one's ACK, which the client may delay by up to 40 ms. Failing
/// to set it only costs latency.
pub fn no_delay(io: &TcpStream) {
    let _ = io.set_nodelay(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::time::Instant;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn the_timeout_flags_have_their_documented_defaults() {
        use clap::Parser as _;
        let parsed = crate::Config::try_parse_from(["pushlab"]).unwrap();
        assert_eq!(parsed.send_timeout, 30.0);
        assert_eq!(parsed.body_timeout, 10.0);
        let default = crate::Config::default();
        assert_eq!(default.send_timeout, parsed.send_timeout);
        assert_eq!(default.body_timeout, parsed.body_timeout);
        let set = crate::Config::try_parse_from([
            "pushlab",
            "--send-timeout",
            "2.5",
            "--body-timeout",
            "1",
        ])
        .unwrap();
        assert_eq!((set.send_timeout, set.body_timeout), (2.5, 1.0));
        assert!(crate::Config::try_parse_from(["pushlab", "--send-timeout", "0"]).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_with_timed_out_after_the_timeout() {
        // Arrange: the peer's buffer holds 64 bytes and it never reads.
        let (near, _far) = duplex(64);
        let mut stream = SendTimeout::new(near, TIMEOUT);
        let started = Instant::now();

        // Act
        let result = stream.write_all(&[7; 1024]).await;

        // Assert
        let err = result.expect_err("the write was cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_slowly_but_steadily_is_never_cut() {
        // Arrange: the peer takes 64 bytes every half timeout.
        let (near, mut far) = duplex(64);
        let mut stream = SendTimeout::new(near, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 64];
            let mut total = 0;
            loop {
                tokio::time::sleep(TIMEOUT / 2).await;
                match far.read(&mut buf).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });

        // Act: far more than the timeout in all, never that long per write.
        stream.write_all(&[7; 1024]).await.expect("never cut");
        drop(stream);

        // Assert
        assert_eq!(reader.await.unwrap(), 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_while_a_write_waits_does_not_restart_the_clock() {
        // Arrange: the peer's buffer is full and it never reads.
        let (near, _far) = duplex(64);
        let mut stream = SendTimeout::new(near, TIMEOUT);
        stream.write_all(&[7; 64]).await.unwrap();
        let started = Instant::now();
        let waiting = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &[7]));
        assert!(futures_util::poll!(Box::pin(waiting)).is_pending());

        // Act: flushes (a no-op for a socket) while the write waits.
        tokio::time::sleep(TIMEOUT / 2).await;
        stream.flush().await.unwrap();
        let result = stream.write_all(&[7]).await;

        // Assert: cut one timeout after the wait began, not after the flush.
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_with_nothing_to_write_has_no_clock_running() {
        // Arrange
        let (near, mut far) = duplex(64);
        let mut stream = SendTimeout::new(near, TIMEOUT);

        // Act: idle for many timeouts, reading only, then write.
        far.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(TIMEOUT * 10).await;
        let written = stream.write_all(b"pong").await;

        // Assert
        assert!(written.is_ok());
        assert!(stream.stalled.is_none(), "no timer while nothing waits");
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
