//! TLS for the forward source's TCP listener (Fluentd's `<transport tls>`, Fluent Bit's
//! `tls on`): a rustls server configuration built from PEM files.
//!
//! rustls with the process's crypto provider ([`crate::tls`], *ring*): the one the AWS SDK's
//! client uses too, so no second crypto library is compiled in. TLS 1.2 and 1.3 only (rustls has nothing older). With `ca_file` the
//! server asks for a client certificate and refuses a client without one signed by that CA
//! (mutual TLS); without it any client may connect and authenticates, if at all, with the
//! shared_key handshake.
//!
//! Files are read when the source starts, so a bad path or a key that does not fit its
//! certificate stops start-up with an error naming the option and the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// `tls` options of a forward source (`[sources.tls]` or `tls.crt_file = ...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM server certificate, followed by its intermediates if any.
    pub crt_file: PathBuf,
    /// PEM private key of `crt_file` (PKCS#8, PKCS#1/RSA or SEC1/EC).
    pub key_file: PathBuf,
    /// PEM CA certificate(s). When set, clients must present a certificate signed by one of
    /// them (mutual TLS). Default: unset (no client certificates asked for).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Why the TLS configuration could not be built. Each names the option and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("tls.{key} = \"{}\": cannot read the file: {source}; check the path and that logferry may read it", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.{key} = \"{}\": no PEM certificate in it (expected a \"-----BEGIN CERTIFICATE-----\" block){detail}", path.display())]
    NoCertificate {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("tls.key_file = \"{}\": no PEM private key in it (expected \"-----BEGIN PRIVATE KEY-----\", RSA or EC PRIVATE KEY){detail}", path.display())]
    NoKey { path: PathBuf, detail: String },
    #[error("tls.ca_file = \"{}\": its certificates cannot verify clients: {message}", path.display())]
    BadCa { path: PathBuf, message: String },
    #[error("tls.crt_file / tls.key_file: {0}; check that the key belongs to the certificate")]
    Config(rustls::Error),
}

/// Builds the acceptor for the TCP listener.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = crate::tls::crypto_provider();
    let certs = certificates("crt_file", &config.crt_file)?;
    let key = private_key(&config.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsSetupError::Config)?;
    let builder = match &config.ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsSetupError::BadCa {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsSetupError::BadCa {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(key, path)?;
    let no_cert = |detail: String| TlsSetupError::NoCertificate {
        key,
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_cert(format!(": {e}")))?;
    if certs.is_empty() {
        return Err(no_cert(String::new()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsSetupError::NoKey {
        path: path.to_path_buf(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            other => format!(": {other}"),
        },
    })
}
