//! The `[backend]` settings: the proxy's connections to each Redis node.

use serde::{Deserialize, Serialize};

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
