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
mod tls;
pub use access::{AuthConfig, PolicyConfig, ScriptAccess, UserConfig};
pub use tls::{TlsConfig, UpstreamTlsConfig};

use crate::net::{NodeAddr, Secret};

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

/// Metrics, hot-key and slow-log settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Record per-request metrics at all; off leaves only connection and topology metrics
    /// (default true).
    pub enabled: bool,
    /// Export `slotway_slot_ops_total{slot}` for every slot that saw traffic (default true).
    pub per_slot: bool,
    /// How many of the hottest keys `slotway_hot_key_ops` reports; 0 turns the sketch off
    /// (default 10, at most 100).
    pub hot_keys: usize,
    /// Report hot keys by a hash of their name instead of the name (default false).
    pub hash_key_names: bool,
    /// Commands slower than this (microseconds) enter the slow log; 0 logs every command, a
    /// negative value none (default 10000).
    pub slowlog_threshold_us: i64,
    /// Entries the slow log keeps; the oldest are dropped (default 128).
    pub slowlog_max_len: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_slot: true,
            hot_keys: 10,
            hash_key_names: false,
            slowlog_threshold_us: 10_000,
            slowlog_max_len: 128,
        }
    }
}

/// Async runtime settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; 0 = one per available core (default 0); 1 runs tokio's current-thread
    /// scheduler, which costs less per request than a one-worker multi-thread pool.
    pub worker_threads: usize,
}

/// Admin HTTP endpoint settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP server; empty disables it, a bare port (`9090`) binds
    /// 127.0.0.1 (default empty).
    pub listen: String,
}

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
    pub read_policy: String,
    /// After every write, `WAIT` for replicas before acknowledging the client (default false).
    pub durable_writes: bool,
    /// Replicas that must confirm a durable write (default 1).
    pub durable_replicas: u32,
    /// How long a durable write waits for its replicas (default 500 ms).
    pub durable_timeout_ms: u64,
}

/// Where read-only commands are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Always the slot's primary.
    Primary,
    /// One of the slot's healthy replicas (the same one for a given client), else the primary.
    PreferReplica,
    /// The slot's healthy replicas in turn, else the primary.
    ReplicaRoundRobin,
}

impl ClusterConfig {
    /// The parsed read policy (validated at load).
    pub fn read_policy(&self) -> ReadPolicy {
        match self.read_policy.as_str() {
            "prefer-replica" => ReadPolicy::PreferReplica,
            "replica-round-robin" => ReadPolicy::ReplicaRoundRobin,
            _ => ReadPolicy::Primary,
        }
    }
}

/// Settings of the connections from the proxy to each Redis node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Multiplexed connections per node (default 2).
    pub connections_per_node: usize,
    /// Requests that may wait to be written on one connection (default 4096).
    pub queue_depth: usize,
    /// TCP connect timeout (default 1000 ms).
    pub connect_timeout_ms: u64,
    /// A reply slower than this marks the connection dead (default 5000 ms).
    pub command_timeout_ms: u64,
    /// First reconnect delay; doubled per failure up to the maximum (default 50 ms).
    pub reconnect_backoff_min_ms: u64,
    /// Cap of the reconnect delay (default 2000 ms).
    pub reconnect_backoff_max_ms: u64,
    /// Largest reply accepted from a node before the connection is dropped (default 1 GiB).
    pub max_reply_bytes: usize,
    /// Dedicated connections per node for blocking commands (BLPOP, XREAD … BLOCK …); a
    /// client needing one more gets an error (default 64). Transactions and subscriptions
    /// have budgets of their own, so blocked clients cannot starve them.
    pub max_dedicated_per_node: usize,
    /// Dedicated connections per node for WATCH/MULTI/EXEC and RESP3 scripts; one more gets
    /// an error (default 64).
    pub max_transaction_per_node: usize,
    /// Dedicated connections per node carrying subscriptions (one per subscribing client and
    /// node); a SUBSCRIBE needing one more gets an error (default 64).
    pub max_subscriber_per_node: usize,
}

