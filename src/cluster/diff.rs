//! What changed between two snapshots, summarised for one log line per topology change.

use std::collections::HashMap;
use std::fmt;

use super::topology::{Node, Topology, SLOTS};

/// How many moved ranges a summary lists before it only counts them.
const MAX_LISTED_RANGES: usize = 8;

/// The differences that matter to routing between two snapshots (fetch time is ignored).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopologyDiff {
    /// Slots whose primary (by node ID) changed, including slots that became (un)assigned.
    pub moved_slots: usize,
    /// The first few moved slot ranges, inclusive.
    pub moved_ranges: Vec<(u16, u16)>,
    /// Moved ranges not listed in `moved_ranges`.
    pub more_ranges: usize,
    /// IDs of nodes that are primaries now and were not before.
    pub new_primaries: Vec<String>,
    /// IDs of nodes that were primaries and are not any more.
    pub former_primaries: Vec<String>,
    /// Node changes: "+id", "-id", "id addr→addr", "id online→failed".
    pub nodes: Vec<String>,
}

impl TopologyDiff {
    /// Compares `old` with `new`.
    pub fn between(old: &Topology, new: &Topology) -> TopologyDiff {
        let mut diff = TopologyDiff::default();
        diff.compare_slots(old, new);
        let primaries =
            |t: &Topology| -> Vec<String> { t.primaries().map(|(_, n)| n.id.clone()).collect() };
        let (old_p, new_p) = (primaries(old), primaries(new));
        diff.new_primaries = new_p
            .iter()
            .filter(|id| !old_p.contains(id))
            .cloned()
            .collect();
        diff.former_primaries = old_p
            .iter()
            .filter(|id| !new_p.contains(id))
            .cloned()
            .collect();
        diff.compare_nodes(old, new);
        diff
    }

    /// True when nothing routing-relevant changed.
    pub fn is_empty(&self) -> bool {
        self.moved_slots == 0
            && self.new_primaries.is_empty()
            && self.former_primaries.is_empty()
            && self.nodes.is_empty()
    }

    fn compare_slots(&mut self, old: &Topology, new: &Topology) {
        let mut open: Option<(u16, u16)> = None;
        for slot in 0..SLOTS {
            if old.owner_id(slot) == new.owner_id(slot) {
                if let Some(range) = open.take() {
                    self.push_range(range);
                }
                continue;
            }
            self.moved_slots += 1;
            let slot = slot as u16;
            open = match open {
                Some((start, _)) => Some((start, slot)),
                None => Some((slot, slot)),
            };
        }
        if let Some(range) = open {
            self.push_range(range);
        }
    }

    fn push_range(&mut self, range: (u16, u16)) {
        if self.moved_ranges.len() < MAX_LISTED_RANGES {
            self.moved_ranges.push(range);
        } else {
            self.more_ranges += 1;
        }
    }

    fn compare_nodes(&mut self, old: &Topology, new: &Topology) {
        let before: HashMap<&str, &Node> = old.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        for node in &new.nodes {
            let Some(prev) = before.get(node.id.as_str()) else {
                self.nodes.push(format!("+{}@{}", node.id, node.addr));
                continue;
            };
            if prev.addr != node.addr || prev.endpoint != node.endpoint {
                self.nodes
                    .push(format!("{} {}→{}", node.id, prev.addr, node.addr));
            }
            if prev.health != node.health {
                self.nodes
                    .push(format!("{} {:?}→{:?}", node.id, prev.health, node.health));
            }
        }
        for node in &old.nodes {
            if new.node_by_id(&node.id).is_none() {
                self.nodes.push(format!("-{}", node.id));
            }
        }
    }
}

impl fmt::Display for TopologyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} slots moved", self.moved_slots)?;
        if !self.moved_ranges.is_empty() {
            let ranges: Vec<String> = self
                .moved_ranges
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            write!(f, " [{}", ranges.join(","))?;
            if self.more_ranges > 0 {
                write!(f, ", +{} ranges", self.more_ranges)?;
            }
            f.write_str("]")?;
        }
        if !self.new_primaries.is_empty() {
            write!(f, "; new primaries {}", self.new_primaries.join(","))?;
        }
        if !self.former_primaries.is_empty() {
            write!(
                f,
                "; no longer primaries {}",
                self.former_primaries.join(",")
            )?;
        }
        if !self.nodes.is_empty() {
            write!(f, "; nodes {}", self.nodes.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::tests::three_shards;
    use crate::cluster::topology::Health;
    use std::net::SocketAddr;

    #[test]
    fn identical_snapshots_have_no_diff() {
        let (a, b) = (three_shards(), three_shards());
        assert!(TopologyDiff::between(&a, &b).is_empty());
    }

    #[test]
    fn moved_slots_and_node_changes_are_summarised() {
        let old = three_shards();
        let to = SocketAddr::from(([127, 0, 0, 1], 7002));
        let mut new = old
            .with_slot_moved(7, to)
            .unwrap()
            .with_slot_moved(8, to)
            .unwrap();
        new.nodes[4].health = Health::Failed;
        new.nodes[5].addr = SocketAddr::from(([127, 0, 0, 2], 7006));
        let diff = TopologyDiff::between(&old, &new);
        assert_eq!(diff.moved_slots, 2);
        assert_eq!(diff.moved_ranges, [(7, 8)]);
        assert_eq!(diff.nodes.len(), 2);
        let line = diff.to_string();
        assert!(
            line.starts_with("2 slots moved [7-8]; nodes b1 Online→Failed"),
            "{line}"
        );
    }

    #[test]
    fn failover_shows_primaries() {
        let old = three_shards();
        let mut new = old.clone();
        // a1 takes over a's slots.
        new.shards[0].primary = 3;
        new.shards[0].replicas = vec![0];
        let diff = TopologyDiff::between(&old, &new);
        assert_eq!(diff.moved_slots, 5461);
        assert_eq!(diff.new_primaries, ["a1"]);
        assert_eq!(diff.former_primaries, ["a"]);
    }
}
