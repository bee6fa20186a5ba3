//! HTTPS: the server's certificate, and the TLS layer every connection goes
//! through under `--tls`.
//!
//! [`ServerCertificate`] is the certificate chain and key the server proves
//! itself with: one pushlab makes for itself ([`ServerCertificate::generate`],
//! ECDSA P-256, self-signed, valid for [`SELF_SIGNED_DAYS`] days so a page
//! may pin it with WebTransport's `serverCertificateHashes`), or one read
//! from PEM files ([`ServerCertificate::load`]), refused when it is not yet
//! valid or has expired. It builds a rustls [`ServerConfig`] for any ALPN
//! list, so HTTPS (`h2`, `http/1.1`) and a QUIC listener (`h3`) can share it.
//!
//! [`handshake`] puts TLS between the connection ([`Conn`], which counts
//! the TLS records on the socket and keeps the send timeout) and HTTP.
//! Handshakes are actix-tls's: bounded in time ([`HANDSHAKE_TIMEOUT`]) and
//! in number per worker (actix-tls's own limit, 256, which pauses accepting
//! while it is reached). What comes out is a [`TlsConn`], with the protocol
//! ALPN chose; an HTTP/2 one counts its frames per stream
//! ([`super::frames`]), since its requests share the connection at once,
//! and is closed once it has had no stream for
//! [`super::frames::IDLE_TIMEOUT`].
//!
//! It knows no routes, no requests and no rooms.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use actix_http::Protocol;
use actix_service::{Service, ServiceFactory};
use actix_tls::accept::rustls_0_23::{Acceptor, AcceptorService, TlsStream};
use actix_tls::accept::TlsError as HandshakeError;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use super::conn::{Conn, IntoSocket};
use super::frames::FrameCounter;
use super::traffic::{ConnectionMeter, StreamMeter};

/// How long pushlab's own certificate is valid, in days: WebTransport's
/// `serverCertificateHashes` accepts no certificate valid for longer than
/// 14 days (notAfter − notBefore).
pub const SELF_SIGNED_DAYS: i64 = 14;

/// How long before now pushlab's own certificate starts to be valid, so a
/// client whose clock is a little behind still accepts it. Counted within
/// [`SELF_SIGNED_DAYS`].
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The ALPN protocols HTTPS offers, preferred first.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why a certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read, or held no PEM of the kind needed.
    #[error("{path}: {why}")]
    File { path: String, why: String },
    /// The certificate is not yet valid.
    #[error("{path}: the certificate is not valid before {not_before} (now {now}); check the clock, or make a new one")]
    NotYetValid {
        path: String,
        not_before: String,
        now: String,
    },
    /// The certificate has expired.
    #[error("{path}: the certificate expired at {not_after} (now {now}); renew it (mkcert makes one in a second), or drop --tls-cert for a self-signed one")]
    Expired {
        path: String,
        not_after: String,
        now: String,
    },
    /// The certificate could not be made, or rustls refused the pair.
    #[error("{0}")]
    Tls(String),
}

impl From<CertificateError> for io::Error {
    fn from(err: CertificateError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, err.to_string())
    }
}

/// A certificate chain and its private key, as the server serves them.
#[derive(Debug)]
pub struct ServerCertificate {
    /// The chain, the server's own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the first certificate.
    pub key: PrivateKeyDer<'static>,
    /// The SHA-256 of the first certificate's DER: what
    /// `serverCertificateHashes` and browsers' certificate viewers show.
    pub sha256: [u8; 32],
    /// Whether pushlab made it (self-signed, for [`SELF_SIGNED_DAYS`]); a
    /// page pins only such a one with `serverCertificateHashes`.
    pub self_signed: bool,
}

impl Clone for ServerCertificate {
    fn clone(&self) -> Self {
        ServerCertificate {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            sha256: self.sha256,
            self_signed: self.self_signed,
        }
    }
}