impl BackendConfig {
    /// The per-node caps of dedicated connections, by kind.
    pub fn budgets(&self) -> crate::backend::Budgets {
        crate::backend::Budgets {
            blocking: self.max_dedicated_per_node,
            transaction: self.max_transaction_per_node,
            subscriber: self.max_subscriber_per_node,
        }
    }
}

/// Per-client limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Most concurrent client connections (default 10000).
    pub max_connections: usize,
    /// Most requests of one client awaiting replies; reading pauses at the cap (default 1024).
    pub max_inflight: usize,
    /// Bytes of one client's requests awaiting replies past which reading pauses; a single
    /// larger request is still served. 0 = no limit (default 64 MiB).
    pub max_inflight_bytes: usize,
    /// Largest bulk string in a request (default 512 MiB, as Redis).
    pub max_bulk_bytes: usize,
    /// Most elements in one request (default 1048576, as Redis).
    pub max_multibulk_len: usize,
    /// Longest inline command line (default 65536, as Redis).
    pub max_inline_bytes: usize,
    /// Read chunk size (default 16384); buffers exist only while a client has data.
    pub read_buffer_bytes: usize,
    /// Replies buffered for a client that does not read before it is disconnected;
    /// 0 = no limit (default 64 MiB).
    pub output_buffer_limit_bytes: usize,
    /// Pub/Sub messages buffered for a subscriber that does not read before it is
    /// disconnected (default 32 MiB, Redis's pubsub hard limit).
    pub pubsub_buffer_bytes: usize,
    /// Close clients idle this long; 0 = never (default 0).
    pub idle_timeout_ms: u64,
    /// On SIGTERM, how long clients get to finish requests already sent (default 10000 ms).
    pub drain_grace_ms: u64,
    /// Most commands queued in one MULTI; past it the command is refused and EXEC answers
    /// EXECABORT (default 100000).
    pub max_transaction_commands: usize,
    /// Most request bytes queued in one MULTI; past it the command is refused, the queue is
    /// released and EXEC answers EXECABORT (default 64 MiB).
    pub max_transaction_bytes: usize,
}

