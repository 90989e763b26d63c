//! The immutable snapshot of the cluster layout: nodes, shards and the slot → shard table.
//!
//! A [`Topology`] is built once (from a fetch, or as a copy with one slot moved) and never changed
//! afterwards, so the data path can read it through an `ArcSwap` without locks.

use std::net::SocketAddr;
use tokio::time::Instant;

use super::error::InvalidTopology;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// Marks a slot no shard serves in [`Topology`]'s owner table.
const UNASSIGNED: u16 = u16::MAX;

/// What a node does in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Serves the shard's slots for reads and writes.
    Primary,
    /// Copies a primary; may serve reads after READONLY.
    Replica,
}

/// How the cluster sees a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Reachable and serving.
    Online,
    /// Up but still loading its data set (replies `-LOADING`).
    Loading,
    /// Marked failed by the cluster, or state unknown.
    Failed,
}

/// One Redis server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The cluster node ID (40 hex characters); stable across restarts and address changes.
    pub id: String,
    /// The address to connect to, resolved when the snapshot was fetched.
    pub addr: SocketAddr,
    /// The host as announced (an IP or a host name), or the host we asked when the node announced none.
    pub endpoint: String,
    /// The client port.
    pub port: u16,
    /// Primary or replica.
    pub role: Role,
    /// Online, loading or failed.
    pub health: Health,
}

/// A primary, its replicas and the slots they serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Index of the primary in [`Topology::nodes`].
    pub primary: usize,
    /// Indexes of the replicas in [`Topology::nodes`].
    pub replicas: Vec<usize>,
    /// Inclusive slot ranges, sorted and merged.
    pub slots: Vec<(u16, u16)>,
}

/// An immutable view of the cluster at one moment.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Every node known, primary or replica.
    pub nodes: Vec<Node>,
    /// Every shard known, including primaries that serve no slot.
    pub shards: Vec<Shard>,
    /// Slot → shard index; `UNASSIGNED` when no shard serves it.
    slot_owner: Box<[u16]>,
    /// How many slots have an owner.
    assigned: usize,
    /// When the answer this snapshot came from was received.
    pub fetched_at: Instant,
}

impl Topology {
    /// Builds a snapshot, checking node indexes and that no slot belongs to two shards.
    ///
    /// Slot ranges are normalised (sorted, adjacent ranges merged).
    pub fn new(nodes: Vec<Node>, mut shards: Vec<Shard>) -> Result<Topology, InvalidTopology> {
        if shards.len() >= UNASSIGNED as usize {
            return Err(InvalidTopology::new("too many shards"));
        }
        let mut owner = vec![UNASSIGNED; SLOTS].into_boxed_slice();
        for (index, shard) in shards.iter().enumerate() {
            check_node_indexes(shard, nodes.len())?;
            for &(start, end) in &shard.slots {
                if start > end || end as usize >= SLOTS {
                    return Err(InvalidTopology::new(format!(
                        "bad slot range {start}-{end}"
                    )));
                }
                for slot in start..=end {
                    let cell = &mut owner[slot as usize];
                    if *cell != UNASSIGNED && *cell as usize != index {
                        return Err(InvalidTopology::new(format!(
                            "slot {slot} claimed by two shards"
                        )));
                    }
                    *cell = index as u16;
                }
            }
        }
        for (index, shard) in shards.iter_mut().enumerate() {
            shard.slots = ranges_owned_by(&owner, index);
        }
        let assigned = owner.iter().filter(|&&s| s != UNASSIGNED).count();
        Ok(Topology {
            nodes,
            shards,
            slot_owner: owner,
            assigned,
            fetched_at: Instant::now(),
        })
    }

    /// The shard serving `slot`, if any.
    pub fn shard_of_slot(&self, slot: u16) -> Option<usize> {
        match self.slot_owner.get(slot as usize) {
            Some(&owner) if owner != UNASSIGNED => Some(owner as usize),
            _ => None,
        }
    }

    /// The primary serving `slot`, if any.
    pub fn primary_of_slot(&self, slot: u16) -> Option<&Node> {
        let shard = self.shards.get(self.shard_of_slot(slot)?)?;
        self.nodes.get(shard.primary)
    }

    /// How many of the 16384 slots have an owner.
    pub fn assigned_slots(&self) -> usize {
        self.assigned
    }

