//! The `[tls]` and `[upstream_tls]` sections: defined by `crate::tls` (which reads the files
//! they name) and re-exported here, so the config file format stays in one place.

pub use crate::tls::{TlsConfig, UpstreamTlsConfig};

use super::ConfigError;

impl From<crate::tls::InvalidSetting> for ConfigError {
    fn from(e: crate::tls::InvalidSetting) -> Self {
        ConfigError::Invalid {
            key: e.key,
            reason: e.reason,
        }
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
