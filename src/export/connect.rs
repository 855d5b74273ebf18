//! Connecting to Postgres, with TLS through rustls (the `ring` provider, as
//! everywhere in ventas).
//!
//! `sslmode` follows libpq: `disable` (plain), `prefer` (TLS if the server
//! offers it, else plain), `require` (TLS; like libpq, the certificate is
//! verified only when `sslrootcert=<file.pem>` is given), `verify-ca` and
//! `verify-full` (TLS, certificate and host name verified against
//! `sslrootcert` or the web PKI roots).

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::ExportError;

/// Opens a connection and spawns its connection task on the current tokio
/// runtime. The URL is `postgres://user[:password]@host[:port]/db?sslmode=...`.
pub async fn connect(url: &str) -> Result<Client, ExportError> {
    let (url, tls) = split_tls_options(url)?;
    let mut config = Config::from_str(&url).map_err(|e| ExportError::Url(e.to_string()))?;
    if tls.mode == Tls::Disable {
        config.ssl_mode(SslMode::Disable);
        let (client, connection) = config.connect(NoTls).await?;
        spawn_connection(connection);
        return Ok(client);
    }
    config.ssl_mode(match tls.mode {
        Tls::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    let connector = MakeRustlsConnect::new(client_config(&tls)?);
    let (client, connection) = config.connect(connector).await?;
    spawn_connection(connection);
    Ok(client)
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!("postgres connection ended: {error}");
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Disable,
    Prefer,
    Require,
    Verify,
}

struct TlsOptions {
    mode: Tls,
    root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (tokio-postgres
/// knows neither `verify-*` nor `sslrootcert`). Without `sslmode`, `prefer`,
/// as libpq.
fn split_tls_options(url: &str) -> Result<(String, TlsOptions), ExportError> {
    let mut options = TlsOptions {
        mode: Tls::Prefer,
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), options));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "sslmode" => {
                options.mode = match value {
                    "disable" => Tls::Disable,
                    "prefer" | "allow" => Tls::Prefer,
                    "require" => Tls::Require,
                    "verify-ca" | "verify-full" => Tls::Verify,
                    other => return Err(ExportError::Url(format!("unknown sslmode {other:?}"))),
                }
            }
            "sslrootcert" => options.root_cert = Some(value.to_owned()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, options))
}

fn client_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, ExportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ExportError::Tls(e.to_string()))?;
    let verify = tls.mode == Tls::Verify || tls.root_cert.is_some();
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &tls.root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| ExportError::Tls(format!("sslrootcert {path}: {e}")))?;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.map_err(|e| ExportError::Tls(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ExportError::Tls(format!("sslrootcert {path}: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// libpq's `sslmode=require` without a root certificate: the connection is
/// encrypted and the handshake signed by the presented certificate, whose
/// chain is not checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_leave_the_url_and_keep_other_parameters() {
        let (url, tls) =
            split_tls_options("postgres://u@h:5432/db?sslmode=require&application_name=x")
                .expect("parse");
        assert_eq!(url, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(tls.mode, Tls::Require);
        let (url, tls) = split_tls_options("postgres://u@h/db").expect("parse");
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(tls.mode, Tls::Prefer);
        let (_, tls) =
            split_tls_options("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem")
                .expect("parse");
        assert_eq!(tls.mode, Tls::Verify);
        assert_eq!(tls.root_cert.as_deref(), Some("/ca.pem"));
        assert!(split_tls_options("postgres://u@h/db?sslmode=bogus").is_err());
    }
}
