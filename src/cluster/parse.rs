//! Pure parsers for `CLUSTER SHARDS` and `CLUSTER SLOTS` replies (RESP2 frames) into an unresolved
//! topology: host names are kept as text, to be resolved by [`super::resolve`].

use std::collections::HashMap;
use std::net::IpAddr;

use redis_protocol::resp2::types::OwnedFrame;

use super::error::InvalidTopology;
use super::topology::{Health, Role};

/// Where a node can be reached, as it announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An IP literal.
    Ip(IpAddr),
    /// A host name to resolve on every fetch (pod IPs change on restart).
    Host(String),
    /// None announced (NULL, empty, or `?` without an IP): use the host we sent the command to.
    SameAsAsked,
}

/// A node before its endpoint is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawNode {
    /// Cluster node ID.
    pub id: String,
    /// Announced endpoint.
    pub endpoint: Endpoint,
    /// Client port.
    pub port: u16,
    /// Primary or replica.
    pub role: Role,
    /// As reported (`CLUSTER SLOTS` reports none: `Online`).
    pub health: Health,
}

/// A shard before resolution: indexes point into [`RawTopology::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawShard {
    /// Index of the primary.
    pub primary: usize,
    /// Indexes of the replicas.
    pub replicas: Vec<usize>,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// A parsed reply, endpoints not yet resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawTopology {
    /// Every node seen, each once (by node ID).
    pub nodes: Vec<RawNode>,
    /// Every shard that has a primary.
    pub shards: Vec<RawShard>,
}

type ParseResult<T> = Result<T, InvalidTopology>;

/// Parses a `CLUSTER SHARDS` reply (Redis 7.0+).
///
/// A shard that lists no primary (possible mid-failover) keeps its nodes but not its slots, which
/// then read as unassigned.
pub fn parse_cluster_shards(frame: &OwnedFrame) -> ParseResult<RawTopology> {
    parse_cluster_shards_with(frame, false)
}

/// Like [`parse_cluster_shards`]; with `tls` a node's `tls-port` is used when it announces
/// one (a node serving both lists its plaintext `port` too).
pub fn parse_cluster_shards_with(frame: &OwnedFrame, tls: bool) -> ParseResult<RawTopology> {
    let mut table = NodeTable::default();
    for shard in array(frame, "CLUSTER SHARDS reply")? {
        let fields = pairs(shard, "shard")?;
        let slots = match field(&fields, "slots") {
            Some(f) => slot_pairs(array(f, "slots")?)?,
            None => Vec::new(),
        };
        let mut primary = None;
        let mut replicas = Vec::new();
        for node in array(
            field(&fields, "nodes").unwrap_or(&OwnedFrame::Null),
            "nodes",
        )? {
            let node = shards_node(node, tls)?;
            let role = node.role;
            let index = table.insert(node);
            match role {
                Role::Primary if primary.is_none() => primary = Some(index),
                _ => replicas.push(index),
            }
        }
        if let Some(primary) = primary {
            table.shards.push(RawShard {
                primary,
                replicas,
                slots,
            });
        }
    }
    Ok(table.finish())
}

/// Parses a `CLUSTER SLOTS` reply. Nodes that own no slot do not appear in it.
pub fn parse_cluster_slots(frame: &OwnedFrame) -> ParseResult<RawTopology> {
    let mut table = NodeTable::default();
    let mut shard_of_primary: HashMap<usize, usize> = HashMap::new();
    for entry in array(frame, "CLUSTER SLOTS reply")? {
        let items = array(entry, "slot range")?;
        let [start, end, primary, replicas @ ..] = items else {
            return Err(InvalidTopology::new(
                "slot range with fewer than 3 elements",
            ));
        };
        let range = (slot(start)?, slot(end)?);
        let primary = table.insert(slots_node(primary, Role::Primary)?);
        let shard = *shard_of_primary.entry(primary).or_insert_with(|| {
            table.shards.push(RawShard {
                primary,
                replicas: Vec::new(),
                slots: Vec::new(),
            });
            table.shards.len() - 1
        });
        let mut replica_indexes = Vec::with_capacity(replicas.len());
        for replica in replicas {
            replica_indexes.push(table.insert(slots_node(replica, Role::Replica)?));
        }
        let shard = &mut table.shards[shard];
        shard.slots.push(range);
        for r in replica_indexes {
            if !shard.replicas.contains(&r) {
                shard.replicas.push(r);
            }
        }
    }
    Ok(table.finish())
}

/// Collects nodes once each, by ID.
#[derive(Default)]
struct NodeTable {
    nodes: Vec<RawNode>,
    by_id: HashMap<String, usize>,
    shards: Vec<RawShard>,
}

