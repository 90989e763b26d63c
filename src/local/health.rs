//! Deciding whether the local cluster is healthy, from the running nodes' own reports.
//!
//! Healthy means every running node: reports `cluster_state:ok` with all 16384 slots
//! served; knows every node; sees each running node by its current address and not
//! as failing; agrees with the others on who is primary of what and which slots it
//! serves; lists every running node in `CLUSTER SLOTS` (Redis hides replicas there
//! until they report a replication offset); and, if a replica, has its link up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::client::{NodeClient, Reply};
use super::create::connect;
use super::LocalError;

/// One line of `CLUSTER NODES`, reduced to what the health checks need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeLine {
    pub id: String,
    /// `ip:port` as Redis prints it (no IPv6 brackets, no bus port).
    pub addr: String,
    /// Flags without `myself`.
    pub flags: BTreeSet<String>,
    /// Whether this line describes the node that answered.
    pub myself: bool,
    /// The primary's id, `None` for primaries.
    pub primary: Option<String>,
    /// Owned slot ranges as printed (`0-5460`, `7`).
    pub slots: Vec<String>,
}

/// The view-independent part of a line: (id, is primary, primary id, slots).
type ConfigEntry = (String, bool, Option<String>, Vec<String>);

impl NodeLine {
    fn config(&self) -> ConfigEntry {
        let is_primary = self.flags.contains("master");
        (
            self.id.clone(),
            is_primary,
            self.primary.clone(),
            self.slots.clone(),
        )
    }

    fn troubled(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.flags.contains(*f))
    }
}

/// Parses `CLUSTER NODES` output.
pub(crate) fn parse_nodes(text: &str) -> Result<Vec<NodeLine>, LocalError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_node_line)
        .collect()
}

fn parse_node_line(line: &str) -> Result<NodeLine, LocalError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(LocalError::Protocol(format!(
            "malformed CLUSTER NODES line: {line}"
        )));
    }
    let mut flags: BTreeSet<String> = fields[2].split(',').map(String::from).collect();
    let myself = flags.remove("myself");
    Ok(NodeLine {
        id: fields[0].to_string(),
        addr: fields[1].split('@').next().unwrap_or_default().to_string(),
        flags,
        myself,
        primary: (fields[3] != "-").then(|| fields[3].to_string()),
        // Entries like `[93->-id]` are migrations in progress, not ownership.
        slots: fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| s.to_string())
            .collect(),
    })
}

/// Reads one `key:value` field of `CLUSTER INFO`.
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

fn text_reply(client: &mut NodeClient, args: &[&str]) -> Result<String, LocalError> {
    client
        .call_ok(args)?
        .as_text()
        .ok_or_else(|| LocalError::Protocol(format!("{} did not return a string", args.join(" "))))
}

/// `CLUSTER INFO` of one node.
pub(crate) fn cluster_info(client: &mut NodeClient) -> Result<String, LocalError> {
    text_reply(client, &["CLUSTER", "INFO"])
}

/// `CLUSTER NODES` of one node, parsed.
pub(crate) fn cluster_nodes(client: &mut NodeClient) -> Result<Vec<NodeLine>, LocalError> {
    parse_nodes(&text_reply(client, &["CLUSTER", "NODES"])?)
}

/// `Ok(None)` once every node at `addrs` lists all of them, none still in handshake.
pub(crate) fn all_know_each_other(addrs: &[SocketAddr]) -> Result<Option<String>, LocalError> {
    for addr in addrs {
        let nodes = cluster_nodes(&mut connect(*addr)?)?;
        let settled = nodes.iter().filter(|n| !n.troubled()).count();
        if settled != addrs.len() {
            return Ok(Some(format!(
                "{addr} knows {settled} of {} nodes",
                addrs.len()
            )));
        }
    }
    Ok(None)
}

/// What one running node reported.
struct Report {
    addr: SocketAddr,
    client: NodeClient,
    info: String,
    nodes: Vec<NodeLine>,
}

