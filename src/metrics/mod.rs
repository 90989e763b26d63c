//! Process-wide metrics: the Prometheus recorder (installed once, shared by every proxy in the
//! process), metric names, pre-registered handles, and the cheap per-session accumulators the
//! request path uses instead of looking metrics up by name and labels per request.
//!
//! - [`names`]: the metric names (a contract with `deploy/monitoring/`).
//! - [`global`]: handles of metrics with fixed labels, created once.
//! - [`commands`]: command name → small id → handles, so a session counts by array index.
//! - [`session`]: plain-integer accumulators of one client session, flushed once per batch.
//! - [`shard`]: per-thread atomics the sessions flush into, added up at scrape time.
//! - [`slots`]: per-slot counters (a fixed array of atomics) and their per-shard totals.
//! - [`histogram`]: latency histograms of atomic bucket counters (no per-sample queue).
//! - [`export`]: families rendered at scrape time (latency, slots, shards, hot keys) next to
//!   the recorder's.

pub(crate) mod commands;
pub(crate) mod export;
pub(crate) mod global;
pub(crate) mod histogram;
pub(crate) mod names;
pub(crate) mod session;
pub(crate) mod shard;
pub(crate) mod slots;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use commands::CommandId;
pub use global::{global, RetryReason};
pub use session::SessionMetrics;

use crate::config::MetricsConfig;
use crate::slowlog::SlowLog;
use crate::sync::Mutex;

/// How often histogram samples are folded into their buckets when nobody scrapes, so memory
/// stays bounded.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later calls return
/// the same handle. `None` when another recorder was installed first (metrics then go there).
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER.get_or_init(build_and_install).as_ref()
}

fn build_and_install() -> Option<PrometheusHandle> {
    // Request latencies are histogram::AtomicHistogram, rendered by `export`; only the
    // refresh duration (a few samples a minute) uses the recorder's histogram.
    let builder = PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Full(names::TOPOLOGY_REFRESH_DURATION.into()),
        names::REFRESH_BUCKETS,
    );
    let builder = match builder {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            return None;
        }
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!(
            "another metrics recorder is installed; /metrics shows only slotway's own families"
        );
        return None;
    }
    for (name, help) in names::HELP {
        metrics::describe_counter!(*name, *help);
    }
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("slotway-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_PERIOD);
            upkeep.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
    Some(handle)
}

/// What one proxy instance keeps for observability beyond the process-wide metrics.
#[derive(Debug)]
pub struct ProxyMetrics {
    /// The `[metrics]` settings.
    pub config: MetricsConfig,
    /// The proxy's slow log (answers `SLOWLOG`).
    pub slowlog: SlowLog,
    /// Per-shard request totals, folded from the slot counters on every topology change.
    pub shards: slots::ShardOps,
}

impl ProxyMetrics {
    /// Installs the recorder (once per process) and sets up this proxy's parts.
    pub fn new(config: MetricsConfig) -> Arc<Self> {
        install();
        global();
        Arc::new(Self {
            slowlog: SlowLog::new(config.slowlog_threshold_us, config.slowlog_max_len),
            shards: slots::ShardOps::default(),
            config,
        })
    }
}

/// The backend latency histograms, by node address.
type NodeHistograms = Mutex<BTreeMap<String, Arc<histogram::AtomicHistogram>>>;

fn node_histograms() -> &'static NodeHistograms {
    static NODES: OnceLock<NodeHistograms> = OnceLock::new();
    NODES.get_or_init(NodeHistograms::default)
}

/// The `slotway_backend_duration_seconds` histogram of `node` (created on first use, kept for
/// the life of the process like any metric series).
pub fn backend_histogram(node: &str) -> Arc<histogram::AtomicHistogram> {
    node_histograms()
        .lock()
        .entry(node.to_string())
        .or_insert_with(|| Arc::new(histogram::AtomicHistogram::new(names::LATENCY_BUCKETS)))
        .clone()
}

/// Every node's backend latency histogram, by address.
pub fn backend_histograms() -> Vec<(String, Arc<histogram::AtomicHistogram>)> {
    node_histograms()
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Records what the topology refresher reports: rounds, layout changes and failovers.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopologyMetrics;

impl crate::cluster::RefreshObserver for TopologyMetrics {
    fn round_finished(&self, ok: bool, took: Duration) {
        let g = global();
        if ok {
            g.refresh_ok.increment(1);
        } else {
            g.refresh_error.increment(1);
        }
        g.refresh_duration.record(took.as_secs_f64());
    }

    fn topology_changed(&self, topology: &crate::cluster::topology::Topology) {
        let g = global();
        g.topology_changes.increment(1);
        g.slots_covered.set(topology.assigned_slots() as f64);
    }

    fn failover(&self) {
        global().failovers.increment(1);
    }
}
