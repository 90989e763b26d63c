//! The `[commands]` settings: how cluster-wide and cluster-mode commands are answered.

use serde::{Deserialize, Serialize};

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
