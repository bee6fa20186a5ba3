//! WebTransport: sessions over HTTP/3 (QUIC), on UDP at the same port
//! number as the HTTP listener, at `/wt?room=…&since=…&epoch=…&session=…`.
//!
//! This module owns the QUIC endpoint: its TLS (the server's certificate,
//! `--tls-cert`'s or pushlab's own, see `net::tls`), its transport bounds (streams,
//! windows and datagram buffers, in bytes), and the accept loop, which
//! refuses a connection at its first packet when its address already has
//! `--wt-ip-handshakes` handshakes in flight. Each connection that gets as
//! far as its CONNECT request is served by [`session`], which does the same
//! as every other transport over the same [`crate::core::log::Reader`].
//!
//! What rides where (see `docs/protocol.md`): the server opens one
//! unidirectional stream and writes newline-delimited JSON on it, the same
//! events and controls as a WebSocket's text frames; cursor moves go as
//! datagrams instead when the client asks (`cursors=datagrams`). The client
//! sends the same JSON as WebSocket frames, one per line, on streams it
//! opens, or one per datagram.
//!
//! wtransport 0.7 cannot send the `CLOSE_WEBTRANSPORT_SESSION` capsule, so
//! a session ends with a QUIC `CONNECTION_CLOSE` whose application code is
//! one of the `CLOSE_*` codes below and whose reason is a machine code; a
//! refusal also writes its `error` line first, so a browser, which does not
//! see QUIC close codes, learns why.

pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use wtransport::endpoint::endpoint_side::Server as ServerSide;
use wtransport::quinn::{IdleTimeout, TransportConfig, VarInt as QuicVarInt};
use wtransport::{Endpoint, ServerConfig, VarInt};

use crate::core::protocol::MAX_BODY_BYTES;
use crate::http::admission::direct_client_ip;
use crate::http::state::AppState;

/// The session ended normally: the client left.
pub const CLOSE_LEFT: u32 = 1000;
/// The server is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 1001;
/// The session was refused or ended by a rule: the reason (and the `error`
/// line before it) names which, such as `forbidden_origin`,
/// `unknown_session`, `ip_limit` or `too_slow`.
pub const CLOSE_POLICY: u32 = 1008;
/// The client sent a datagram or stream message over its limit.
pub const CLOSE_TOO_LARGE: u32 = 1009;

/// How long a QUIC connection may take from its first packet to its
/// CONNECT request; past it, it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a session may go without a packet from its client before
/// QUIC drops it; the server's keep-alives keep a live one open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the server sends a QUIC keep-alive to an idle session.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// What the client may have sent on one stream and the server not yet
/// read, in bytes: one largest message and a little more.
const STREAM_WINDOW: u32 = (MAX_BODY_BYTES + 16 * 1024) as u32;

/// What QUIC keeps of the server's stream data until the client
/// acknowledges it, per session, in bytes. The session's own queue
/// ([`session::QUEUE_BYTES`]) comes on top.
const SEND_WINDOW: u64 = 256 * 1024;

/// The datagrams, in and out, QUIC buffers per session, in bytes. Past it,
/// the oldest outgoing ones are dropped, as datagrams may be.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// QUIC handshakes in flight from every address together. Past it, a new
/// connection is refused at its first packet.
const MAX_HANDSHAKES: u32 = 1024;

/// Past this many handshakes in flight, a client must first prove that it
/// receives at its address (a QUIC Retry, one more round trip) before the
/// server does any cryptography for it: Initial packets from spoofed
/// addresses then cost the server nothing but the Retry.
const RETRY_ABOVE: u32 = 256;

/// How long the endpoint waits at shutdown for its sessions' closes to be
/// sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The ALPN protocol WebTransport's QUIC connections speak: HTTP/3.
pub const ALPN: &[&[u8]] = &[b"h3"];

/// The running endpoint.
pub struct WebTransport {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WebTransport {
    /// The UDP address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until it has stopped, which it does once the server's shutdown
    /// token is cancelled.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Binds UDP at `addr` and serves WebTransport there with `tls` (TLS 1.3, ALPN `h3`) until
/// `state.shutdown` is cancelled. Must be called inside a Tokio runtime.
pub fn spawn(
    state: web::Data<AppState>,
    addr: SocketAddr,
    tls: rustls::ServerConfig,
) -> std::io::Result<WebTransport> {
    let socket = std::net::UdpSocket::bind(addr).map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("WebTransport could not listen on UDP {addr}: {err}"),
        )
    })?;
    let config = ServerConfig::builder()
        .with_bind_socket(socket)
        .with_custom_tls_and_transport(tls, transport_config(&state)?)
        .build();
    let endpoint = Endpoint::server(config)?;
    let addr = endpoint.local_addr()?;
    let handshakes = Handshakes::new(state.config.wt_ip_handshakes);
    let task = tokio::spawn(accept_loop(endpoint, state, handshakes));
    Ok(WebTransport { addr, task })
}

