//! TLS for the Flight SQL port: the server's certificate and key (PEM),
//! and optionally the CA whose client certificates are required (mTLS).
//! Each file is read and parsed here, so that a missing, bad or
//! mismatched one stops the start with a message naming it.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ServeError;
use crate::config::ServeConfig;

/// The transport of `config`: plain text, or TLS with its files checked.
pub(super) fn transport(config: &ServeConfig) -> Result<tonic::transport::Server, ServeError> {
    let builder = tonic::transport::Server::builder();
    match server_tls(config)? {
        None => Ok(builder),
        Some(tls) => builder.tls_config(tls).map_err(|e| {
            ServeError::Tls(format!(
                "the certificate and key cannot be used together: {}",
                source_chain(&e)
            ))
        }),
    }
}

/// The TLS settings of `config`, checked: `None` for a plain-text port.
fn server_tls(config: &ServeConfig) -> Result<Option<ServerTlsConfig>, ServeError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => {
            return match &config.tls_client_ca {
                None => Ok(None),
                Some(_) => Err(ServeError::Tls(
                    "--tls-client-ca needs --tls-cert and --tls-key (the server's own certificate)"
                        .into(),
                )),
            };
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            return Err(ServeError::Tls(
                "--tls-cert needs --tls-key (the certificate's private key)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ServeError::Tls(
                "--tls-key needs --tls-cert (the certificate it belongs to)".into(),
            ));
        }
    };
    install_crypto_provider();
    let cert_pem = read(cert)?;
    certificates(cert, &cert_pem)?;
    let key_pem = read(key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ServeError::Tls(format!(
            "{}: no private key in PEM form ({e}); give the key of the certificate with --tls-key",
            key.display()
        ))
    })?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    if let Some(ca) = &config.tls_client_ca {
        let ca_pem = read(ca)?;
        certificates(ca, &ca_pem)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca_pem));
    }
    // Builds rustls' configuration now: a key that does not belong to the
    // certificate fails here, not at the first client.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| {
            ServeError::Tls(format!(
                "the certificate {} and the key {} cannot be used together: {}",
                cert.display(),
                key.display(),
                source_chain(&e)
            ))
        })?;
    Ok(Some(tls))
}

/// rustls needs one process-wide crypto provider; with two compiled in
/// (aws-lc-rs and ring arrive through different libraries) it would panic
/// at the first handshake. aws-lc-rs is installed; a second call is a no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
}

fn certificates(path: &Path, pem: &[u8]) -> Result<(), ServeError> {
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match parsed {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err(ServeError::Tls(format!(
            "{}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ))),
        Err(e) => Err(ServeError::Tls(format!(
            "{}: not a PEM certificate ({e})",
            path.display()
        ))),
    }
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
