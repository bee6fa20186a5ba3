//! The connection: one accepted socket (the inner end of the `--delay-ms`
//! relay, if there is one), as every protocol on it sees it. [`Conn`] owns,
//! once for all of them:
//!
//! - **the bytes**: every byte read from and written to the socket is
//!   counted into the connection's [`ConnectionMeter`], which
//!   [`super::traffic`] splits between the requests served on it;
//! - **the send timeout**: a client that stops taking what the server
//!   writes is cut once a write has waited that long, so its unsent bytes
//!   are freed, along with its place under `--max-connections`;
//! - **back-pressure on pipelining**: while a write waits for the client,
//!   nothing more is read from it. HTTP/1's dispatcher answers pipelined
//!   requests as fast as it reads them, whatever it has yet to write, so a
//!   client that sends thousands of requests and reads nothing would pile
//!   their answers up in memory; here it only fills the kernel's buffers
//!   and the dispatcher's bounded read buffer, then waits.
//!
//! Like nginx's `send_timeout`, the clock runs only while a write is waiting
//! for the socket to take bytes, and restarts at every write that makes
//! progress: it bounds the time between two successful writes, not the
//! whole answer. A slow reader that keeps reading is never cut, and a
//! connection with nothing to write (idle keep-alive, a held long-poll, a
//! quiet stream or socket) has no clock running at all.
//!
//! HTTP/1 (actix-http's dispatcher) reads and writes a `Conn` through
//! [`AsyncRead`] and [`AsyncWrite`]. A WebSocket upgrade keeps the same
//! `Conn`: the socket task waits for readiness itself and reads and writes
//! without waiting ([`Conn::try_read_buf`], [`Conn::try_write`]), so an idle
//! socket holds no buffer; those count and keep the clock exactly as the
//! polled calls do. The upgrade sets the socket's own limit,
//! `--slow-client-timeout`, with [`Conn::set_send_timeout`]. Under `--tls`
//! HTTP reads and writes through TLS over the `Conn` (which so counts the
//! TLS records), and a WebSocket gets a `Conn` over the local end of a
//! relay instead ([`IntoSocket`], `super::tls`).
//!
//! It knows no HTTP, no WebSocket frames, no routes and no rooms.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_rt::net::ActixStream;
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{sleep, Sleep};

use super::read_ahead::READ_AHEAD;
use super::traffic::ConnectionMeter;

/// One connection: its socket, its byte counter and its send timeout.
///
/// Writes fail with [`io::ErrorKind::TimedOut`] once one has waited for the
/// peer longer than the timeout. Generic only so that tests can put an
/// in-memory pipe where the socket goes; the server's is a [`TcpStream`].
#[derive(Debug)]
pub struct Conn<S = TcpStream> {
    io: S,
    /// Every byte through `io`, for `/traffic` and `/metrics`.
    meter: Arc<ConnectionMeter>,
    /// How long a write may wait for the socket to take any byte.
    timeout: Duration,
    /// Runs while a write waits. Boxed and only there while one waits, so a
    /// connection with nothing to send carries a pointer, not a timer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Conn<S> {
    /// Takes `io` as a connection with a fresh meter: a write that waits
    /// longer than `timeout` fails.
    pub fn new(io: S, timeout: Duration) -> Self {
        Conn {
            io,
            meter: Arc::default(),
            timeout,
            stalled: None,
        }
    }

    /// This connection's byte counter.
    pub fn meter(&self) -> &Arc<ConnectionMeter> {
        &self.meter
    }

    /// Changes the send timeout from the next wait on: a protocol that
    /// takes the connection over (a WebSocket) bounds its client by its own
    /// limit.
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Passes on the result of a write, counting what it wrote: one that is
    /// ready took bytes (or failed for real), so the next wait starts a new
    /// clock.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(written)) = result {
            self.meter.wrote(written);
        }
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

/// A socket a task can wait on for readiness and then read and write
/// without waiting: the client's TCP socket, or, for a WebSocket over TLS,
/// the local end of the relay that decrypts it (`super::tls`).
pub trait ReadySocket: AsyncRead + AsyncWrite + Unpin {
    /// Resolves when it may have something to read.
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_;
    /// Whether it may have something to read; if not, `cx` is woken when
    /// it may.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what the kernel has, without waiting.
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize>;
    /// Writes what the kernel takes, without waiting.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Makes closing it send a reset, where there is a peer to reset.
    fn reset_on_close(&self);
}

impl ReadySocket for TcpStream {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        TcpStream::readable(self)
    }
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
    fn reset_on_close(&self) {
        // A zero linger does not block: the close sends a reset at once.
        let _ = self.set_zero_linger();
    }
}