/// QUIC's own bounds for every session, from the config.
fn transport_config(state: &AppState) -> std::io::Result<TransportConfig> {
    let mut transport = TransportConfig::default();
    // HTTP/3 takes three client streams of its own (control and QPACK's
    // two) besides the session's.
    transport.max_concurrent_uni_streams(QuicVarInt::from_u32(3 + state.config.wt_streams));
    // The CONNECT request is the one bidirectional stream a client needs.
    transport.max_concurrent_bidi_streams(QuicVarInt::from_u32(1));
    transport.stream_receive_window(QuicVarInt::from_u32(STREAM_WINDOW));
    transport.receive_window(QuicVarInt::from_u32(
        STREAM_WINDOW * (4 + state.config.wt_streams),
    ));
    transport.send_window(SEND_WINDOW);
    transport.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    transport.datagram_send_buffer_size(DATAGRAM_BUFFER);
    let idle = IdleTimeout::try_from(IDLE_TIMEOUT).map_err(std::io::Error::other)?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    Ok(transport)
}

/// Accepts connections until shutdown, each served by its own task.
async fn accept_loop(
    endpoint: Endpoint<ServerSide>,
    state: web::Data<AppState>,
    handshakes: Arc<Handshakes>,
) {
    let stopping = state.shutdown.clone().cancelled_owned();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => break,
            incoming = endpoint.accept() => {
                if !incoming.remote_address_validated() && handshakes.total() >= RETRY_ABOVE {
                    incoming.retry();
                    continue;
                }
                let ip = direct_client_ip(incoming.remote_address());
                let Some(handshake) = handshakes.begin(ip) else {
                    tracing::debug!(%ip, "refused a QUIC connection: too many handshakes from its address");
                    incoming.refuse();
                    continue;
                };
                tokio::spawn(session::serve(state.clone(), incoming, handshake));
            }
        }
    }
    // Each session closes itself on the same token; give the closes a
    // moment to leave, then close what is left.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
    endpoint.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutting_down");
}

/// QUIC handshakes in flight per client address, against
/// `--wt-ip-handshakes`, and in all, against [`MAX_HANDSHAKES`].
struct Handshakes {
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    max: u32,
}

impl Handshakes {
    fn new(max: u32) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            per_ip: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// Handshakes in flight from every address.
    fn total(&self) -> u32 {
        self.per_ip.lock().values().sum()
    }

    /// Counts a handshake from `ip`, or `None` if it, or the server, has
    /// its limit.
    fn begin(self: &Arc<Self>, ip: IpAddr) -> Option<Handshake> {
        let mut per_ip = self.per_ip.lock();
        let total: u32 = per_ip.values().sum();
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max || total >= MAX_HANDSHAKES {
            return None;
        }
        *count += 1;
        Some(Handshake {
            handshakes: self.clone(),
            ip,
        })
    }
}

/// One handshake counted until dropped: when its CONNECT request arrives,
/// or it fails or times out.
pub struct Handshake {
    handshakes: Arc<Handshakes>,
    ip: IpAddr,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut per_ip = self.handshakes.per_ip.lock();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_handshakes_back_when_they_end() {
        let handshakes = Handshakes::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = handshakes.begin(ip).unwrap();
        let _second = handshakes.begin(ip).unwrap();

        assert!(handshakes.begin(ip).is_none());
        assert!(handshakes.begin("10.0.0.2".parse().unwrap()).is_some());
        drop(first);
        assert!(handshakes.begin(ip).is_some());
    }

    #[test]
    fn no_address_gets_a_handshake_past_the_server_s_total() {
        let handshakes = Handshakes::new(1);
        let held: Vec<_> = (0..MAX_HANDSHAKES)
            .map(|n| handshakes.begin(IpAddr::from(n.to_be_bytes())).unwrap())
            .collect();

        assert_eq!(handshakes.total(), MAX_HANDSHAKES);
        assert!(handshakes.begin("192.0.2.1".parse().unwrap()).is_none());
        drop(held);
        assert_eq!(handshakes.total(), 0);
    }
}
