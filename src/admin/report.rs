//! The `/cluster` report: every shard with its nodes, slot ranges, key count (DBSIZE on the
//! primary) and requests since start, plus readiness and the hottest slots and keys. The same
//! types parse it back in `slotway status`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::fetch::FetchOptions;
use crate::cluster::topology::{Health, Topology, SLOTS};
use crate::hotkeys;
use crate::metrics::{slots, ProxyMetrics};

use super::ClusterView;

/// How many hot slots the report lists.
const HOT_SLOTS: usize = 10;

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterReport {
    /// True when `/readyz` answers 200.
    pub ready: bool,
    /// Why the proxy is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Slots with an owner.
    pub slots_covered: usize,
    /// Seconds since a node last confirmed the slot map (absent before the first map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_map_age_seconds: Option<f64>,
    /// Keyed requests since start, over all shards.
    pub ops: u64,
    /// Shards ordered by their lowest slot.
    pub shards: Vec<ShardReport>,
    /// The busiest slots since start.
    pub hot_slots: Vec<HotSlot>,
    /// The hottest keys recently (empty when the sketch is off).
    pub hot_keys: Vec<HotKeyReport>,
}

/// One shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardReport {
    /// The shard's number (by lowest slot), as in `slotway_shard_ops_total{shard}`.
    pub shard: usize,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    /// Number of slots.
    pub slot_count: usize,
    /// Keys on the primary (`DBSIZE`); absent when it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Why `keys` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_error: Option<String>,
    /// Keyed requests this proxy sent to the shard since start.
    pub ops: u64,
    /// The primary.
    pub primary: NodeReport,
    /// The replicas.
    pub replicas: Vec<NodeReport>,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeReport {
    /// Cluster node ID.
    pub id: String,
    /// `ip:port` the proxy connects to.
    pub address: String,
    /// `primary` or `replica`.
    pub role: String,
    /// The link as the cluster reports it: `up`, `loading` or `down`.
    pub link: String,
    /// For primaries: whether the proxy has a live connection to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
}

/// A busy slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HotSlot {
    /// The slot.
    pub slot: u16,
    /// Keyed requests since start.
    pub ops: u64,
}

/// A hot key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HotKeyReport {
    /// The key (or its hash when `metrics.hash_key_names` is on).
    pub key: String,
    /// Estimated recent requests.
    pub ops: u64,
}

/// Why the proxy is not ready, or `Ok` when its slot map covers every slot and every primary
/// has a live connection.
pub fn readiness<V: ClusterView + ?Sized>(view: &V) -> Result<(), String> {
    let Some(t) = view.routing() else {
        return Err("no cluster topology yet: no seed node has answered".into());
    };
    let topo = &t.topology;
    if !topo.covers_all_slots() {
        return Err(format!(
            "slot map covers {} of {SLOTS} slots",
            topo.assigned_slots()
        ));
    }
    let numbers = slots::shard_numbers(topo);
    for (i, link) in t.primaries.iter().enumerate() {
        // A failed primary whose slots a replica took over stays listed, serving nothing,
        // until it comes back as a replica: only primaries that serve slots matter.
        let serves = topo.shards.get(i).is_some_and(|s| !s.slots.is_empty());
        if !serves || link.connected {
            continue;
        }
        let id = topo
            .shards
            .get(i)
            .and_then(|s| topo.nodes.get(s.primary))
            .map_or("?", |n| n.id.as_str());
        return Err(format!(
            "primary {id} at {} (shard {}) is not connected",
            link.addr,
            numbers.get(i).copied().unwrap_or(i)
        ));
    }
    Ok(())
}