impl ReadySocket for UnixStream {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        UnixStream::readable(self)
    }
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        UnixStream::try_read_buf(self, buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
    fn reset_on_close(&self) {
        // The relay's end sees the close and drops the TLS connection, which
        // its send timeout bounds.
    }
}

impl<S: ReadySocket> Conn<S> {
    /// Resolves when the socket may have something to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// Whether the socket may have something to read; if not, `cx` is woken
    /// when it may.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }

    /// Reads what the kernel has into `buf`, without waiting, and counts it.
    /// `Ok(0)` is the end of the client's stream; [`io::ErrorKind::WouldBlock`]
    /// says there was nothing after all.
    pub fn try_read_buf<B: BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        let read = self.io.try_read_buf(buf)?;
        self.meter.read(read);
        Ok(read)
    }

    /// Writes what the kernel takes of `buf` now, without waiting, and
    /// counts it; bytes taken restart the send clock, as a polled write's
    /// do. [`io::ErrorKind::WouldBlock`] leaves the clock as it is: it runs
    /// from the first write that waited (see [`AsyncWrite::poll_write`]).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.io.try_write(buf)?;
        self.meter.wrote(written);
        self.stalled = None;
        Ok(written)
    }

    /// Makes dropping the connection close it at once: unsent bytes are
    /// dropped and the client gets a reset. For a client that stopped
    /// reading, which would not read them anyway.
    pub fn reset_on_close(&self) {
        self.io.reset_on_close();
    }
}

/// A connection that a protocol may take over for good after an HTTP/1.1
/// upgrade (a WebSocket): its byte counter, and the socket to read and
/// write with readiness.
pub trait IntoSocket: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The socket the protocol gets.
    type Socket: ReadySocket + 'static;
    /// The connection's byte counter, which the upgrade is charged to.
    fn meter(&self) -> &Arc<ConnectionMeter>;
    /// Gives the connection up as a socket whose writes wait at most
    /// `timeout` for the client.
    fn into_socket(self, timeout: Duration) -> io::Result<Conn<Self::Socket>>;
}

impl IntoSocket for Conn<TcpStream> {
    type Socket = TcpStream;
    fn meter(&self) -> &Arc<ConnectionMeter> {
        Conn::meter(self)
    }
    fn into_socket(mut self, timeout: Duration) -> io::Result<Conn<TcpStream>> {
        self.set_send_timeout(timeout);
        Ok(self)
    }
}

