//! Turns a parsed, unresolved topology into a [`Topology`] by resolving announced host names.
//!
//! Names are looked up on every fetch, never cached across fetches: a StatefulSet pod keeps its
//! name but gets a new IP when it restarts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::error::TopologyError;
use super::parse::{Endpoint, RawTopology};
use super::topology::{Node, Shard, Topology};
use crate::net::{AddrError, NodeAddr};

/// Who answered the topology query: needed for nodes that announce no endpoint.
#[derive(Debug, Clone)]
pub struct AskedNode {
    /// The host part of the address we were told to ask (an IP literal or a name).
    pub host: String,
    /// The IP we actually reached it on.
    pub ip: IpAddr,
}

/// Resolves every node's endpoint and builds the snapshot.
///
/// A primary that serves slots must resolve, or the whole answer is refused (the current snapshot
/// stays, and the next refresh tries again). Any other node that does not resolve (a replica, a
/// failed primary with no slots left) is left out with a warning: it cannot take traffic anyway.
pub async fn resolve(
    raw: RawTopology,
    asked: &AskedNode,
    lookup_timeout: Duration,
) -> Result<Topology, TopologyError> {
    let essential: Vec<bool> = (0..raw.nodes.len())
        .map(|i| {
            raw.shards
                .iter()
                .any(|s| s.primary == i && !s.slots.is_empty())
        })
        .collect();
    let mut cache: HashMap<String, Result<IpAddr, TopologyError>> = HashMap::new();
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    let mut new_index: Vec<Option<usize>> = Vec::with_capacity(raw.nodes.len());
    for (i, node) in raw.nodes.into_iter().enumerate() {
        let (endpoint, ip) = match node.endpoint {
            Endpoint::Ip(ip) => (ip.to_string(), Ok(ip)),
            Endpoint::SameAsAsked => (asked.host.clone(), Ok(asked.ip)),
            Endpoint::Host(host) => {
                let ip = match cache.get(&host) {
                    Some(cached) => cached.clone(),
                    None => {
                        let found = lookup(&host, node.port, lookup_timeout).await;
                        cache.insert(host.clone(), found.clone());
                        found
                    }
                };
                (host, ip)
            }
        };
        match ip {
            Ok(ip) => {
                new_index.push(Some(nodes.len()));
                nodes.push(Node {
                    id: node.id,
                    addr: SocketAddr::new(ip, node.port),
                    endpoint,
                    port: node.port,
                    role: node.role,
                    health: node.health,
                });
            }
            Err(e) if essential[i] => return Err(e),
            Err(e) => {
                tracing::warn!(node = %node.id, error = %e, "leaving an unresolvable node out of the topology");
                new_index.push(None);
            }
        }
    }
    let shards = raw
        .shards
        .into_iter()
        .filter_map(|s| {
            Some(Shard {
                primary: new_index[s.primary]?,
                replicas: s.replicas.iter().filter_map(|&r| new_index[r]).collect(),
                slots: s.slots,
            })
        })
        .collect();
    Topology::new(nodes, shards).map_err(|e| TopologyError::protocol(&asked.host, e.reason))
}

/// Looks a name up, preferring IPv4 when the resolver offers both (Redis often binds IPv4 only).
async fn lookup(host: &str, port: u16, budget: Duration) -> Result<IpAddr, TopologyError> {
    let failed = |e: AddrError| TopologyError::Resolve {
        host: host.to_owned(),
        source: Arc::new(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            e.to_string(),
        )),
    };
    let addrs = NodeAddr::new(host, port)
        .map_err(failed)?
        .resolve(budget)
        .await
        .map_err(failed)?;
    let first = addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first());
    // `resolve` never returns an empty list; a lookup finding nothing is its error.
    first.map(|a| a.ip()).ok_or_else(|| {
        failed(AddrError::Resolve {
            host: host.to_owned(),
            reason: "no addresses".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse::{RawNode, RawShard};
    use crate::cluster::topology::{Health, Role};

    fn raw_node(id: &str, endpoint: Endpoint, port: u16, role: Role) -> RawNode {
        RawNode {
            id: id.into(),
            endpoint,
            port,
            role,
            health: Health::Online,
        }
    }

    fn asked() -> AskedNode {
        AskedNode {
            host: "seed.example".into(),
            ip: "10.1.2.3".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn resolves_ips_names_and_the_asked_node() {
        let raw = RawTopology {
            nodes: vec![
                raw_node("a", Endpoint::SameAsAsked, 7001, Role::Primary),
                raw_node("b", Endpoint::Host("localhost".into()), 7002, Role::Primary),
                raw_node(
                    "b1",
                    Endpoint::Ip("::1".parse().unwrap()),
                    7003,
                    Role::Replica,
                ),
            ],
            shards: vec![
                RawShard {
                    primary: 0,
                    replicas: vec![],
                    slots: vec![(0, 8191)],
                },
                RawShard {
                    primary: 1,
                    replicas: vec![2],
                    slots: vec![(8192, 16383)],
                },
            ],
        };
        let t = resolve(raw, &asked(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(t.covers_all_slots());
        assert_eq!(t.nodes[0].endpoint, "seed.example");
        assert_eq!(t.nodes[0].addr, "10.1.2.3:7001".parse().unwrap());
        assert_eq!(t.nodes[1].endpoint, "localhost");
        assert!(t.nodes[1].addr.ip().is_loopback());
        assert_eq!(t.nodes[2].addr, "[::1]:7003".parse().unwrap());
        assert_eq!(t.nodes[2].endpoint, "::1");
    }

    #[tokio::test]
    async fn unresolvable_replica_is_dropped_but_primary_fails() {
        let bad = || Endpoint::Host("no-such-host.invalid".into());
        let raw = RawTopology {
            nodes: vec![
                raw_node(
                    "a",
                    Endpoint::Ip("127.0.0.1".parse().unwrap()),
                    7001,
                    Role::Primary,
                ),
                raw_node("a1", bad(), 7002, Role::Replica),
            ],
            shards: vec![RawShard {
                primary: 0,
                replicas: vec![1],
                slots: vec![(0, 16383)],
            }],
        };
        let t = resolve(raw.clone(), &asked(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(t.nodes.len(), 1);
        assert!(t.shards[0].replicas.is_empty());

        let mut raw = raw;
        raw.nodes[0].endpoint = bad();
        let err = resolve(raw, &asked(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
