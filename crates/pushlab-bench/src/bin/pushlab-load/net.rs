//! Sockets for the load generator: connecting from one of several loopback
//! source addresses, and counting every byte that crosses each socket.
//!
//! Bytes are counted here, on the client's own sockets, so the figures are
//! what went over the wire (HTTP headers, chunk sizes, WebSocket frame
//! headers and masks included) and not what a server says it sent.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::tls::{Alpn, Tls};

/// Bytes and requests over a group of sockets (all subscribers, say).
#[derive(Debug, Default)]
pub struct Wire {
    /// Bytes the client read.
    pub received: AtomicU64,
    /// Bytes the client wrote.
    pub sent: AtomicU64,
    /// HTTP requests made (a WebSocket or SSE connection counts one).
    pub requests: AtomicU64,
    /// WebTransport only: QUIC DATAGRAM frames that reached the client's
    /// QUIC stack, to tell a datagram the server never sent from one the
    /// client lost.
    pub datagrams: AtomicU64,
}

/// A moment's reading of a [`Wire`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WireSnapshot {
    pub received: u64,
    pub sent: u64,
    pub requests: u64,
    pub datagrams: u64,
}

impl Wire {
    pub fn snapshot(&self) -> WireSnapshot {
        WireSnapshot {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            datagrams: self.datagrams.load(Ordering::Relaxed),
        }
    }

    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::ops::Sub for WireSnapshot {
    type Output = WireSnapshot;
    fn sub(self, earlier: WireSnapshot) -> WireSnapshot {
        WireSnapshot {
            received: self.received - earlier.received,
            sent: self.sent - earlier.sent,
            requests: self.requests - earlier.requests,
            datagrams: self.datagrams - earlier.datagrams,
        }
    }
}

/// A TCP stream that adds every byte read and written to a [`Wire`].
pub struct Counted {
    inner: TcpStream,
    wire: Arc<Wire>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.wire.received.fetch_add(read, Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &result {
            self.wire.sent.fetch_add(*written as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &result {
            self.wire.sent.fetch_add(*written as u64, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client's connection: plain TCP, or TLS over it. Either way the bytes
/// are counted below TLS, so they include its records and handshake.
pub enum Conn {
    Plain(Counted),
    Tls(Box<tokio_rustls::client::TlsStream<Counted>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(stream) => stream.is_write_vectored(),
            Conn::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to `server` from `source` (see [`connect`]), then, with `tls`,
/// makes a TLS handshake asking for `alpn`.
pub async fn connect_over(
    server: SocketAddr,
    source: IpAddr,
    wire: Arc<Wire>,
    tls: Option<(&Tls, Alpn)>,
) -> io::Result<Conn> {
    let stream = connect(server, source, wire).await?;
    let Some((tls, alpn)) = tls else {
        return Ok(Conn::Plain(stream));
    };
    // pushlab's own certificate names its addresses, but the verifier
    // judges no names (see `tls`).
    let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
    let stream = tls.connector(alpn).connect(name, stream).await?;
    Ok(Conn::Tls(Box::new(stream)))
}

/// Where clients connect from: 127.0.0.1 up to 127.0.0.`count`, in turn, so
/// that more connections fit than one source address has ephemeral ports.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub count: u8,
}

impl Sources {
    /// The source address of the `index`th connection.
    pub fn pick(&self, index: usize) -> IpAddr {
        let last = (index % self.count.max(1) as usize) as u8 + 1;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }
}

/// Connects to `server` from `source`, with Nagle off, counting into `wire`.
pub async fn connect(server: SocketAddr, source: IpAddr, wire: Arc<Wire>) -> io::Result<Counted> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(Counted {
        inner: stream,
        wire,
    })
}

/// Raises this process's open-file limit to its hard limit, and returns it.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    rlimit::Resource::NOFILE.set(hard, hard)?;
    Ok(hard)
}
