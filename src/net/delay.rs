//! The simulated network delay (`--delay-ms`): every byte a client sends
//! reaches the server that much later, and every byte the server writes
//! reaches the client that much later, on every transport alike.
//!
//! On loopback a round trip is a fraction of a millisecond, so the
//! differences the theory predicts (half a round trip for a held long-poll or
//! a stream, up to one and a half for a long-poll between requests) cannot be
//! seen. With 100 ms each way they can.
//!
//! The delay sits below HTTP and WebSocket alike: each accepted socket is
//! relayed through a loopback connection to the server itself, and the relay
//! holds every chunk for the delay in each direction, keeping its order. The
//! server serves the inner end as if it were the client's socket; the
//! client's own address is kept for the per-address limits. Throughput is
//! unchanged: chunks are held in flight, not one at a time. With no delay
//! (the default) nothing of this runs. QUIC (WebTransport) does not pass
//! through here: its sessions hold the delay themselves.
//!
//! It knows nothing of HTTP.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// The largest chunk the relay reads at once, in bytes.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks in flight per direction: with [`CHUNK_BYTES`], at most 1 MiB held
/// per direction per connection.
const CHUNKS_IN_FLIGHT: usize = 64;
/// Once one direction has ended, how long the other may go on (a client
/// that vanished without closing would otherwise hold its relay forever).
const HALF_OPEN_GRACE: Duration = Duration::from_secs(60);

/// Relays accepted sockets through the delay.
#[derive(Debug)]
pub struct Delay {
    one_way: Duration,
    /// Where the inner ends are accepted: a loopback port of this process.
    pairing: std::net::TcpListener,
    pairing_addr: SocketAddr,
    /// Inner ends accepted by one worker for another's connection, by the
    /// connecting end's address.
    accepted: Mutex<HashMap<SocketAddr, std::net::TcpStream>>,
}

impl Delay {
    /// A relay that delays each direction by `one_way`.
    pub fn new(one_way: Duration) -> io::Result<Arc<Delay>> {
        let pairing = std::net::TcpListener::bind("127.0.0.1:0")?;
        pairing.set_nonblocking(true)?;
        let pairing_addr = pairing.local_addr()?;
        Ok(Arc::new(Delay {
            one_way,
            pairing,
            pairing_addr,
            accepted: Mutex::new(HashMap::new()),
        }))
    }

    /// Puts the delay between `client` and the server: returns the stream the
    /// server should serve, and relays between the two until both end.
    pub async fn relay(self: &Arc<Self>, client: TcpStream) -> io::Result<TcpStream> {
        let outer = TcpStream::connect(self.pairing_addr).await?;
        let inner = self.accept_peer(outer.local_addr()?).await?;
        let _ = outer.set_nodelay(true);
        let _ = inner.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let one_way = self.one_way;
        tokio::spawn(async move {
            let (client_read, client_write) = client.into_split();
            let (outer_read, outer_write) = outer.into_split();
            let up = pump(client_read, outer_write, one_way);
            let down = pump(outer_read, client_write, one_way);
            tokio::pin!(up, down);
            tokio::select! {
                // The client is done sending: the server's answer may still
                // be on its way, for a while.
                _ = &mut up => { let _ = tokio::time::timeout(HALF_OPEN_GRACE, down).await; }
                // The server closed (it answered, or cut a client that sent
                // no request head within its own head timeout): nothing the
                // client sends can reach it any more, so the relay and its
                // descriptors go now, not a grace period later.
                _ = &mut down => {}
            }
        });
        Ok(inner)
    }

    /// The inner end whose peer is `peer`. Several workers accept from the
    /// one listener, so an end accepted for another goes in `accepted`.
    async fn accept_peer(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        loop {
            if let Some(stream) = self.accepted.lock().remove(&peer) {
                stream.set_nonblocking(true)?;
                return TcpStream::from_std(stream);
            }
            match self.pairing.accept() {
                Ok((stream, from)) => {
                    self.accepted.lock().insert(from, stream);
                }
                // The connect completed, so its end is queued or already
                // taken by another worker: look again shortly.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read,
/// then passes the end of the stream on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut due) = mpsc::channel::<(Instant, Bytes)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if chunks.send((Instant::now() + delay, chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reader ended: after the last chunk, so does the other side.
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_cross_the_relay_in_order_after_the_delay_each_way() {
        // Arrange: a client socket accepted by a "server", relayed.
        let delay = Delay::new(Duration::from_millis(80)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut served = delay.relay(accepted).await.unwrap();

        // Act: one way, then back.
        let started = std::time::Instant::now();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        served.read_exact(&mut buf).await.unwrap();
        let up = started.elapsed();
        served.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        let round_trip = started.elapsed();

        // Assert
        assert_eq!(&buf, b"pong");
        assert!(up >= Duration::from_millis(80), "{up:?}");
        assert!(round_trip >= Duration::from_millis(160), "{round_trip:?}");
        assert!(round_trip < Duration::from_millis(400), "{round_trip:?}");
    }
}
