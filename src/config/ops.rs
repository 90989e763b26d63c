//! The `[admin]`, `[log]`, `[metrics]` and `[runtime]` settings: how the proxy is run and watched.

use serde::{Deserialize, Serialize};

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

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (default `text`).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `slotway=debug` (default `info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
