//! TLS for the client-facing listener: the rustls acceptor built from the PEM files in
//! `GATEWAY_TLS_CERT` / `GATEWAY_TLS_KEY`.

use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;

/// A TLS acceptor for the certificate chain in `cert` and the private key in `key` (both PEM),
/// offering HTTP/1.1 over ALPN (WebSocket upgrades need HTTP/1.1).
///
/// # Errors
/// A file cannot be read or parsed, or rustls refuses the pair.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("building the TLS configuration")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
