//! `slotway status --admin ADDR`: fetches `/cluster` from a running proxy and prints the shards
//! (roles, addresses, slot ranges, keys, ops), the key spread across shards and the hottest
//! slots and keys. The exit code says whether all is well, for scripts and probes.

use std::fmt::Write;
use std::time::Duration;

use crate::admin::http;
use crate::admin::report::{ClusterReport, NodeReport};

/// Exit code: healthy.
pub const HEALTHY: i32 = 0;
/// Exit code: the proxy answered but is not ready or a node is down.
pub const UNHEALTHY: i32 = 1;
/// Exit code: the admin endpoint could not be asked or gave no report.
pub const UNREACHABLE: i32 = 2;

/// How long `status` waits for the admin endpoint.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the admin endpoint at `admin`, prints the report to stdout (problems to stderr) and
/// returns the exit code.
pub fn run(admin: &str) -> i32 {
    let addr = crate::admin::bind_address(admin);
    let (code, body) = match http::get(&addr, "/cluster", TIMEOUT) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotway status: cannot reach the admin endpoint: {e}");
            return UNREACHABLE;
        }
    };
    if code != 200 {
        eprintln!(
            "slotway status: {addr}/cluster answered {code}: {}",
            body.trim()
        );
        return UNREACHABLE;
    }
    let report: ClusterReport = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotway status: {addr}/cluster is not a slotway report: {e}");
            return UNREACHABLE;
        }
    };
    print!("{}", render(&addr, &report));
    let problems = problems(&report);
    for p in &problems {
        eprintln!("slotway status: {p}");
    }
    if problems.is_empty() {
        HEALTHY
    } else {
        UNHEALTHY
    }
}

/// What is wrong, one line each; empty when the cluster is healthy.
pub fn problems(r: &ClusterReport) -> Vec<String> {
    let mut out = Vec::new();
    if !r.ready {
        out.push(format!(
            "not ready: {}",
            r.reason.as_deref().unwrap_or("unknown reason")
        ));
    }
    if r.shards.is_empty() {
        out.push("no shards known".into());
    }
    for s in &r.shards {
        for n in std::iter::once(&s.primary).chain(&s.replicas) {
            if n.link != "up" {
                out.push(format!(
                    "shard {}: {} {} at {} is {}",
                    s.shard, n.role, n.id, n.address, n.link
                ));
            }
        }
        if let Some(e) = &s.keys_error {
            out.push(format!("shard {}: cannot count keys: {e}", s.shard));
        }
    }
    out
}