/// Builds the report, asking every primary for DBSIZE concurrently.
pub async fn build(
    view: &dyn ClusterView,
    m: &ProxyMetrics,
    topology: Option<Arc<Topology>>,
    opts: &FetchOptions,
) -> ClusterReport {
    let ready = readiness(view);
    let hot_keys = if m.config.enabled && m.config.hot_keys > 0 {
        hotkeys::top(m.config.hot_keys)
            .into_iter()
            .map(|h| HotKeyReport {
                key: hotkeys::display_key(&h.key, m.config.hash_key_names),
                ops: h.count,
            })
            .collect()
    } else {
        Vec::new()
    };
    let hot_slots = slots::hottest_slots(HOT_SLOTS)
        .into_iter()
        .map(|(slot, ops)| HotSlot { slot, ops })
        .collect();
    let mut report = ClusterReport {
        ready: ready.is_ok(),
        reason: ready.err(),
        slots_covered: 0,
        slot_map_age_seconds: None,
        ops: 0,
        shards: Vec::new(),
        hot_slots,
        hot_keys,
    };
    let Some(t) = topology else {
        return report;
    };
    report.slots_covered = t.assigned_slots();
    report.slot_map_age_seconds = Some(t.fetched_at.elapsed().as_secs_f64());
    let totals = m.shards.totals();
    report.ops = totals.iter().sum();
    let numbers = slots::shard_numbers(&t);
    let connected = primary_links(view);
    let mut keys = Vec::new();
    for shard in &t.shards {
        let addr = t.nodes[shard.primary].addr.to_string();
        let opts = opts.clone();
        keys.push(tokio::spawn(async move { dbsize(&addr, &opts).await }));
    }
    for (i, (shard, keys)) in t.shards.iter().zip(keys).enumerate() {
        let keys = keys
            .await
            .unwrap_or_else(|e| Err(format!("DBSIZE task failed: {e}")));
        let number = numbers[i];
        let node = |idx: usize, primary: bool| {
            let n = &t.nodes[idx];
            NodeReport {
                id: n.id.clone(),
                address: n.addr.to_string(),
                role: if primary { "primary" } else { "replica" }.into(),
                link: match n.health {
                    Health::Online => "up",
                    Health::Loading => "loading",
                    Health::Failed => "down",
                }
                .into(),
                connected: primary.then(|| connected.contains(&n.addr)),
            }
        };
        report.shards.push(ShardReport {
            shard: number,
            slot_count: shard
                .slots
                .iter()
                .map(|&(a, b)| usize::from(b - a) + 1)
                .sum(),
            slots: shard.slots.clone(),
            keys: keys.as_ref().ok().copied(),
            keys_error: keys.err(),
            ops: totals.get(number).copied().unwrap_or(0),
            primary: node(shard.primary, true),
            replicas: shard.replicas.iter().map(|&r| node(r, false)).collect(),
        });
    }
    report.shards.sort_by_key(|s| s.shard);
    report
}

/// Addresses of primaries the proxy has a live connection to.
fn primary_links(view: &dyn ClusterView) -> Vec<std::net::SocketAddr> {
    view.routing().map_or_else(Vec::new, |t| {
        t.primaries
            .iter()
            .filter(|p| p.connected)
            .map(|p| p.addr)
            .collect()
    })
}

async fn dbsize(addr: &str, opts: &FetchOptions) -> Result<u64, String> {
    let budget = opts.connect_timeout + opts.command_timeout + Duration::from_millis(100);
    let call = crate::cluster::fetch::call(addr, &[b"DBSIZE"], opts);
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(redis_protocol::resp2::types::OwnedFrame::Integer(n))) => {
            u64::try_from(n).map_err(|_| format!("negative DBSIZE {n}"))
        }
        Ok(Ok(other)) => Err(format!("unexpected DBSIZE reply {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("DBSIZE timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_json() {
        let r = ClusterReport {
            ready: false,
            reason: Some("no topology".into()),
            slots_covered: 0,
            slot_map_age_seconds: None,
            ops: 0,
            shards: vec![ShardReport {
                shard: 0,
                slots: vec![(0, 16383)],
                slot_count: 16384,
                keys: Some(3),
                keys_error: None,
                ops: 7,
                primary: NodeReport {
                    id: "a".into(),
                    address: "127.0.0.1:1".into(),
                    role: "primary".into(),
                    link: "up".into(),
                    connected: Some(true),
                },
                replicas: vec![],
            }],
            hot_slots: vec![HotSlot { slot: 1, ops: 2 }],
            hot_keys: vec![],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"slots\":[[0,16383]]"), "{text}");
        let back: ClusterReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
