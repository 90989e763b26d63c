//! TLS for both sides of the proxy, with rustls: the client listener ([`ClientStream`],
//! optional client-certificate checks for mTLS) and the connections to the nodes
//! ([`UpstreamStream`], CA bundle, host name checks, optional client certificate).
//!
//! This module owns the certificate files: it reads them into rustls configs at start-up
//! ([`TlsSetup::new`]), and rebuilds and swaps them on SIGHUP or when a file changes
//! ([`reload`]). Connections pick the config in force when they are made, so a reload never
//! touches an open connection.

mod client;
mod load;
pub mod reload;
mod server;
mod settings;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

pub use client::{
    upstream, upstream_to_host, UpstreamRead, UpstreamStream, UpstreamTls, UpstreamWrite,
};
pub use server::{accept, ClientStream, ClientTls, ServerTls};
pub use settings::{InvalidSetting, TlsConfig, UpstreamTlsConfig};

/// Handshake failures, by `side` (`client` | `upstream`).
pub const HANDSHAKE_FAILURES: &str = "slotway_tls_handshake_failures_total";
/// Certificate reloads, by `result` (`ok` | `error`).
pub const RELOADS: &str = "slotway_tls_reloads_total";

/// Why TLS could not be set up (at start-up) or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file is missing, unreadable, not PEM, or does not fit.
    #[error("{key} ({path}): {reason}")]
    File {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination of settings.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Both sides' TLS state, and the settings a reload reads the files from again.
#[derive(Debug)]
pub struct TlsSetup {
    /// The client listener's TLS; `None` = plaintext.
    pub client: Option<Arc<ClientTls>>,
    /// TLS to the nodes; `None` = plaintext.
    pub upstream: Option<Arc<UpstreamTls>>,
    listener: TlsConfig,
    nodes: UpstreamTlsConfig,
}

impl TlsSetup {
    /// Reads every configured file; any problem fails start-up with the setting and file named.
    pub fn new(listener: &TlsConfig, nodes: &UpstreamTlsConfig) -> Result<Self, TlsError> {
        let client = match listener.enabled() {
            false => None,
            true => Some(Arc::new(ClientTls {
                config: Arc::new(ArcSwap::new(load::server_config(listener)?)),
                handshake_timeout: Duration::from_millis(listener.handshake_timeout_ms),
            })),
        };
        let upstream = match nodes.enabled {
            false => None,
            true => Some(Arc::new(UpstreamTls::new(
                Arc::new(ArcSwap::new(load::client_config(nodes)?)),
                &nodes.server_name,
            ))),
        };
        Ok(Self {
            client,
            upstream,
            listener: listener.clone(),
            nodes: nodes.clone(),
        })
    }

    /// True when either side uses TLS.
    pub fn enabled(&self) -> bool {
        self.client.is_some() || self.upstream.is_some()
    }

    /// Reads the files again and swaps in the new configs: both sides or, on any error,
    /// neither. Counted in `slotway_tls_reloads_total{result}`.
    pub fn reload(&self) -> Result<(), TlsError> {
        let result = self.rebuild();
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(RELOADS, "result" => label).increment(1);
        result
    }

    fn rebuild(&self) -> Result<(), TlsError> {
        let server = match &self.client {
            Some(_) => Some(load::server_config(&self.listener)?),
            None => None,
        };
        let client = match &self.upstream {
            Some(_) => Some(load::client_config(&self.nodes)?),
            None => None,
        };
        if let (Some(side), Some(new)) = (&self.client, server) {
            side.config.store(new);
        }
        if let (Some(side), Some(new)) = (&self.upstream, client) {
            side.config.store(new);
        }
        Ok(())
    }

    /// Every file the configs are read from, for change detection.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if self.client.is_some() {
            let l = &self.listener;
            files.extend([&l.cert_file, &l.key_file, &l.client_ca_file]);
        }
        if self.upstream.is_some() {
            let n = &self.nodes;
            files.extend([&n.ca_file, &n.cert_file, &n.key_file]);
        }
        files
            .into_iter()
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    /// `tls.reload_interval_ms`.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.listener.reload_interval_ms)
    }
}

fn count_handshake_failure(side: &'static str) {
    metrics::counter!(HANDSHAKE_FAILURES, "side" => side).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn reload_swaps_both_sides_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let (cert, key) = self_signed();
        let listener = TlsConfig {
            cert_file: file("l.crt", &cert),
            key_file: file("l.key", &key),
            ..TlsConfig::default()
        };
        let nodes = UpstreamTlsConfig {
            enabled: true,
            ca_file: file("ca.crt", &cert),
            ..UpstreamTlsConfig::default()
        };
        let setup = TlsSetup::new(&listener, &nodes).unwrap();
        assert!(setup.enabled());
        assert_eq!(setup.files().len(), 3);
        let server = |s: &TlsSetup| s.client.as_ref().unwrap().config.load_full();
        let client = |s: &TlsSetup| s.upstream.as_ref().unwrap().config.load_full();
        let (s0, c0) = (server(&setup), client(&setup));

        // A broken CA bundle upstream: the listener's good files are not swapped in either.
        file("ca.crt", "garbage");
        let err = setup.reload().unwrap_err();
        assert!(err.to_string().contains("upstream_tls.ca_file"), "{err}");
        assert!(Arc::ptr_eq(&server(&setup), &s0));
        assert!(Arc::ptr_eq(&client(&setup), &c0));

        let (cert2, key2) = self_signed();
        file("l.crt", &cert2);
        file("l.key", &key2);
        file("ca.crt", &cert2);
        setup.reload().unwrap();
        assert!(!Arc::ptr_eq(&server(&setup), &s0));
        assert!(!Arc::ptr_eq(&client(&setup), &c0));
    }
}
