//! The `[tls]` (client listener) and `[upstream_tls]` (connections to the nodes) settings.
//! Only paths and switches live here; the files are read and checked by [`super::TlsSetup`].
//! `config` re-exports both structs, so the config file format is defined once, here.

use serde::{Deserialize, Serialize};

/// A TLS setting that does not fit with the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct InvalidSetting {
    /// The setting's key, as written in TOML (`section.key`).
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// TLS on the client listener; off while `cert_file` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the proxy presents to clients; empty = plaintext (default empty).
    pub cert_file: String,
    /// PEM private key of `cert_file` (default empty).
    pub key_file: String,
    /// PEM CA bundle client certificates are checked against; empty = no client certificates
    /// asked for (default empty).
    pub client_ca_file: String,
    /// With `client_ca_file`: refuse clients without a valid certificate (true) or accept them
    /// and check only the certificates presented (false) (default true).
    pub require_client_cert: bool,
    /// A client that has not finished its TLS handshake after this long is closed
    /// (default 5000 ms).
    pub handshake_timeout_ms: u64,
    /// How often certificate, key and CA files (both sides) are checked for changes and
    /// reloaded; 0 = only on SIGHUP (default 5000 ms).
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            require_client_cert: true,
            handshake_timeout_ms: 5_000,
            reload_interval_ms: 5_000,
        }
    }
}

impl TlsConfig {
    /// True when the client listener speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// Checks that the settings fit together (files are read by [`super::TlsSetup`]).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(invalid(
                "tls.key_file",
                "tls.cert_file and tls.key_file must be set together",
            ));
        }
        if !self.enabled() && !self.client_ca_file.is_empty() {
            return Err(invalid(
                "tls.client_ca_file",
                "client certificates need TLS on the listener (tls.cert_file)",
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(invalid(
                "tls.handshake_timeout_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// TLS on the connections to the nodes (data path, dedicated connections, topology fetches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Connect to the nodes with TLS (default false).
    pub enabled: bool,
    /// PEM CA bundle the nodes' certificates must chain to; required when enabled
    /// (default empty).
    pub ca_file: String,
    /// Name every node's certificate is checked against instead of the node's address from
    /// the topology (default empty: the announced host name, or IP address).
    pub server_name: String,
    /// Check that the node's certificate names it; false checks only the chain
    /// (default true).
    pub verify_hostname: bool,
    /// PEM client certificate chain for nodes that ask for one (`tls-auth-clients`)
    /// (default empty).
    pub cert_file: String,
    /// PEM private key of `cert_file` (default empty).
    pub key_file: String,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ca_file: String::new(),
            server_name: String::new(),
            verify_hostname: true,
            cert_file: String::new(),
            key_file: String::new(),
        }
    }
}

impl UpstreamTlsConfig {
    /// Checks that the settings fit together (files are read by [`super::TlsSetup`]).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(invalid(
                "upstream_tls.key_file",
                "upstream_tls.cert_file and upstream_tls.key_file must be set together",
            ));
        }
        if self.enabled && self.ca_file.is_empty() {
            return Err(invalid(
                "upstream_tls.ca_file",
                "required when upstream_tls.enabled is true",
            ));
        }
        if !self.server_name.is_empty()
            && rustls::pki_types::ServerName::try_from(self.server_name.as_str()).is_err()
        {
            return Err(invalid(
                "upstream_tls.server_name",
                format!("not a DNS name or IP address: {:?}", self.server_name),
            ));
        }
        Ok(())
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        key,
        reason: reason.into(),
    }
}