/// actix-tls's handshake waits on the socket's readiness through this.
impl ActixStream for Conn<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<actix_rt::net::Ready>> {
        ActixStream::poll_read_ready(&self.io, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<actix_rt::net::Ready>> {
        ActixStream::poll_write_ready(&self.io, cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stalled.is_some() {
            // A write is waiting for the client to take bytes: read nothing
            // more from it until that write makes progress. That write's
            // wait has registered this task to be woken, by the socket or by
            // the send timeout, so no wake-up is lost.
            return Poll::Pending;
        }
        // Read no further ahead of the requests being served than they need
        // (`net::read_ahead`): the dispatcher decodes and queues whatever
        // it is given.
        let Some(allowed) = this.meter.read_allowed(cx) else {
            return Poll::Pending;
        };
        let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
        if allowed < buf.remaining() {
            return this.read_at_most(cx, buf, allowed);
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.meter.read(buf.filled().len() - before);
        }
        result
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Reads at most `limit` bytes (no more than [`READ_AHEAD`]) straight
    /// into the first `limit` bytes of `buf`'s free space, and counts them.
    ///
    /// The dispatcher hands over its read buffer's spare capacity
    /// uninitialised; reading through a buffer of our own would zero 8 KiB
    /// on every call, including the one that finds the socket empty.
    fn read_at_most(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        limit: usize,
    ) -> Poll<io::Result<()>> {
        let mut limited = buf.take(limit.min(READ_AHEAD as usize));
        let start = limited.filled().as_ptr();
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut limited))?;
        if limited.filled().as_ptr() != start {
            // A reader that put another buffer in place of ours: what it
            // read is not in `buf`.
            return Poll::Ready(Err(io::Error::other("a read went to another buffer")));
        }
        let read = limited.filled().len();
        // SAFETY: `limited` is a view of `buf`'s unfilled part, and still
        // the same memory (checked above), so its first `read` bytes are
        // now initialised in `buf`.
        unsafe { buf.assume_init(read) };
        buf.advance(read);
        self.meter.read(read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
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
    use tokio::io::{duplex, AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
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
        let mut conn = Conn::new(near, TIMEOUT);
        let started = Instant::now();

        // Act
        let result = conn.write_all(&[7; 1024]).await;

        // Assert
        let err = result.expect_err("the write was cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_slowly_but_steadily_is_never_cut() {
        // Arrange: the peer takes 64 bytes every half timeout.
        let (near, mut far) = duplex(64);
        let mut conn = Conn::new(near, TIMEOUT);
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
        conn.write_all(&[7; 1024]).await.expect("never cut");
        drop(conn);

        // Assert
        assert_eq!(reader.await.unwrap(), 1024);
    }

    /// A connection whose peer's buffer (64 bytes) is full, and the peer,
    /// which never reads.
    async fn full() -> (Conn<DuplexStream>, DuplexStream) {
        let (near, far) = duplex(64);
        let mut conn = Conn::new(near, TIMEOUT);
        conn.write_all(&[7; 64]).await.unwrap();
        (conn, far)
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_while_a_write_waits_does_not_restart_the_clock() {
        // Arrange
        let (mut conn, _far) = full().await;
        let started = Instant::now();
        let waiting = std::future::poll_fn(|cx| Pin::new(&mut conn).poll_write(cx, &[7]));
        assert!(futures_util::poll!(Box::pin(waiting)).is_pending());

        // Act: flushes (a no-op for a socket) while the write waits.
        tokio::time::sleep(TIMEOUT / 2).await;
        conn.flush().await.unwrap();
        let result = conn.write_all(&[7]).await;

        // Assert: cut one timeout after the wait began, not after the flush.
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_more_is_read_while_a_write_waits_for_the_client() {
        // Arrange: the client's buffer is full, and it has sent a request.
        let (mut conn, mut far) = full().await;
        far.write_all(b"GET /time HTTP/1.1\r\n\r\n").await.unwrap();
        let waiting = std::future::poll_fn(|cx| Pin::new(&mut conn).poll_write(cx, &[7]));
        assert!(futures_util::poll!(Box::pin(waiting)).is_pending());

        // Act: the server tries to read the next request.
        let mut buf = [0; 64];
        let blocked = futures_util::poll!(Box::pin(conn.read(&mut buf)));

        // Assert: it reads nothing until the client takes some of what is
        // waiting; then the write goes on and so does reading.
        assert!(blocked.is_pending(), "read while a write waited");
        let mut taken = [0; 64];
        far.read_exact(&mut taken).await.unwrap();
        conn.write_all(&[7]).await.unwrap();
        let read = conn.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..read], b"GET /time HTTP/1.1\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_nothing_to_write_has_no_clock_running() {
        // Arrange
        let (near, mut far) = duplex(64);
        let mut conn = Conn::new(near, TIMEOUT);

        // Act: idle for many timeouts, reading only, then write.
        far.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        conn.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(TIMEOUT * 10).await;
        let written = conn.write_all(b"pong").await;

        // Assert
        assert!(written.is_ok());
        assert!(conn.stalled.is_none(), "no timer while nothing waits");
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_send_timeout_bounds_the_next_wait() {
        // Arrange
        let (mut conn, _far) = full().await;
        let started = Instant::now();

        // Act
        conn.set_send_timeout(TIMEOUT / 30);
        let result = conn.write_all(&[7]).await;

        // Assert
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT / 30);
    }

    /// A connection on a real socket, and the client's end of it.
    async fn socket_pair() -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Conn::new(server, TIMEOUT), client)
    }

    #[tokio::test]
    async fn every_byte_read_and_written_is_counted_whichever_way_it_goes() {
        use crate::net::traffic::{ClientId, Clients, Transport};
        // Arrange: a request that charges client "a" for everything.
        let clients = Clients::default();
        let (mut conn, mut client) = socket_pair().await;
        let a = ClientId::parse("a").unwrap();
        conn.meter()
            .begin(Some(clients.charge(&a, Some(Transport::Ws))), 0);

        // Act: polled and non-blocking reads and writes, both ways.
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0; 5];
        conn.read_exact(&mut buf).await.unwrap();
        client.write_all(b"again!").await.unwrap();
        conn.readable().await.unwrap();
        let mut more = Vec::with_capacity(16);
        let read = conn.try_read_buf(&mut more).unwrap();
        conn.write_all(b"0123456789").await.unwrap();
        let wrote = conn.try_write(b"abc").unwrap();

        // Assert
        assert_eq!((read, wrote), (6, 3));
        let ws = clients.view(&a).ws;
        assert_eq!((ws.bytes_in, ws.bytes_out), (11, 13));
    }
}
