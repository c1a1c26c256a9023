//! TLS for a wss:// --url: the platform's trusted roots plus --ca-file (a private CA, such as
//! the one a test server's certificate comes from). The same rules as chat-tui's `tls.rs`;
//! kept here too rather than making the load generator depend on the terminal client.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_tungstenite::Connector;

/// A rustls config trusting the platform's roots and the certificates in `ca_file`.
pub fn connector(ca_file: Option<&Path>) -> anyhow::Result<Connector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        if certs.is_empty() {
            bail!("the CA file {} holds no PEM certificate", path.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {} is not usable", path.display()))?;
        }
    }
    if roots.is_empty() {
        bail!("no trusted certificates for wss://: the platform's store is empty; pass --ca-file");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}
