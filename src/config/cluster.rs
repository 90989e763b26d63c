//! The `[cluster]` settings: topology discovery and refresh, the nodes' login, where reads go and
//! durable writes.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::net::Secret;

/// Topology discovery and refresh settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Period of the background topology refresh (default 10000 ms).
    pub refresh_interval_ms: u64,
    /// Minimum gap between two on-demand refreshes (default 50 ms).
    pub refresh_min_interval_ms: u64,
    /// How long a request waits for a slot's new owner after a redirect or a lost
    /// connection before the client gets an error, and the longest wait for a refresh to
    /// confirm a redirect target the topology does not know yet (default 5000 ms).
    pub retry_deadline_ms: u64,
    /// Most MOVED/ASK hops one request may follow (default 5); past it the client gets a
    /// `-TRYAGAIN slotway: …` error that names no node.
    pub max_redirects: u32,
    /// Username for `AUTH` on every node; empty = default user (default empty).
    pub username: String,
    /// A file holding the username, instead of `username` (default empty).
    pub username_file: String,
    /// Password for `AUTH` on every node; empty = no AUTH (default empty).
    pub password: Secret,
    /// A file holding the password, instead of `password` (default empty).
    pub password_file: String,
    /// Where read-only commands go: `primary`, `prefer-replica` or `replica-round-robin`
    /// (default `primary`).
    pub read_policy: ReadPolicy,
    /// After every write, `WAIT` for replicas before acknowledging the client (default false).
    pub durable_writes: bool,
    /// Replicas that must confirm a durable write (default 1).
    pub durable_replicas: u32,
    /// How long a durable write waits for its replicas (default 500 ms).
    pub durable_timeout_ms: u64,
}

/// Where read-only commands are sent; spelled `primary`, `prefer-replica` or
/// `replica-round-robin` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadPolicy {
    /// Always the slot's primary.
    #[default]
    Primary,
    /// One of the slot's healthy replicas (the same one for a given client), else the primary.
    PreferReplica,
    /// The slot's healthy replicas in turn, else the primary.
    ReplicaRoundRobin,
}

impl std::str::FromStr for ReadPolicy {
    type Err = ConfigError;

    /// Parses the spellings the config file accepts (one list: serde's).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        use serde::de::IntoDeserializer;
        Self::deserialize(s.into_deserializer()).map_err(|e: serde::de::value::Error| {
            ConfigError::Invalid {
                key: "cluster.read_policy",
                reason: e.to_string(),
            }
        })
    }
}

impl ClusterConfig {
    /// The read policy (kept as a method so callers need not know it is a plain field now).
    pub fn read_policy(&self) -> ReadPolicy {
        self.read_policy
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            refresh_interval_ms: 10_000,
            refresh_min_interval_ms: 50,
            retry_deadline_ms: 5_000,
            max_redirects: 5,
            username: String::new(),
            username_file: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            read_policy: ReadPolicy::Primary,
            durable_writes: false,
            durable_replicas: 1,
            durable_timeout_ms: 500,
        }
    }
}