impl ServerCertificate {
    /// Makes a self-signed ECDSA P-256 certificate for `names` (DNS names
    /// and IP addresses), valid from an hour before `now` for
    /// [`SELF_SIGNED_DAYS`] days in all.
    pub fn generate(names: &[String], now: SystemTime) -> Result<Self, CertificateError> {
        let tls = |err: rcgen::Error| CertificateError::Tls(format!("making a certificate: {err}"));
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(tls)?;
        let now = time::OffsetDateTime::from(now);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = params.not_before + time::Duration::days(SELF_SIGNED_DAYS);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pushlab (self-signed)");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls)?;
        let cert = params.self_signed(&key).map_err(tls)?;
        let der = cert.der().clone();
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|why| CertificateError::Tls(why.to_owned()))?;
        Ok(ServerCertificate {
            sha256: sha256(&der),
            chain: vec![der],
            key,
            self_signed: true,
        })
    }

    /// Reads a PEM certificate chain and its PEM private key, refusing a
    /// certificate that is not valid at `now`.
    pub fn load(cert: &Path, key: &Path, now: SystemTime) -> Result<Self, CertificateError> {
        let file = |path: &Path, why: String| CertificateError::File {
            path: path.display().to_string(),
            why,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| file(cert, err.to_string()))?;
        let first = chain
            .first()
            .ok_or_else(|| file(cert, "no CERTIFICATE in it".into()))?;
        check_validity(cert, first, now)?;
        let private =
            PrivateKeyDer::from_pem_file(key).map_err(|err| file(key, err.to_string()))?;
        let loaded = ServerCertificate {
            sha256: sha256(first),
            chain,
            key: private,
            self_signed: false,
        };
        // Refuse a key that is not the certificate's now, not at the first
        // handshake.
        loaded.server_config(HTTP_ALPN)?;
        Ok(loaded)
    }

    /// The certificate `config` asks for: the one in `--tls-cert`, or one
    /// made for `names`.
    pub fn from_files_or_generate(
        cert: Option<&Path>,
        key: Option<&Path>,
        names: &[String],
    ) -> Result<Self, CertificateError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Self::load(cert, key, SystemTime::now()),
            (None, None) => Self::generate(names, SystemTime::now()),
            _ => Err(CertificateError::Tls(
                "--tls-cert and --tls-key go together".into(),
            )),
        }
    }

    /// A rustls server configuration that proves itself with this
    /// certificate and offers `alpn` (for example [`HTTP_ALPN`], or `h3`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, CertificateError> {
        self.config_for(rustls::DEFAULT_VERSIONS, alpn)
    }

    /// The same for QUIC, which speaks TLS 1.3 only (HTTP/3 and
    /// WebTransport: `alpn` is `h3`).
    pub fn quic_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, CertificateError> {
        self.config_for(&[&rustls::version::TLS13], alpn)
    }

    fn config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Result<ServerConfig, CertificateError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|err| CertificateError::Tls(err.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|err| CertificateError::Tls(format!("the key does not fit: {err}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The SHA-256 as lower-case hex, as `/config` gives it.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The SHA-256 as browsers' certificate viewers show it: upper-case
    /// hex pairs joined by colons.
    pub fn fingerprint(&self) -> String {
        let pairs: Vec<String> = self.sha256.iter().map(|b| format!("{b:02X}")).collect();
        pairs.join(":")
    }
}

/// The names a self-signed certificate is made for: `localhost`, the
/// loopback addresses, the bound address unless it is a wildcard, and
/// `local`, this machine's other addresses.
pub fn own_names(bound: IpAddr, local: &[IpAddr]) -> Vec<String> {
    let mut ips = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if !bound.is_unspecified() {
        ips.push(bound);
    }
    ips.extend(local.iter().copied());
    let mut names = vec!["localhost".to_owned()];
    for ip in ips {
        let name = ip.to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Refuses a certificate that is not valid at `now`.
fn check_validity(
    path: &Path,
    der: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), CertificateError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|err| CertificateError::File {
            path: path.display().to_string(),
            why: format!("not an X.509 certificate: {err}"),
        })?;
    let validity = cert.validity();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let show = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| secs.to_string())
    };
    let path = path.display().to_string();
    if now_secs < validity.not_before.timestamp() {
        return Err(CertificateError::NotYetValid {
            path,
            not_before: show(validity.not_before.timestamp()),
            now: show(now_secs),
        });
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(CertificateError::Expired {
            path,
            not_after: show(validity.not_after.timestamp()),
            now: show(now_secs),
        });
    }
    Ok(())
}