impl NodeTable {
    fn insert(&mut self, node: RawNode) -> usize {
        if let Some(&index) = self.by_id.get(&node.id) {
            return index;
        }
        self.by_id.insert(node.id.clone(), self.nodes.len());
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn finish(self) -> RawTopology {
        RawTopology {
            nodes: self.nodes,
            shards: self.shards,
        }
    }
}

/// One entry of a `CLUSTER SHARDS` "nodes" list: a flat key/value array.
fn shards_node(frame: &OwnedFrame, tls: bool) -> ParseResult<RawNode> {
    let fields = pairs(frame, "node")?;
    let text_field = |name| field(&fields, name).and_then(text);
    let id = text_field("id")
        .ok_or_else(|| InvalidTopology::new("node without id"))?
        .to_owned();
    let (first, second) = match tls {
        true => ("tls-port", "port"),
        false => ("port", "tls-port"),
    };
    let port = field(&fields, first)
        .or_else(|| field(&fields, second))
        .ok_or_else(|| InvalidTopology::new(format!("node {id} without port")))
        .and_then(port)?;
    // `endpoint` follows cluster-preferred-endpoint-type; a node that predates it has only `ip`.
    let preferred = match field(&fields, "endpoint") {
        Some(f) => text(f),
        None => text_field("ip"),
    };
    let role = match text_field("role") {
        Some("master") => Role::Primary,
        Some("replica" | "slave") => Role::Replica,
        other => {
            return Err(InvalidTopology::new(format!(
                "node {id} has role {other:?}"
            )))
        }
    };
    let health = match text_field("health") {
        Some("online") | None => Health::Online,
        Some("loading") => Health::Loading,
        // "failed", and anything newer we do not know: do not send traffic on a guess.
        Some(_) => Health::Failed,
    };
    Ok(RawNode {
        endpoint: endpoint(preferred, text_field("ip")),
        id,
        port,
        role,
        health,
    })
}

/// One node of a `CLUSTER SLOTS` range: `[endpoint, port, id?, {hostname, ip}?]`.
fn slots_node(frame: &OwnedFrame, role: Role) -> ParseResult<RawNode> {
    let items = array(frame, "slot node")?;
    let [host, port_frame, rest @ ..] = items else {
        return Err(InvalidTopology::new("slot node with fewer than 2 elements"));
    };
    let preferred = match host {
        OwnedFrame::Null => None,
        other => Some(text(other).ok_or_else(|| InvalidTopology::new("node host is not text"))?),
    };
    let port = port(port_frame)?;
    let metadata = match rest.get(1) {
        Some(m) => pairs(m, "node metadata")?,
        None => Vec::new(),
    };
    let ip = field(&metadata, "ip").and_then(text);
    let endpoint = endpoint(preferred, ip);
    // Redis before 4.0 sends no ID; the announced address is the best stand-in.
    let id = match rest.first() {
        Some(id) => text(id)
            .ok_or_else(|| InvalidTopology::new("node id is not text"))?
            .to_owned(),
        None => format!("{}:{port}", preferred.unwrap_or("?")),
    };
    Ok(RawNode {
        id,
        endpoint,
        port,
        role,
        health: Health::Online,
    })
}

/// Interprets an announced endpoint.
///
/// NULL or empty means "the node you asked" (cluster-preferred-endpoint-type unknown-endpoint).
/// `?` means a host name was preferred but the node has none; its IP, when given, is a better
/// guess than the asked host, which is only right for the node that answered.
fn endpoint(preferred: Option<&str>, ip: Option<&str>) -> Endpoint {
    match preferred {
        None | Some("") => Endpoint::SameAsAsked,
        Some("?") => match ip.and_then(|ip| ip.parse().ok()) {
            Some(ip) => Endpoint::Ip(ip),
            None => Endpoint::SameAsAsked,
        },
        Some(host) => match host.parse() {
            Ok(ip) => Endpoint::Ip(ip),
            Err(_) => Endpoint::Host(host.to_owned()),
        },
    }
}

fn array<'a>(frame: &'a OwnedFrame, what: &str) -> ParseResult<&'a [OwnedFrame]> {
    match frame {
        OwnedFrame::Array(items) => Ok(items),
        // An empty list may come as a null array from very old servers.
        OwnedFrame::Null => Ok(&[]),
        OwnedFrame::Error(e) => Err(InvalidTopology::new(format!("{what}: error reply {e}"))),
        _ => Err(InvalidTopology::new(format!("{what} is not an array"))),
    }
}

/// A RESP2 map: a flat array of alternating names and values.
fn pairs<'a>(frame: &'a OwnedFrame, what: &str) -> ParseResult<Vec<(&'a str, &'a OwnedFrame)>> {
    let items = array(frame, what)?;
    if items.len() % 2 != 0 {
        return Err(InvalidTopology::new(format!(
            "{what} map has an odd length"
        )));
    }
    items
        .chunks_exact(2)
        .map(|kv| match text(&kv[0]) {
            Some(k) => Ok((k, &kv[1])),
            None => Err(InvalidTopology::new(format!("{what} map key is not text"))),
        })
        .collect()
}

fn field<'a>(fields: &[(&str, &'a OwnedFrame)], name: &str) -> Option<&'a OwnedFrame> {
    fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// An integer sent as an integer or, by some 7.0 releases, as a string.
fn integer(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn slot(frame: &OwnedFrame) -> ParseResult<u16> {
    match integer(frame) {
        Some(s) if (0..16384).contains(&s) => Ok(s as u16),
        other => Err(InvalidTopology::new(format!("bad slot {other:?}"))),
    }
}

fn port(frame: &OwnedFrame) -> ParseResult<u16> {
    match integer(frame).map(u16::try_from) {
        Some(Ok(p)) if p != 0 => Ok(p),
        _ => Err(InvalidTopology::new(format!("bad port {frame:?}"))),
    }
}

fn slot_pairs(items: &[OwnedFrame]) -> ParseResult<Vec<(u16, u16)>> {
    if items.len() % 2 != 0 {
        return Err(InvalidTopology::new("slots list has an odd length"));
    }
    items
        .chunks_exact(2)
        .map(|r| Ok((slot(&r[0])?, slot(&r[1])?)))
        .collect()
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