/// Checks the running nodes at `addrs` out of `total` nodes (see the module docs).
/// `Ok(None)` means healthy, `Ok(Some(why))` not yet.
pub(crate) fn check_health(
    addrs: &[SocketAddr],
    total: usize,
) -> Result<Option<String>, LocalError> {
    let mut reports = Vec::with_capacity(addrs.len());
    // Each running node's id, mapped to the address others should print for it.
    let mut running: BTreeMap<String, String> = BTreeMap::new();
    for addr in addrs {
        let mut client = connect(*addr)?;
        let info = cluster_info(&mut client)?;
        let nodes = cluster_nodes(&mut client)?;
        let Some(me) = nodes.iter().find(|n| n.myself) else {
            return Err(LocalError::Protocol(format!(
                "{addr}: CLUSTER NODES has no myself line"
            )));
        };
        running.insert(me.id.clone(), format!("{}:{}", addr.ip(), addr.port()));
        reports.push(Report {
            addr: *addr,
            client,
            info,
            nodes,
        });
    }
    let mut reference: Option<(SocketAddr, Vec<ConfigEntry>)> = None;
    for report in &mut reports {
        if let Some(why) = check_view(report, total, &running) {
            return Ok(Some(why));
        }
        let mut config: Vec<ConfigEntry> = report.nodes.iter().map(NodeLine::config).collect();
        config.sort();
        match &reference {
            None => reference = Some((report.addr, config)),
            Some((first, seen)) if *seen != config => {
                return Ok(Some(format!(
                    "{} and {first} disagree on the configuration",
                    report.addr
                )));
            }
            Some(_) => {}
        }
        if let Some(why) = slots_list_everyone(report, running.len())? {
            return Ok(Some(why));
        }
        if let Some(why) = replica_link_down(&mut report.client, report.addr)? {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

/// Checks one node's own view: state, coverage, membership, running nodes' addresses.
fn check_view(report: &Report, total: usize, running: &BTreeMap<String, String>) -> Option<String> {
    let addr = report.addr;
    if info_field(&report.info, "cluster_state") != Some("ok") {
        return Some(format!("{addr}: cluster_state is not ok"));
    }
    if info_field(&report.info, "cluster_slots_ok") != Some("16384") {
        return Some(format!("{addr}: not all 16384 slots are served"));
    }
    if report.nodes.len() != total {
        return Some(format!(
            "{addr} knows {} of {total} nodes",
            report.nodes.len()
        ));
    }
    for (id, real) in running {
        match report.nodes.iter().find(|n| &n.id == id) {
            None => return Some(format!("{addr} does not know {real}")),
            Some(n) if n.troubled() => {
                return Some(format!("{addr} flags {real} as {:?}", n.flags))
            }
            Some(n) if &n.addr != real => {
                return Some(format!("{addr} still sees {real} at {}", n.addr));
            }
            Some(_) => {}
        }
    }
    None
}

/// `Some(reason)` unless the node's `CLUSTER SLOTS` names `expected` distinct nodes.
fn slots_list_everyone(report: &mut Report, expected: usize) -> Result<Option<String>, LocalError> {
    let reply = report.client.call_ok(&["CLUSTER", "SLOTS"])?;
    let mut ids = BTreeSet::new();
    for range in reply.as_array().unwrap_or_default() {
        // Each range: start, end, then one [ip, port, id, ...] entry per serving node.
        for entry in range.as_array().unwrap_or_default().iter().skip(2) {
            if let Some(id) = entry
                .as_array()
                .and_then(|e| e.get(2))
                .and_then(Reply::as_text)
            {
                ids.insert(id);
            }
        }
    }
    Ok((ids.len() != expected).then(|| {
        format!(
            "{}: CLUSTER SLOTS lists {} of {expected} nodes",
            report.addr,
            ids.len()
        )
    }))
}

/// `Some(reason)` when the node is a replica whose link to its primary is not up.
fn replica_link_down(
    client: &mut NodeClient,
    addr: SocketAddr,
) -> Result<Option<String>, LocalError> {
    let role = client.call_ok(&["ROLE"])?;
    let items = role.as_array().unwrap_or_default();
    if items.first().and_then(Reply::as_text).as_deref() != Some("slave") {
        return Ok(None);
    }
    // ROLE for a replica: slave, primary host, primary port, link state, offset.
    let state = items.get(3).and_then(Reply::as_text).unwrap_or_default();
    Ok((state != "connected").then(|| format!("{addr}: replication link is {state:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host master,fail? - 0 1426238316232 2 connected 5461-10922 [93->-292f]
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn parses_cluster_nodes() {
        let nodes = parse_nodes(NODES).unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].primary.as_deref(), Some("e7d1"));
        assert!(nodes[0].flags.contains("slave") && !nodes[0].troubled());
        assert_eq!(nodes[1].addr, "127.0.0.1:30002");
        assert_eq!(nodes[1].slots, vec!["5461-10922"]);
        assert!(nodes[1].troubled());
        assert!(nodes[2].myself && !nodes[2].flags.contains("myself"));
        assert_eq!(
            nodes[2].config(),
            ("e7d1".into(), true, None, vec!["0-5460".into()])
        );
        assert!(parse_nodes("garbage line").is_err());
    }

    #[test]
    fn info_fields() {
        let info = "cluster_state:ok\r\ncluster_slots_ok:16384\r\ncluster_known_nodes:9\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_ok"), Some("16384"));
        assert_eq!(info_field(info, "cluster_slots"), None);
    }
}