/// An HTTPS connection: TLS over the socket's [`Conn`], and, on HTTP/2,
/// the frames counted per stream above the TLS.
pub struct TlsConn {
    tls: TlsStream<Conn>,
    /// Counts HTTP/2 frames per stream; `None` on HTTP/1.1, where the
    /// socket's own meter splits the TLS records between requests.
    frames: Option<FrameCounter>,
}

impl TlsConn {
    /// The socket's byte counter: the TLS records, for the requests of an
    /// HTTP/1.1 connection (one at a time) and its WebSocket.
    pub fn meter(&self) -> &Arc<ConnectionMeter> {
        self.tls.get_ref().0.meter()
    }

    /// The per-stream counter of an HTTP/2 connection.
    pub fn streams(&self) -> Option<&Arc<StreamMeter>> {
        self.frames.as_ref().map(FrameCounter::streams)
    }

    /// Hands the connection to a task that owns it for good (a WebSocket),
    /// which waits for readiness and reads and writes without waiting. TLS
    /// cannot be read that way, so a relay task moves the plaintext between
    /// the TLS stream and one end of a local socket pair, and the caller
    /// gets the other end: two more file descriptors and the relay's
    /// buffers per socket, for the same code above it. The TLS socket
    /// keeps counting and its send timeout becomes `timeout`, as does the
    /// local end's.
    pub fn into_local_socket(mut self, timeout: Duration) -> io::Result<Conn<UnixStream>> {
        let (near, mut far) = UnixStream::pair()?;
        self.tls.get_mut().0.set_send_timeout(timeout);
        // The socket task bounds what it reads itself; the relay reads
        // for it.
        self.tls.get_ref().0.meter().read_freely();
        let mut tls = self.tls;
        actix_rt::spawn(async move {
            // Ends when either side closes or fails (the client's send
            // timeout included); dropping both ends closes the other side.
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut far).await;
        });
        Ok(Conn::new(near, timeout))
    }
}

