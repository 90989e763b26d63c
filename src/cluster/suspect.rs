//! Primaries suspected down: the refresher polls the topology quickly while one of them is still
//! named primary of some slots, so a promoted replica is used within moments of its election
//! instead of at the next periodic refresh.
//!
//! A suspicion is raised by the data path when a connection to a node fails, and lapses on its own
//! after a window unless renewed; it also ends as soon as the published topology no longer names
//! the node primary of any slot (the failover happened, or the node left). The window bounds the
//! fast polling when a node stays down but nobody fails over (no replica, cluster down).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::topology::Topology;
use crate::sync::Mutex;

/// The set of suspected primaries, each with the moment its suspicion lapses.
#[derive(Debug)]
pub(crate) struct Suspects {
    window: Duration,
    until: Mutex<Vec<(SocketAddr, Instant)>>,
}

impl Suspects {
    /// An empty set whose suspicions last `window` after their last renewal.
    pub(crate) fn new(window: Duration) -> Self {
        Suspects {
            window,
            until: Mutex::new(Vec::new()),
        }
    }

    /// Suspects the node at `addr` if `current` names it primary of some slots; true if it does.
    pub(crate) fn note(&self, addr: SocketAddr, current: Option<&Topology>) -> bool {
        if !current.is_some_and(|t| serves_slots(t, addr)) {
            return false;
        }
        let until = Instant::now() + self.window;
        let mut set = self.until.lock();
        match set.iter_mut().find(|(a, _)| *a == addr) {
            Some(entry) => entry.1 = until,
            None => set.push((addr, until)),
        }
        true
    }

    /// Drops lapsed suspicions and those `current` has resolved; true while any remains.
    pub(crate) fn active(&self, current: Option<&Topology>) -> bool {
        let now = Instant::now();
        let mut set = self.until.lock();
        set.retain(|&(addr, until)| until > now && current.is_some_and(|t| serves_slots(t, addr)));
        !set.is_empty()
    }

    /// True when `addr` is currently suspected (lapsed entries included until the next prune).
    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.until.lock().iter().any(|(a, _)| *a == addr)
    }
}

/// True when the node at `addr` is the primary of a shard that serves at least one slot.
fn serves_slots(t: &Topology, addr: SocketAddr) -> bool {
    t.shards
        .iter()
        .any(|s| !s.slots.is_empty() && t.nodes.get(s.primary).is_some_and(|n| n.addr == addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::tests::three_shards;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn only_slot_serving_primaries_are_suspected() {
        let t = three_shards();
        let s = Suspects::new(Duration::from_secs(10));
        assert!(!s.note(addr(7001), None), "no topology, nothing to suspect");
        assert!(!s.note(addr(7004), Some(&t)), "a replica is not suspected");
        assert!(
            !s.note(addr(9999), Some(&t)),
            "an unknown node is not suspected"
        );
        assert!(!s.active(Some(&t)));
        assert!(s.note(addr(7001), Some(&t)));
        assert!(s.contains(addr(7001)));
        assert!(s.active(Some(&t)));
    }

    #[test]
    fn a_suspicion_ends_when_the_node_no_longer_serves_slots() {
        let t = three_shards();
        let s = Suspects::new(Duration::from_secs(10));
        assert!(s.note(addr(7001), Some(&t)));
        // The replica at 7004 took over shard 0's slots.
        let mut promoted = t.clone();
        promoted.shards[0].primary = 3;
        let promoted = Topology::new(promoted.nodes, promoted.shards).unwrap();
        assert!(!s.active(Some(&promoted)));
        assert!(!s.contains(addr(7001)));
    }

    #[test]
    fn a_suspicion_lapses_after_its_window_unless_renewed() {
        let t = three_shards();
        let s = Suspects::new(Duration::from_millis(300));
        assert!(s.note(addr(7002), Some(&t)));
        std::thread::sleep(Duration::from_millis(200));
        assert!(s.note(addr(7002), Some(&t)), "renewed");
        std::thread::sleep(Duration::from_millis(200));
        assert!(s.active(Some(&t)), "the renewal counts from its own time");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!s.active(Some(&t)));
    }
}
