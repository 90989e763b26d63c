//! Proxy settings: the TOML schema, its defaults, and `SLOTWAY_*` environment overrides.
//!
//! Every setting has a default, may be given in the config file, and may be overridden by an
//! environment variable named `SLOTWAY_<SECTION>_<KEY>` (upper case), e.g.
//! `SLOTWAY_BACKEND_CONNECTIONS_PER_NODE=4`; top-level keys drop the section (`SLOTWAY_LISTEN`).
//! Lists are comma-separated in the environment. Durations are integers with a unit suffix in the
//! key name (`_ms`), so a file never needs a duration syntax.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod access;
mod backend;
mod client;
mod cluster;
mod commands;
mod env;
mod ops;
mod tls;
pub use access::{AuthConfig, PolicyConfig, ScriptAccess, UserConfig, DEFAULT_DENY};
pub use backend::BackendConfig;
pub use client::ClientConfig;
pub use cluster::{ClusterConfig, ReadPolicy};
pub use commands::CommandsConfig;
pub use ops::{AdminConfig, LogConfig, LogFormat, MetricsConfig, RuntimeConfig};
pub use tls::{TlsConfig, UpstreamTlsConfig};

use crate::net::NodeAddr;
use env::{apply_env, merge, ENV_PREFIX};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file (or the merged settings) is not valid TOML for this schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// An environment variable holds a value of the wrong type.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting's key, as written in TOML (`section.key`).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the proxy needs to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the RESP listener binds (default `127.0.0.1:6379`).
    pub listen: String,
    /// Cluster nodes to learn the topology from, as `host:port` (host names allowed).
    pub seeds: Vec<String>,
    /// Admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Topology discovery and refresh.
    pub cluster: ClusterConfig,
    /// Connections from the proxy to the Redis nodes.
    pub backend: BackendConfig,
    /// Limits applied to each client connection.
    pub client: ClientConfig,
    /// Client authentication (passwords, users).
    pub auth: AuthConfig,
    /// Commands refused for every client.
    pub policy: PolicyConfig,
    /// How cluster-wide and cluster-mode commands are answered.
    pub commands: CommandsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Async runtime.
    pub runtime: RuntimeConfig,
    /// Metrics, hot keys and the proxy's slow log.
    pub metrics: MetricsConfig,
    /// TLS on the client listener.
    pub tls: TlsConfig,
    /// TLS on the connections to the nodes.
    pub upstream_tls: UpstreamTlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6379".into(),
            seeds: Vec::new(),
            admin: AdminConfig::default(),
            cluster: ClusterConfig::default(),
            backend: BackendConfig::default(),
            client: ClientConfig::default(),
            auth: AuthConfig::default(),
            policy: PolicyConfig::default(),
            commands: CommandsConfig::default(),
            log: LogConfig::default(),
            runtime: RuntimeConfig::default(),
            metrics: MetricsConfig::default(),
            tls: TlsConfig::default(),
            upstream_tls: UpstreamTlsConfig::default(),
        }
    }
}

/// Milliseconds to a `Duration`.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Config {
    /// Loads defaults, then the TOML file (if any), then `SLOTWAY_*` variables from `env`.
    /// User rules and policy entries are checked by `security::access::validate`, which owns
    /// their grammar (the binary runs it right after this).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            // Parse the file alone first so unknown keys are reported against the file.
            let _: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))?;
            merge(&mut value, file_value);
        }
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        apply_env(&mut value, &vars)?;
        let cfg: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, v: u64) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        positive(
            "backend.connections_per_node",
            self.backend.connections_per_node as u64,
        )?;
        positive("backend.queue_depth", self.backend.queue_depth as u64)?;
        positive(
            "backend.max_dedicated_per_node",
            self.backend.max_dedicated_per_node as u64,
        )?;
        positive(
            "backend.max_transaction_per_node",
            self.backend.max_transaction_per_node as u64,
        )?;
        positive(
            "backend.max_subscriber_per_node",
            self.backend.max_subscriber_per_node as u64,
        )?;
        positive(
            "client.pubsub_buffer_bytes",
            self.client.pubsub_buffer_bytes as u64,
        )?;
        positive(
            "backend.connect_timeout_ms",
            self.backend.connect_timeout_ms,
        )?;
        positive(
            "backend.command_timeout_ms",
            self.backend.command_timeout_ms,
        )?;
        positive("client.max_connections", self.client.max_connections as u64)?;
        positive("client.max_inflight", self.client.max_inflight as u64)?;
        positive(
            "client.max_transaction_commands",
            self.client.max_transaction_commands as u64,
        )?;
        positive(
            "client.max_transaction_bytes",
            self.client.max_transaction_bytes as u64,
        )?;
        positive(
            "client.read_buffer_bytes",
            self.client.read_buffer_bytes as u64,
        )?;
        positive(
            "cluster.refresh_interval_ms",
            self.cluster.refresh_interval_ms,
        )?;
        if self.backend.reconnect_backoff_min_ms > self.backend.reconnect_backoff_max_ms {
            return Err(ConfigError::Invalid {
                key: "backend.reconnect_backoff_min_ms",
                reason: "must not exceed backend.reconnect_backoff_max_ms".into(),
            });
        }
        if self.cluster.durable_writes {
            positive(
                "cluster.durable_replicas",
                self.cluster.durable_replicas.into(),
            )?;
        }
        for (key, inline, file) in [
            (
                "cluster.password_file",
                !self.cluster.password.is_empty(),
                &self.cluster.password_file,
            ),
            (
                "cluster.username_file",
                !self.cluster.username.is_empty(),
                &self.cluster.username_file,
            ),
        ] {
            if inline && !file.is_empty() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "set either the value or the file, not both".into(),
                });
            }
        }
        self.auth.validate()?;
        self.tls.validate()?;
        self.upstream_tls.validate()?;
        let announce = &self.commands.announce_address;
        if !announce.is_empty() {
            announce
                .parse::<NodeAddr>()
                .map_err(|e| ConfigError::Invalid {
                    key: "commands.announce_address",
                    reason: format!("expected host:port: {e}"),
                })?;
        }
        for seed in &self.seeds {
            seed.parse::<NodeAddr>().map_err(|e| ConfigError::Invalid {
                key: "seeds",
                reason: format!("expected host:port: {e}"),
            })?;
        }
        if self.metrics.hot_keys > crate::hotkeys::MAX_K {
            return Err(ConfigError::Invalid {
                key: "metrics.hot_keys",
                reason: format!("must be at most {}", crate::hotkeys::MAX_K),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: format!("not a tracing filter ({e}): {:?}", self.log.level),
            });
        }
        Ok(())
    }

    /// Every setting's key as written in TOML (`section.key`), for tools that check configs.
    pub fn keys() -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(toml::Value::Table(t)) = toml::Value::try_from(Config::default()) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(inner) => {
                        out.extend(inner.keys().map(|ik| format!("{k}.{ik}")));
                    }
                    _ => out.push(k),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