impl IntoSocket for TlsConn {
    type Socket = UnixStream;
    fn meter(&self) -> &Arc<ConnectionMeter> {
        TlsConn::meter(self)
    }
    fn into_socket(self, timeout: Duration) -> io::Result<Conn<UnixStream>> {
        self.into_local_socket(timeout)
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.tls).poll_read(cx, buf);
        let Some(frames) = &mut this.frames else {
            return result;
        };
        match result {
            Poll::Ready(Ok(())) => frames.read(&buf.filled()[before..]),
            // HTTP/2 reads all the time; a connection with nothing to read
            // and no stream for the idle timeout is closed, however
            // faithfully its client answers pings.
            Poll::Pending if frames.poll_idle(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "an HTTP/2 connection with no stream for the idle timeout",
                )));
            }
            _ => {}
        }
        result
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tls).poll_write(cx, buf);
        if let (Poll::Ready(Ok(written)), Some(frames)) = (&result, &mut this.frames) {
            frames.wrote(&buf[..*written]);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tls).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(written)), Some(frames)) = (&result, &mut this.frames) {
            let mut left = *written;
            for buf in bufs {
                let take = left.min(buf.len());
                frames.wrote(&buf[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// The TLS handshake as a service: a [`Conn`] and its client's address in,
/// a [`TlsConn`], the protocol ALPN chose and the address out. One per
/// worker, from [`handshake`].
pub struct Handshake {
    acceptor: AcceptorService,
}

impl Service<(Conn, Option<SocketAddr>)> for Handshake {
    type Response = (TlsConn, Protocol, Option<SocketAddr>);
    type Error = HandshakeError<io::Error, std::convert::Infallible>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    // While the worker has its most handshakes under way, it accepts no
    // more connections.
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Conn>::poll_ready(&self.acceptor, cx)
    }

    fn call(&self, (conn, peer): (Conn, Option<SocketAddr>)) -> Self::Future {
        let accepted = self.acceptor.call(conn);
        Box::pin(async move {
            let tls = accepted.await?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let (protocol, frames) = match h2 {
                true => (Protocol::Http2, Some(FrameCounter::default())),
                false => (Protocol::Http1, None),
            };
            if h2 {
                // HTTP/2 bounds what it reads ahead itself, by its flow
                // control and its limit of streams at once; the socket's
                // meter sees no request begin or end on it.
                tls.get_ref().0.meter().read_freely();
            }
            Ok((TlsConn { tls, frames }, protocol, peer))
        })
    }
}

/// The factory of [`Handshake`]s for `config`, with the handshake bounded
/// by [`HANDSHAKE_TIMEOUT`].
pub fn handshake(
    config: Arc<ServerConfig>,
) -> impl ServiceFactory<
    (Conn, Option<SocketAddr>),
    Config = (),
    Response = (TlsConn, Protocol, Option<SocketAddr>),
    Error = HandshakeError<io::Error, std::convert::Infallible>,
    InitError = (),
> + Clone {
    let mut acceptor = Acceptor::new((*config).clone());
    acceptor.set_handshake_timeout(HANDSHAKE_TIMEOUT);
    actix_service::fn_factory(move || {
        let service = ServiceFactory::<Conn>::new_service(&acceptor, ());
        async move {
            let acceptor = service.await?;
            Ok(Handshake { acceptor })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn names() -> Vec<String> {
        own_names(IpAddr::from([0, 0, 0, 0]), &[IpAddr::from([10, 0, 0, 7])])
    }

    #[test]
    fn a_self_signed_certificate_is_valid_for_at_most_fourteen_days() {
        // Arrange
        let now = SystemTime::now();

        // Act
        let made = ServerCertificate::generate(&names(), now).unwrap();

        // Assert
        let (_, cert) = x509_parser::parse_x509_certificate(&made.chain[0]).unwrap();
        let validity = cert.validity();
        let span = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert!(span <= SELF_SIGNED_DAYS * 86_400, "valid for {span} s");
        assert!(validity.is_valid());
        assert!(made.self_signed);
        assert_eq!(made.fingerprint().len(), 32 * 3 - 1);
    }

    #[test]
    fn a_self_signed_certificate_names_localhost_and_every_address() {
        let made = ServerCertificate::generate(&names(), SystemTime::now()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&made.chain[0]).unwrap();
        let alt = cert.subject_alternative_name().unwrap().unwrap();
        let listed = format!("{:?}", alt.value.general_names);
        for name in ["localhost", "127.0.0.1", "10.0.0.7"] {
            let wanted = match name.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => format!("{:?}", v4.octets()),
                _ => name.to_owned(),
            };
            assert!(listed.contains(&wanted), "{name} missing from {listed}");
        }
        assert!(listed.contains(&format!("{:?}", std::net::Ipv6Addr::LOCALHOST.octets())));
    }

    #[test]
    fn a_rustls_config_offers_the_alpn_it_is_given() {
        let made = ServerCertificate::generate(&names(), SystemTime::now()).unwrap();
        let config = made.server_config(&[b"h3"]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h3".to_vec()]);
    }

    /// Writes a certificate made at `made` and its key as PEM files.
    fn pem_files(made: SystemTime) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let params = {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.not_before = time::OffsetDateTime::from(made);
            params.not_after = params.not_before + time::Duration::days(1);
            params
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (dir, cert_path, key_path)
    }

    #[test]
    fn a_given_certificate_is_refused_before_and_after_its_validity() {
        // Arrange: valid for one day from now.
        let now = SystemTime::now();
        let (_dir, cert, key) = pem_files(now);

        // Act
        let early = ServerCertificate::load(&cert, &key, now - DAY);
        let late = ServerCertificate::load(&cert, &key, now + 2 * DAY);
        let within = ServerCertificate::load(&cert, &key, now + DAY / 2);

        // Assert
        assert!(matches!(early, Err(CertificateError::NotYetValid { .. })));
        assert!(matches!(late, Err(CertificateError::Expired { .. })));
        let within = within.unwrap();
        assert!(!within.self_signed);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_at_load() {
        let now = SystemTime::now();
        let (_dir, cert, _) = pem_files(now);
        let (_other, _, key) = pem_files(now);
        let refused = ServerCertificate::load(&cert, &key, now).unwrap_err();
        assert!(refused.to_string().contains("does not fit"), "{refused}");
    }
}
