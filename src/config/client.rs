//! The `[client]` settings: limits applied to each client connection.

use serde::{Deserialize, Serialize};

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