    /// True when every slot has an owner (the proxy can serve any key).
    pub fn covers_all_slots(&self) -> bool {
        self.assigned == SLOTS
    }

    /// The node with this cluster node ID.
    pub fn node_by_id(&self, id: &str) -> Option<(usize, &Node)> {
        self.nodes.iter().enumerate().find(|(_, n)| n.id == id)
    }

    /// The node at this resolved address.
    pub fn node_by_addr(&self, addr: SocketAddr) -> Option<(usize, &Node)> {
        self.nodes.iter().enumerate().find(|(_, n)| n.addr == addr)
    }

    /// The node announced as `endpoint:port` (for redirects that name a host rather than an IP).
    pub fn node_by_endpoint(&self, endpoint: &str, port: u16) -> Option<(usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.port == port && n.endpoint.eq_ignore_ascii_case(endpoint))
    }

    /// The shard whose primary is node `node`.
    pub fn shard_of_primary(&self, node: usize) -> Option<usize> {
        self.shards.iter().position(|s| s.primary == node)
    }

    /// The primaries with their node index, in shard order.
    pub fn primaries(&self) -> impl Iterator<Item = (usize, &Node)> + '_ {
        self.shards
            .iter()
            .filter_map(|s| self.nodes.get(s.primary).map(|n| (s.primary, n)))
    }

    /// A copy with `slot` given to the shard whose primary is at `to` (the `-MOVED` fast path).
    ///
    /// `None` when `to` is not a known primary (a refresh must tell where it belongs) or the slot is
    /// out of range. The copy keeps `fetched_at`: it is still based on that fetch.
    pub fn with_slot_moved(&self, slot: u16, to: SocketAddr) -> Option<Topology> {
        let (node, _) = self.node_by_addr(to)?;
        self.with_slot_moved_to_node(slot, node)
    }

    /// Like [`Topology::with_slot_moved`], naming the target by node index.
    pub fn with_slot_moved_to_node(&self, slot: u16, node: usize) -> Option<Topology> {
        let target = self.shard_of_primary(node)?;
        if slot as usize >= SLOTS {
            return None;
        }
        let mut copy = self.clone();
        let previous = copy.slot_owner[slot as usize];
        copy.slot_owner[slot as usize] = target as u16;
        if previous == UNASSIGNED {
            copy.assigned += 1;
        } else if let Some(old) = copy.shards.get_mut(previous as usize) {
            old.slots = ranges_owned_by(&copy.slot_owner, previous as usize);
        }
        copy.shards[target].slots = ranges_owned_by(&copy.slot_owner, target);
        Some(copy)
    }

    /// The primary's node ID for every slot (`None` when unassigned), for comparing snapshots.
    pub(crate) fn owner_id(&self, slot: usize) -> Option<&str> {
        let shard = *self.slot_owner.get(slot)?;
        if shard == UNASSIGNED {
            return None;
        }
        let shard = self.shards.get(shard as usize)?;
        self.nodes.get(shard.primary).map(|n| n.id.as_str())
    }
}

fn check_node_indexes(shard: &Shard, node_count: usize) -> Result<(), InvalidTopology> {
    let bad = std::iter::once(shard.primary)
        .chain(shard.replicas.iter().copied())
        .find(|&i| i >= node_count);
    match bad {
        Some(i) => Err(InvalidTopology::new(format!(
            "shard names node {i} of {node_count}"
        ))),
        None => Ok(()),
    }
}

