//! TLS for the load generator's TCP clients: rustls on ring, as the server
//! uses, with one client configuration per ALPN protocol the benchmarks ask
//! for (`http/1.1` for HTTPS SSE and `wss:`, `h2` for SSE over HTTP/2).
//!
//! The server under test serves its own self-signed certificate on
//! loopback, so these configurations accept any certificate: the handshake
//! and the record layer are the real ones (signatures are still checked
//! against the certificate's key), only the chain is not judged. That is
//! right for a benchmark of the server's cost and nothing else; the
//! WebTransport clients pin the certificate's hash from `GET /config`
//! instead, as browsers do.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// Which application protocol a TLS connection asks for (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
}

/// The connectors for a run against an HTTPS server, one per ALPN.
#[derive(Clone)]
pub struct Tls {
    http1: TlsConnector,
    h2: TlsConnector,
}

impl Tls {
    pub fn new() -> anyhow::Result<Tls> {
        Ok(Tls {
            http1: connector(b"http/1.1")?,
            h2: connector(b"h2")?,
        })
    }

    pub fn connector(&self, alpn: Alpn) -> &TlsConnector {
        match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::H2 => &self.h2,
        }
    }
}

fn connector(alpn: &[u8]) -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("rustls's default protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts whatever certificate the server shows, and checks the
/// handshake's signatures with it. For the benchmarks on loopback only.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A SHA-256 hash given as 64 hex digits (`GET /config`'s
/// `webtransport.certificate_hash`).
pub fn parse_sha256_hex(hex: &str) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(
        hex.len() == 64 && hex.is_ascii(),
        "a SHA-256 hash is 64 hex digits, not {hex:?}"
    );
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
        // ASCII was checked above, so the pair is a str.
        let pair = std::str::from_utf8(pair).expect("ASCII");
        *byte = u8::from_str_radix(pair, 16).with_context(|| format!("{pair:?} is not hex"))?;
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_hash_is_read_from_its_hex_digits() {
        let hex = "00ff10ab".repeat(8);

        let hash = parse_sha256_hex(&hex).unwrap();

        assert_eq!(&hash[..4], &[0x00, 0xff, 0x10, 0xab]);
        assert_eq!(hash[31], 0xab);
        assert_eq!(parse_sha256_hex(&hex.to_uppercase()).unwrap(), hash);
    }

    #[test]
    fn a_certificate_hash_of_the_wrong_length_or_not_hex_is_refused() {
        assert!(parse_sha256_hex("abcd").is_err());
        assert!(parse_sha256_hex(&"zz".repeat(32)).is_err());
        assert!(parse_sha256_hex(&"é".repeat(32)).is_err());
    }
}