/// How the proxy answers commands that span the cluster or describe it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// Answer `CLUSTER INFO/SLOTS/SHARDS/NODES/MYID` as a one-node cluster owning every slot at
    /// the proxy's own address, so cluster-mode clients work through it (default true).
    pub cluster_emulation: bool,
    /// `host:port` the emulated cluster announces; empty = the address each client connected
    /// to (default empty).
    pub announce_address: String,
    /// Let clients run `CONFIG SET` / `CONFIG REWRITE` on every node (default false: refused).
    pub allow_config_set: bool,
    /// Script bodies remembered (least recently used dropped first) to answer `NOSCRIPT` by
    /// loading the script on the node; 0 disables it (default 1024).
    pub script_cache_entries: usize,
    /// Bytes of script bodies remembered in all; a larger body is not remembered, 0 disables
    /// the cache (default 64 MiB).
    pub script_cache_bytes: usize,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (default `text`).
    pub format: String,
    /// A tracing filter such as `info` or `slotway=debug` (default `info`).
    pub level: String,
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

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            cluster_emulation: true,
            announce_address: String::new(),
            allow_config_set: false,
            script_cache_entries: 1024,
            script_cache_bytes: 64 << 20,
        }
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
            read_policy: "primary".into(),
            durable_writes: false,
            durable_replicas: 1,
            durable_timeout_ms: 500,
        }
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            connections_per_node: 2,
            queue_depth: 4096,
            connect_timeout_ms: 1_000,
            command_timeout_ms: 5_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 2_000,
            max_reply_bytes: 1 << 30,
            max_dedicated_per_node: 64,
            max_transaction_per_node: 64,
            max_subscriber_per_node: 64,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_inflight: 1024,
            max_inflight_bytes: 64 << 20,
            max_bulk_bytes: 512 << 20,
            max_multibulk_len: 1 << 20,
            max_inline_bytes: 64 << 10,
            read_buffer_bytes: 16 << 10,
            output_buffer_limit_bytes: 64 << 20,
            pubsub_buffer_bytes: 32 << 20,
            idle_timeout_ms: 0,
            drain_grace_ms: 10_000,
            max_transaction_commands: 100_000,
            max_transaction_bytes: 64 << 20,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Milliseconds to a `Duration`.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Config {
    /// Loads defaults, then the TOML file (if any), then `SLOTWAY_*` variables from `env`.
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
        if !matches!(
            self.cluster.read_policy.as_str(),
            "primary" | "prefer-replica" | "replica-round-robin"
        ) {
            return Err(ConfigError::Invalid {
                key: "cluster.read_policy",
                reason: format!(
                    "expected \"primary\", \"prefer-replica\" or \"replica-round-robin\", got {:?}",
                    self.cluster.read_policy
                ),
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
        self.policy.validate()?;
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
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "log.format",
                reason: format!("expected \"text\" or \"json\", got {:?}", self.log.format),
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

const ENV_PREFIX: &str = "SLOTWAY_";

/// Overlays `top` onto `base`, table by table.
fn merge(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// Applies `SLOTWAY_*` overrides to every leaf of the defaults-plus-file value.
fn apply_env(value: &mut toml::Value, vars: &[(String, String)]) -> Result<(), ConfigError> {
    let toml::Value::Table(root) = value else {
        return Ok(());
    };
    for (var, raw) in vars {
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let target = find_leaf(root, &name);
        let Some(slot) = target else {
            // Unknown SLOTWAY_ variables are ignored so that wrappers may define their own.
            continue;
        };
        *slot = parse_env_value(slot, raw).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Finds the leaf whose `section_key` (or top-level key) spells `name`.
fn find_leaf<'a>(root: &'a mut toml::Table, name: &str) -> Option<&'a mut toml::Value> {
    if root.get(name).is_some_and(|v| !v.is_table()) {
        return root.get_mut(name);
    }
    let (section, key) = root.iter().find_map(|(section, v)| {
        let rest = name.strip_prefix(section.as_str())?.strip_prefix('_')?;
        v.as_table()?.get(rest)?;
        Some((section.clone(), rest.to_string()))
    })?;
    root.get_mut(&section)?.as_table_mut()?.get_mut(&key)
}

/// Parses an environment value with the type the default has.
fn parse_env_value(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match current {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("expected a boolean, got {raw:?}")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = Config::load(None, Vec::new()).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn env_overrides_nested_and_top_level_keys() {
        let cfg = Config::load(
            None,
            env(&[
                ("SLOTWAY_LISTEN", "0.0.0.0:6380"),
                ("SLOTWAY_SEEDS", "a:1, b:2"),
                ("SLOTWAY_BACKEND_CONNECTIONS_PER_NODE", "4"),
                ("SLOTWAY_ADMIN_LISTEN", "127.0.0.1:9000"),
                ("SLOTWAY_UNRELATED", "x"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:6380");
        assert_eq!(cfg.seeds, vec!["a:1", "b:2"]);
        assert_eq!(cfg.backend.connections_per_node, 4);
        assert_eq!(cfg.admin.listen, "127.0.0.1:9000");
        for bad in ["a:1, :2", "a:1,b", "a:0"] {
            let err = Config::load(None, env(&[("SLOTWAY_SEEDS", bad)])).unwrap_err();
            assert!(err.to_string().contains("seeds"), "{bad}: {err}");
        }
    }

    #[test]
    fn env_type_errors_name_the_variable() {
        let err = Config::load(None, env(&[("SLOTWAY_CLIENT_MAX_INFLIGHT", "lots")])).unwrap_err();
        assert!(
            err.to_string().contains("SLOTWAY_CLIENT_MAX_INFLIGHT"),
            "{err}"
        );
    }

    #[test]
    fn file_then_env_precedence_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[backend]\nqueue_depth = 7\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path), env(&[("SLOTWAY_LISTEN", "127.0.0.1:2")])).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert_eq!(cfg.backend.queue_depth, 7);
        assert_eq!(cfg.backend.connections_per_node, 2);

        std::fs::write(&path, "[backend]\nqueue_dept = 7\n").unwrap();
        let err = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("queue_dept"), "{err}");
    }

    #[test]
    fn validation_rejects_zero_and_bad_format() {
        let err = Config::load(None, env(&[("SLOTWAY_BACKEND_QUEUE_DEPTH", "0")])).unwrap_err();
        assert!(err.to_string().contains("backend.queue_depth"));
        let err = Config::load(None, env(&[("SLOTWAY_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("log.format"));
        let err = Config::load(None, env(&[("SLOTWAY_CLUSTER_READ_POLICY", "any")])).unwrap_err();
        assert!(err.to_string().contains("cluster.read_policy"));
        let cfg = Config::load(
            None,
            env(&[("SLOTWAY_CLUSTER_READ_POLICY", "prefer-replica")]),
        )
        .unwrap();
        assert_eq!(cfg.cluster.read_policy(), ReadPolicy::PreferReplica);
    }

    #[test]
    fn commands_settings() {
        let cfg = Config::default();
        assert!(cfg.commands.cluster_emulation);
        assert!(!cfg.commands.allow_config_set);
        assert_eq!(cfg.commands.announce_address, "");
        assert_eq!(cfg.commands.script_cache_entries, 1024);
        assert_eq!(cfg.commands.script_cache_bytes, 64 << 20);
        let cfg = Config::load(
            None,
            env(&[
                ("SLOTWAY_COMMANDS_CLUSTER_EMULATION", "false"),
                ("SLOTWAY_COMMANDS_ALLOW_CONFIG_SET", "true"),
                ("SLOTWAY_COMMANDS_ANNOUNCE_ADDRESS", "proxy.example:6379"),
                ("SLOTWAY_COMMANDS_SCRIPT_CACHE_ENTRIES", "0"),
                ("SLOTWAY_COMMANDS_SCRIPT_CACHE_BYTES", "1048576"),
            ]),
        )
        .unwrap();
        assert!(!cfg.commands.cluster_emulation);
        assert!(cfg.commands.allow_config_set);
        assert_eq!(cfg.commands.announce_address, "proxy.example:6379");
        assert_eq!(cfg.commands.script_cache_entries, 0);
        assert_eq!(cfg.commands.script_cache_bytes, 1 << 20);
        for bad in ["nope", ":6379", "host:0", "host:port", "a b:1"] {
            let err =
                Config::load(None, env(&[("SLOTWAY_COMMANDS_ANNOUNCE_ADDRESS", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("commands.announce_address"),
                "{bad}: {err}"
            );
        }
        assert!(Config::keys().contains(&"commands.cluster_emulation".to_string()));
    }

    #[test]
    fn example_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["local.toml", "kubernetes.toml"] {
            let cfg = Config::load(Some(&dir.join(name)), Vec::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(cfg.commands.cluster_emulation, "{name}");
            assert!(!cfg.commands.allow_config_set, "{name}");
        }
    }

    #[test]
    fn keys_lists_every_setting() {
        let keys = Config::keys();
        assert!(keys.contains(&"listen".to_string()));
        assert!(keys.contains(&"backend.queue_depth".to_string()));
        assert!(keys.contains(&"admin.listen".to_string()));
        assert!(keys.contains(&"metrics.slowlog_threshold_us".to_string()));
        for k in [
            "auth.password",
            "auth.password_file",
            "auth.users",
            "policy.deny",
            "policy.allow",
            "cluster.password_file",
            "cluster.username_file",
        ] {
            assert!(keys.contains(&k.to_string()), "{k}");
        }
    }

    #[test]
    fn metrics_settings_from_env_and_limits() {
        let cfg = Config::load(
            None,
            env(&[
                ("SLOTWAY_METRICS_PER_SLOT", "false"),
                ("SLOTWAY_METRICS_SLOWLOG_THRESHOLD_US", "-1"),
            ]),
        )
        .unwrap();
        assert!(!cfg.metrics.per_slot);
        assert_eq!(cfg.metrics.slowlog_threshold_us, -1);
        let err = Config::load(None, env(&[("SLOTWAY_METRICS_HOT_KEYS", "1000")])).unwrap_err();
        assert!(err.to_string().contains("metrics.hot_keys"), "{err}");
    }
}