/// The inclusive, merged ranges of slots whose owner is `shard`.
fn ranges_owned_by(owner: &[u16], shard: usize) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for (slot, &o) in owner.iter().enumerate() {
        if o as usize != shard || o == UNASSIGNED {
            continue;
        }
        let slot = slot as u16;
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == slot => *end = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    ranges
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node(id: &str, port: u16, role: Role) -> Node {
        Node {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            endpoint: "127.0.0.1".to_owned(),
            port,
            role,
            health: Health::Online,
        }
    }

    /// Three shards a/b/c on ports 7001-7003 with one replica each, splitting the slots like redis-cli.
    pub(crate) fn three_shards() -> Topology {
        let nodes = vec![
            node("a", 7001, Role::Primary),
            node("b", 7002, Role::Primary),
            node("c", 7003, Role::Primary),
            node("a1", 7004, Role::Replica),
            node("b1", 7005, Role::Replica),
            node("c1", 7006, Role::Replica),
        ];
        let shard = |p, r, slots| Shard {
            primary: p,
            replicas: vec![r],
            slots,
        };
        let shards = vec![
            shard(0, 3, vec![(0, 5460)]),
            shard(1, 4, vec![(5461, 10922)]),
            shard(2, 5, vec![(10923, 16383)]),
        ];
        Topology::new(nodes, shards).unwrap()
    }

    #[test]
    fn slot_lookup_and_coverage() {
        let t = three_shards();
        assert!(t.covers_all_slots());
        assert_eq!(t.shard_of_slot(0), Some(0));
        assert_eq!(t.shard_of_slot(5461), Some(1));
        assert_eq!(t.primary_of_slot(16383).unwrap().id, "c");
        assert_eq!(t.shard_of_slot(16384), None);
        assert_eq!(t.node_by_id("b1").unwrap().0, 4);
        let addr = SocketAddr::from(([127, 0, 0, 1], 7002));
        assert_eq!(t.node_by_addr(addr).unwrap().1.id, "b");
        assert_eq!(t.node_by_endpoint("127.0.0.1", 7003).unwrap().1.id, "c");
        let ids: Vec<_> = t.primaries().map(|(_, n)| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn partial_coverage_is_reported() {
        let nodes = vec![node("a", 7001, Role::Primary)];
        let shards = vec![Shard {
            primary: 0,
            replicas: vec![],
            slots: vec![(100, 199), (0, 99)],
        }];
        let t = Topology::new(nodes, shards).unwrap();
        assert!(!t.covers_all_slots());
        assert_eq!(t.assigned_slots(), 200);
        assert_eq!(t.shards[0].slots, [(0, 199)], "ranges sorted and merged");
        assert_eq!(t.primary_of_slot(200), None);
    }

    #[test]
    fn rejects_overlaps_and_bad_indexes() {
        let nodes = vec![
            node("a", 7001, Role::Primary),
            node("b", 7002, Role::Primary),
        ];
        let shard = |p, slots| Shard {
            primary: p,
            replicas: vec![],
            slots,
        };
        let overlap = vec![shard(0, vec![(0, 10)]), shard(1, vec![(10, 20)])];
        assert!(Topology::new(nodes.clone(), overlap).is_err());
        assert!(Topology::new(nodes.clone(), vec![shard(2, vec![])]).is_err());
        assert!(Topology::new(nodes.clone(), vec![shard(0, vec![(5, 4)])]).is_err());
        assert!(Topology::new(nodes, vec![shard(0, vec![(0, 16384)])]).is_err());
    }

    #[test]
    fn slot_moved_fast_path() {
        let t = three_shards();
        let to = SocketAddr::from(([127, 0, 0, 1], 7003));
        let moved = t.with_slot_moved(100, to).unwrap();
        assert_eq!(moved.primary_of_slot(100).unwrap().id, "c");
        assert_eq!(moved.shards[0].slots, [(0, 99), (101, 5460)]);
        assert_eq!(moved.shards[2].slots, [(100, 100), (10923, 16383)]);
        assert!(moved.covers_all_slots());
        assert_eq!(moved.fetched_at, t.fetched_at);
        // The original is untouched.
        assert_eq!(t.primary_of_slot(100).unwrap().id, "a");
        // Unknown address, a replica, or a bad slot: no fast path.
        assert!(t
            .with_slot_moved(1, SocketAddr::from(([10, 0, 0, 1], 7003)))
            .is_none());
        assert!(t
            .with_slot_moved(1, SocketAddr::from(([127, 0, 0, 1], 7004)))
            .is_none());
        assert!(t.with_slot_moved(16384, to).is_none());
    }

    #[test]
    fn slot_moved_into_an_unassigned_slot_counts_it() {
        let nodes = vec![node("a", 7001, Role::Primary)];
        let shards = vec![Shard {
            primary: 0,
            replicas: vec![],
            slots: vec![(0, 16382)],
        }];
        let t = Topology::new(nodes, shards).unwrap();
        assert!(!t.covers_all_slots());
        let moved = t
            .with_slot_moved(16383, SocketAddr::from(([127, 0, 0, 1], 7001)))
            .unwrap();
        assert!(moved.covers_all_slots());
        assert_eq!(moved.shards[0].slots, [(0, 16383)]);
    }
}
