//! TLS (`wss://`): the certificate and key files, the acceptor, the stream a connection runs on
//! with or without TLS, and reloading the certificate while connections stay up.
//!
//! The acceptor's config never changes; it asks a [`Resolver`] for the certificate on every
//! handshake, and a reload swaps the resolver's `Arc`. A handshake in progress keeps the key it
//! was handed, established connections never look again, and a file that does not load leaves
//! the previous certificate in place.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Where the certificate chain and its private key are read from (PEM), at start and on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC); the first key in the file is used.
    pub key: PathBuf,
}

/// Why the certificate or key could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // `error`, not `source`: the message carries it, and a chain printed with `{:#}` would
    // say it twice.
    #[error("cannot read the TLS {what} file {}: {error}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("the TLS certificate file {} holds no usable PEM certificate{}", path.display(), detail(why))]
    Certificate { path: PathBuf, why: String },
    #[error("the TLS key file {} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1){}", path.display(), detail(why))]
    Key { path: PathBuf, why: String },
    #[error("the TLS key in {} does not belong to the certificate in {}: {why}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

fn detail(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

/// ring and not aws-lc-rs: ring builds with only a C compiler (aws-lc-rs wants cmake on some
/// hosts), and it is one provider for the whole process, named here rather than picked up from
/// whatever features happen to be enabled.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// Reads and checks the pair: the chain parses, the key parses, and the key is the
/// certificate's.
pub fn load_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: files.cert.clone(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: files.cert.clone(),
            why: String::new(),
        });
    }
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        why: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            e => e.to_string(),
        },
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            why: e.to_string(),
        },
        e => TlsError::Key {
            path: files.key.clone(),
            why: e.to_string(),
        },
    })
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct Resolver {
    /// A std lock and not tokio's: it is held to clone or replace an `Arc`, never across
    /// `.await`. Read on every handshake, written on a reload.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The server's TLS side: built once at start, shared by every connection task.
pub struct Tls {
    /// Read again on every reload.
    files: TlsFiles,
    /// The same crypto provider for the acceptor and for checking reloaded keys.
    provider: Arc<CryptoProvider>,
    /// What a reload swaps.
    resolver: Arc<Resolver>,
    /// Cheap to clone (an `Arc` of the config inside); its config asks `resolver`.
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Loads the certificate and key; an error names the file that is wrong.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = provider();
        let key = load_key(files, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // WebSocket upgrades are HTTP/1.1; a client offering only h2 is told so in the handshake.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files: files.clone(),
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again. New handshakes use the new certificate; connections already up
    /// keep theirs. On an error the previous certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = Arc::new(load_key(&self.files, &self.provider)?);
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }

    /// The files a reload reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A connection's byte stream: plain TCP, or TLS over it. The TLS state (rustls buffers, some
/// KiB) is boxed so a plain connection does not pay for its size: every connection's future
/// holds this stream for its whole life.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The connection's stream: the TCP stream itself without TLS, else the TLS handshake, which
/// must end by `deadline` (the auth timeout: a client that stalls its handshake holds its task
/// and its connection slot no longer than one that stalls its login). `None` when the
/// handshake failed or took too long; that is logged here.
pub async fn wrap(
    tls: Option<&Tls>,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Stream::Plain(tcp));
    };
    match tokio::time::timeout_at(deadline, tls.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not complete in time");
            None
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The line chat-server logs at start when it listens beyond loopback without TLS, or `None`.
pub fn plaintext_warning(addr: SocketAddr, tls: bool) -> Option<String> {
    (!tls && !addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr} without TLS: passwords, tokens and messages cross the network \
             unencrypted; pass --tls-cert and --tls-key to serve wss://"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_beyond_loopback_is_warned_about() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(plaintext_warning(addr("127.0.0.1:7878"), false).is_none());
        assert!(plaintext_warning(addr("127.8.9.1:7878"), false).is_none());
        assert!(plaintext_warning(addr("[::1]:7878"), false).is_none());
        let w = plaintext_warning(addr("0.0.0.0:7878"), false).expect("warned");
        assert!(w.contains("without TLS") && w.contains("--tls-cert"), "{w}");
        assert!(plaintext_warning(addr("[::]:7878"), false).is_some());
        assert!(plaintext_warning(addr("0.0.0.0:7878"), true).is_none());
    }

    #[test]
    fn a_bad_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let e = Tls::load(&files)
            .err()
            .expect("missing files refused")
            .to_string();
        assert!(e.contains("cert.pem") && e.contains("certificate"), "{e}");
        std::fs::write(&files.cert, "not a certificate\n").expect("write");
        let e = Tls::load(&files)
            .err()
            .expect("garbage refused")
            .to_string();
        assert!(e.contains("cert.pem") && e.contains("no usable PEM"), "{e}");
    }
}
