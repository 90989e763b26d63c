//! Metric names and their help texts: the contract the dashboards and alerts in
//! `deploy/monitoring/` rely on (tests/it/observability.rs checks it against a live `/metrics`).

/// Current client connections (gauge).
pub const CLIENT_CONNECTIONS: &str = "slotway_client_connections";
/// Client connections accepted since start.
pub const CLIENT_ACCEPTED: &str = "slotway_client_connections_accepted_total";
/// Client connections refused, by `reason`.
pub const CLIENT_REJECTED: &str = "slotway_client_connections_rejected_total";
/// Commands answered, by `command` and `outcome` (`ok` | `error`).
pub const COMMANDS: &str = "slotway_commands_total";
/// End-to-end command latency by `command` (histogram).
pub const COMMAND_DURATION: &str = "slotway_command_duration_seconds";
/// Time from writing a request to a node until its reply, by `node` (histogram).
pub const BACKEND_DURATION: &str = "slotway_backend_duration_seconds";
/// Bytes read from clients.
pub const BYTES_RECEIVED: &str = "slotway_client_bytes_received_total";
/// Bytes written to clients.
pub const BYTES_SENT: &str = "slotway_client_bytes_sent_total";
/// Client requests awaiting their reply (gauge).
pub const INFLIGHT: &str = "slotway_inflight_requests";
/// Established connections to each `node` (gauge).
pub const BACKEND_CONNECTIONS: &str = "slotway_backend_connections";
/// Redirects followed, by `kind` (`moved` | `ask`).
pub const REDIRECTS: &str = "slotway_redirects_total";
/// Requests re-sent, by `reason`.
pub const RETRIES: &str = "slotway_retries_total";
/// Topology refresh rounds, by `result` (`ok` | `error`).
pub const TOPOLOGY_REFRESHES: &str = "slotway_topology_refreshes_total";
/// Duration of topology refresh rounds (histogram).
pub const TOPOLOGY_REFRESH_DURATION: &str = "slotway_topology_refresh_duration_seconds";
/// Published snapshots whose layout changed.
pub const TOPOLOGY_CHANGES: &str = "slotway_topology_changes_total";
/// Replicas seen taking over as primary.
pub const FAILOVERS: &str = "slotway_failovers_total";
/// Seconds since the slot map was last confirmed by a node (gauge).
pub const SLOT_MAP_AGE: &str = "slotway_slot_map_age_seconds";
/// Slots with an owner in the slot map (gauge).
pub const SLOTS_COVERED: &str = "slotway_slots_covered";
/// 1 when `/readyz` would answer 200, else 0 (gauge).
pub const READY: &str = "slotway_ready";
/// Keyed requests by `shard` (shards numbered by their lowest slot).
pub const SHARD_OPS: &str = "slotway_shard_ops_total";
/// Keyed requests by `slot`, only for slots that saw traffic.
pub const SLOT_OPS: &str = "slotway_slot_ops_total";
/// Estimated recent requests of the hottest keys, by `rank` and `key` (gauge).
pub const HOT_KEY_OPS: &str = "slotway_hot_key_ops";
/// Commands the policy denies that the upstream Redis user may still run, so scripts can (gauge).
pub const UPSTREAM_ACL_GAPS: &str = "slotway_upstream_acl_gaps";

/// Buckets of the request latency histograms: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets of the topology refresh histogram: 1 ms to 10 s.
pub const REFRESH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the recorder holds, with its help text (the rest are rendered by
/// [`super::export`] with their own).
pub(crate) const HELP: &[(&str, &str)] = &[
    (CLIENT_CONNECTIONS, "Current client connections."),
    (CLIENT_ACCEPTED, "Client connections accepted since start."),
    (CLIENT_REJECTED, "Client connections refused, by reason."),
    (BACKEND_CONNECTIONS, "Established connections to each node."),
    (REDIRECTS, "MOVED and ASK redirects followed, by kind."),
    (
        RETRIES,
        "Requests re-sent after a transient error or a lost connection, by reason.",
    ),
    (TOPOLOGY_REFRESHES, "Topology refresh rounds, by result."),
    (
        TOPOLOGY_REFRESH_DURATION,
        "Seconds per topology refresh round.",
    ),
    (
        TOPOLOGY_CHANGES,
        "Topology snapshots published with a changed layout.",
    ),
    (FAILOVERS, "Replicas seen taking over as primary."),
    (
        SLOT_MAP_AGE,
        "Seconds since a node last confirmed the slot map.",
    ),
    (SLOTS_COVERED, "Hash slots with an owner in the slot map."),
    (
        READY,
        "1 when the proxy is ready (full slot map, every primary connected), else 0.",
    ),
];
