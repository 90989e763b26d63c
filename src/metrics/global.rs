//! Handles of the metrics whose labels are known in advance, created once after the recorder is
//! installed (a handle made before installation would be a no-op forever).

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::commands::CommandRegistry;
use super::names;

/// Why a request was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// `-TRYAGAIN` (multi-key request during a migration).
    TryAgain,
    /// `-CLUSTERDOWN`.
    ClusterDown,
    /// `-LOADING`.
    Loading,
    /// `-MASTERDOWN`.
    MasterDown,
    /// `-READONLY` (a write reached a demoted primary).
    ReadOnly,
    /// The node could not be reached or the connection broke before the request was written.
    Connection,
}

impl RetryReason {
    const ALL: [RetryReason; 6] = [
        Self::TryAgain,
        Self::ClusterDown,
        Self::Loading,
        Self::MasterDown,
        Self::ReadOnly,
        Self::Connection,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TryAgain => "tryagain",
            Self::ClusterDown => "clusterdown",
            Self::Loading => "loading",
            Self::MasterDown => "masterdown",
            Self::ReadOnly => "readonly",
            Self::Connection => "connection",
        }
    }
}

/// Pre-registered handles.
#[derive(Debug)]
pub struct Global {
    /// `slotway_client_connections`.
    pub client_connections: Gauge,
    /// `slotway_client_connections_accepted_total`.
    pub accepted: Counter,
    /// `slotway_client_connections_rejected_total{reason="max_clients"}`.
    pub rejected_max_clients: Counter,
    /// `slotway_redirects_total{kind="moved"}`.
    pub moved: Counter,
    /// `slotway_redirects_total{kind="ask"}`.
    pub ask: Counter,
    retries: [Counter; 6],
    /// `slotway_topology_refreshes_total{result="ok"}`.
    pub refresh_ok: Counter,
    /// `slotway_topology_refreshes_total{result="error"}`.
    pub refresh_error: Counter,
    /// `slotway_topology_refresh_duration_seconds`.
    pub refresh_duration: Histogram,
    /// `slotway_topology_changes_total`.
    pub topology_changes: Counter,
    /// `slotway_failovers_total`.
    pub failovers: Counter,
    /// `slotway_slot_map_age_seconds`.
    pub slot_map_age: Gauge,
    /// `slotway_slots_covered`.
    pub slots_covered: Gauge,
    /// `slotway_ready`.
    pub ready: Gauge,
    /// Per-command handles.
    pub commands: CommandRegistry,
}

impl Global {
    /// The `slotway_retries_total` counter for `reason`.
    pub fn retry(&self, reason: RetryReason) -> &Counter {
        &self.retries[reason as usize]
    }
}

/// The process-wide handles (installs the recorder first if needed).
pub fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        super::install();
        let g = Global {
            client_connections: gauge!(names::CLIENT_CONNECTIONS),
            accepted: counter!(names::CLIENT_ACCEPTED),
            rejected_max_clients: counter!(names::CLIENT_REJECTED, "reason" => "max_clients"),
            moved: counter!(names::REDIRECTS, "kind" => "moved"),
            ask: counter!(names::REDIRECTS, "kind" => "ask"),
            retries: RetryReason::ALL.map(|r| counter!(names::RETRIES, "reason" => r.label())),
            refresh_ok: counter!(names::TOPOLOGY_REFRESHES, "result" => "ok"),
            refresh_error: counter!(names::TOPOLOGY_REFRESHES, "result" => "error"),
            refresh_duration: histogram!(names::TOPOLOGY_REFRESH_DURATION),
            topology_changes: counter!(names::TOPOLOGY_CHANGES),
            failovers: counter!(names::FAILOVERS),
            slot_map_age: gauge!(names::SLOT_MAP_AGE),
            slots_covered: gauge!(names::SLOTS_COVERED),
            ready: gauge!(names::READY),
            commands: CommandRegistry::new(),
        };
        // Touch every counter so its series exists (at 0) before the first event: dashboards
        // and alerts see a value instead of "no data".
        for c in [
            &g.accepted,
            &g.rejected_max_clients,
            &g.moved,
            &g.ask,
            &g.refresh_ok,
            &g.refresh_error,
            &g.topology_changes,
            &g.failovers,
        ]
        .into_iter()
        .chain(g.retries.iter())
        {
            c.increment(0);
        }
        g.client_connections.increment(0.0);
        for (name, label, values) in OTHER_SERIES {
            match label {
                None => counter!(*name).increment(0),
                Some(label) => {
                    for v in *values {
                        counter!(*name, *label => *v).increment(0);
                    }
                }
            }
        }
        g
    })
}

/// Counters other modules emit by name on rare events (limits, security), registered at 0 so
/// `/metrics` lists them from the start: name, label, the label's values.
const OTHER_SERIES: &[(&str, Option<&str>, &[&str])] = &[
    ("slotway_auth_failures_total", None, &[]),
    ("slotway_backend_queue_full_total", None, &[]),
    ("slotway_client_inflight_limit_total", None, &[]),
    (
        "slotway_client_disconnects_total",
        Some("reason"),
        &["idle_timeout", "output_buffer_limit", "protocol_error"],
    ),
    (
        "slotway_client_protocol_errors_total",
        Some("error"),
        &[
            "invalid_multibulk_length",
            "invalid_bulk_length",
            "expected_bulk",
            "unbalanced_quotes",
            "inline_too_big",
            "header_too_big",
            "other",
        ],
    ),
    (
        "slotway_commands_denied_total",
        Some("reason"),
        &["noauth", "policy", "acl", "scripts"],
    ),
    (
        crate::tls::HANDSHAKE_FAILURES,
        Some("side"),
        &["client", "upstream"],
    ),
    (crate::tls::RELOADS, Some("result"), &["ok", "error"]),
];
