//! The `[tls]` (client listener) and `[upstream_tls]` (connections to the nodes) settings.
//! Only paths and switches live here; the files are read and checked by `crate::tls`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(None, env).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_settable_from_env() {
        let cfg = load(&[]).unwrap();
        assert!(!cfg.tls.enabled());
        assert!(!cfg.upstream_tls.enabled);
        let cfg = load(&[
            ("SLOTWAY_TLS_CERT_FILE", "/c.pem"),
            ("SLOTWAY_TLS_KEY_FILE", "/k.pem"),
            ("SLOTWAY_UPSTREAM_TLS_ENABLED", "true"),
            ("SLOTWAY_UPSTREAM_TLS_CA_FILE", "/ca.pem"),
            ("SLOTWAY_UPSTREAM_TLS_SERVER_NAME", "redis.internal"),
        ])
        .unwrap();
        assert!(cfg.tls.enabled());
        assert_eq!(cfg.tls.key_file, "/k.pem");
        assert!(cfg.upstream_tls.enabled);
        assert_eq!(cfg.upstream_tls.server_name, "redis.internal");
    }

    #[test]
    fn inconsistent_settings_name_the_key() {
        for (pairs, key) in [
            (&[("SLOTWAY_TLS_CERT_FILE", "/c.pem")][..], "tls.key_file"),
            (
                &[("SLOTWAY_TLS_CLIENT_CA_FILE", "/ca.pem")][..],
                "tls.client_ca_file",
            ),
            (
                &[("SLOTWAY_UPSTREAM_TLS_ENABLED", "yes")][..],
                "upstream_tls.ca_file",
            ),
            (
                &[("SLOTWAY_UPSTREAM_TLS_KEY_FILE", "/k.pem")][..],
                "upstream_tls.key_file",
            ),
            (
                &[("SLOTWAY_UPSTREAM_TLS_SERVER_NAME", "not a name")][..],
                "upstream_tls.server_name",
            ),
        ] {
            let err = load(pairs).unwrap_err();
            assert!(err.contains(key), "{pairs:?}: {err}");
        }
    }
}
