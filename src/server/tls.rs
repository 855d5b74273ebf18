//! TLS served directly with rustls (`--tls-cert`, `--tls-key`).
//!
//! [`load`] reads a PEM certificate chain and private key into a rustls
//! server configuration. The handshakes themselves run in the accept loop's
//! per-connection tasks (`server::accept`): each is bounded by
//! `http_header_read_timeout_ms` and counts as a connection in the HTTP
//! phase, so slow handshakes never hold up accepting and their number is
//! capped by `http_connections_max`. Deploying behind a TLS-terminating
//! reverse proxy instead: `docs/deploy.md`.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate chain {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("reading private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server configuration from PEM files (ring provider, TLS 1.2
/// and 1.3, ALPN `http/1.1`: WebSockets upgrade over HTTP/1.1).
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate {
            path: cert_path.display().to_string(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| TlsError::Key {
        path: key_path.display().to_string(),
        reason: error.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
