//! TLS for the client: which certificates it trusts, and the stream that is
//! either a plain socket or TLS over one.
//!
//! The server tells TLS from plaintext by the first byte, so a TLS client
//! needs nothing more than to start with the handshake: the encoding inside
//! is the usual framed one.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a trust setting could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read CA certificates from {path}: {source}")]
    Read {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("unusable CA certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Whom the client trusts when it connects with TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// The public web's certificate authorities (Mozilla's list, built in):
    /// for a server with a certificate from a public CA.
    pub fn public_roots() -> ClientTls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        ClientTls::trusting(roots)
    }

    /// Only the CA certificates in a PEM file (`--ca-file`): for a private
    /// CA, or a self-signed server certificate (`natter cert`).
    pub fn from_ca_file(path: &Path) -> Result<ClientTls, TlsConfigError> {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsConfigError::Read {
                path: shown.clone(),
                source,
            })?;
        ClientTls::from_certs(certs, shown)
    }

    /// Only the CA certificates in PEM text.
    pub fn from_ca_pem(pem: &str) -> Result<ClientTls, TlsConfigError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsConfigError::Read {
                path: "(text)".into(),
                source,
            })?;
        ClientTls::from_certs(certs, "(text)".into())
    }

    fn from_certs(
        certs: Vec<CertificateDer<'static>>,
        shown: String,
    ) -> Result<ClientTls, TlsConfigError> {
        if certs.is_empty() {
            return Err(TlsConfigError::NoCertificate(shown));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert)?;
        }
        Ok(ClientTls::trusting(roots))
    }

    fn trusting(roots: rustls::RootCertStore) -> ClientTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientTls {
            config: Arc::new(config),
        }
    }

    /// The handshake over `stream`, verifying the certificate against the
    /// host part of `addr` (`HOST:PORT`, `[V6]:PORT`).
    pub(crate) async fn connect(&self, addr: &str, stream: TcpStream) -> io::Result<Wire> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a host name"))?;
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await?;
        Ok(Wire::Tls(Box::new(tls)))
    }
}

/// The host of `HOST:PORT` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The connection's byte stream.
pub(crate) enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_what_comes_before_the_port() {
        assert_eq!(host_of("localhost:6666"), "localhost");
        assert_eq!(host_of("127.0.0.1:6666"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6666"), "::1");
        assert_eq!(host_of("chat.example.org"), "chat.example.org");
    }
}
