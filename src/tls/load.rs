//! Reads certificates, keys and CA bundles from PEM files and builds the rustls configs.
//! Every failure names the setting and the file, so a bad start-up or reload says what to fix.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::verify::ChainOnly;
use super::TlsError;
use super::{TlsConfig, UpstreamTlsConfig};

/// The crypto provider of every config: ring, chosen explicitly so the build never depends on
/// which provider features other crates switch on.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's config from `[tls]`.
pub(crate) fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("tls.cert_file", &cfg.cert_file)?;
    let key = private_key("tls.key_file", &cfg.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if cfg.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let roots = roots("tls.client_ca_file", &cfg.client_ca_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier = if cfg.require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier.build().map_err(|e| TlsError::File {
            key: "tls.client_ca_file",
            path: cfg.client_ca_file.clone(),
            reason: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| key_error("tls.key_file", &cfg.key_file, e))?;
    Ok(Arc::new(config))
}

/// The node connections' config from `[upstream_tls]`.
pub(crate) fn client_config(cfg: &UpstreamTlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = Arc::new(roots("upstream_tls.ca_file", &cfg.ca_file)?);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if cfg.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let verifier = ChainOnly::new(roots, provider()).map_err(|reason| TlsError::File {
            key: "upstream_tls.ca_file",
            path: cfg.ca_file.clone(),
            reason,
        })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let config = if cfg.cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain = certs("upstream_tls.cert_file", &cfg.cert_file)?;
        let key = private_key("upstream_tls.key_file", &cfg.key_file)?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| key_error("upstream_tls.key_file", &cfg.key_file, e))?
    };
    Ok(Arc::new(config))
}

fn file_error(key: &'static str, path: &str, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn key_error(key: &'static str, path: &str, e: rustls::Error) -> TlsError {
    let reason = match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to the certificate".to_string()
        }
        other => other.to_string(),
    };
    file_error(key, path, reason)
}

/// Every certificate in a PEM file; at least one.
fn certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(key, path, "no CERTIFICATE block found"));
    }
    Ok(chain)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn private_key(key: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            file_error(key, path, "no PRIVATE KEY block found")
        }
        e => file_error(key, path, format!("bad PEM: {e}")),
    })
}

/// A CA bundle; every certificate in it must be a usable trust anchor.
fn roots(key: &'static str, path: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(key, path)? {
        store
            .add(cert)
            .map_err(|e| file_error(key, path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(key, path, e))
}