/// The terminal report.
pub fn render(addr: &str, r: &ClusterReport) -> String {
    let mut o = String::new();
    let age = r
        .slot_map_age_seconds
        .map_or_else(|| "-".to_string(), |a| format!("{a:.1}s"));
    let _ = writeln!(
        o,
        "slotway at {addr}: {}; slots covered {}/16384; slot map age {age}",
        if r.ready { "ready" } else { "NOT READY" },
        r.slots_covered
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(o, "  reason: {reason}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<5} {:<24} {:>6} {:>10} {:>12}  NODES",
        "SHARD", "SLOTS", "COUNT", "KEYS", "OPS"
    );
    for s in &r.shards {
        let keys = s.keys.map_or_else(|| "?".to_string(), |k| k.to_string());
        let nodes: Vec<String> = std::iter::once(&s.primary)
            .chain(&s.replicas)
            .map(node)
            .collect();
        let _ = writeln!(
            o,
            "{:<5} {:<24} {:>6} {:>10} {:>12}  {}",
            s.shard,
            ranges(&s.slots),
            s.slot_count,
            keys,
            s.ops,
            nodes.join(", ")
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", spread("keys", r.shards.iter().map(|s| s.keys)));
    let _ = writeln!(o, "{}", spread("ops", r.shards.iter().map(|s| Some(s.ops))));
    if !r.hot_slots.is_empty() {
        let slots: Vec<String> = r
            .hot_slots
            .iter()
            .map(|h| format!("{} ({})", h.slot, h.ops))
            .collect();
        let _ = writeln!(o, "hottest slots (ops since start): {}", slots.join(", "));
    }
    if !r.hot_keys.is_empty() {
        let keys: Vec<String> = r
            .hot_keys
            .iter()
            .map(|h| format!("{} (~{})", h.key, h.ops))
            .collect();
        let _ = writeln!(
            o,
            "hottest keys (recent ops, estimated): {}",
            keys.join(", ")
        );
    }
    o
}

fn node(n: &NodeReport) -> String {
    let short = &n.id[..n.id.len().min(8)];
    let mut s = format!("{} {} {short}", n.role, n.address);
    if n.link != "up" {
        let _ = write!(s, " [{}]", n.link);
    }
    if n.connected == Some(false) {
        s.push_str(" [proxy not connected]");
    }
    s
}

fn ranges(slots: &[(u16, u16)]) -> String {
    if slots.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = slots
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let all = parts.join(",");
    if all.len() <= 24 {
        return all;
    }
    format!("{} (+{} ranges)", parts[0], parts.len() - 1)
}

/// `keys per shard: max 340 (shard 1), min 310 (shard 0), spread 9.7%`.
fn spread(what: &str, values: impl Iterator<Item = Option<u64>>) -> String {
    let known: Vec<(usize, u64)> = values
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .collect();
    let (Some(max), Some(min)) = (
        known.iter().max_by_key(|(_, v)| *v),
        known.iter().min_by_key(|(_, v)| *v),
    ) else {
        return format!("{what} per shard: unknown");
    };
    let pct = if min.1 == 0 {
        if max.1 == 0 {
            "0.0%".to_string()
        } else {
            "∞".to_string()
        }
    } else {
        format!("{:.1}%", (max.1 - min.1) as f64 * 100.0 / min.1 as f64)
    };
    format!(
        "{what} per shard: max {} (shard {}), min {} (shard {}), max/min spread {pct}",
        max.1, max.0, min.1, min.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::report::{HotSlot, ShardReport};

    fn node(id: &str, role: &str, link: &str) -> NodeReport {
        NodeReport {
            id: id.into(),
            address: "127.0.0.1:7001".into(),
            role: role.into(),
            link: link.into(),
            connected: (role == "primary").then_some(true),
        }
    }

    fn report(link: &str) -> ClusterReport {
        let shard = |n: usize, keys: u64| ShardReport {
            shard: n,
            slots: vec![(0, 5460)],
            slot_count: 5461,
            keys: Some(keys),
            keys_error: None,
            ops: keys * 2,
            primary: node("aaaaaaaaaaaa", "primary", "up"),
            replicas: vec![node("bbbbbbbbbbbb", "replica", link)],
        };
        ClusterReport {
            ready: true,
            reason: None,
            slots_covered: 16384,
            slot_map_age_seconds: Some(1.5),
            ops: 0,
            shards: vec![shard(0, 100), shard(1, 110)],
            hot_slots: vec![HotSlot { slot: 7, ops: 9 }],
            hot_keys: vec![],
        }
    }

    #[test]
    fn healthy_report_renders_spread_and_hot_slots() {
        let r = report("up");
        assert!(problems(&r).is_empty());
        let text = render("127.0.0.1:9090", &r);
        assert!(text.contains("ready; slots covered 16384/16384"), "{text}");
        assert!(text.contains("0-5460"), "{text}");
        assert!(
            text.contains(
                "keys per shard: max 110 (shard 1), min 100 (shard 0), max/min spread 10.0%"
            ),
            "{text}"
        );
        assert!(
            text.contains("hottest slots (ops since start): 7 (9)"),
            "{text}"
        );
    }

    #[test]
    fn a_down_node_is_a_problem() {
        let r = report("down");
        let p = problems(&r);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("replica bbbbbbbbbbbb"), "{p:?}");
    }

    #[test]
    fn unreachable_admin_exits_2() {
        assert_eq!(run("127.0.0.1:1"), UNREACHABLE);
    }
}
