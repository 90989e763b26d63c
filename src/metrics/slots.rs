//! Requests per hash slot, counted in per-thread arrays of atomics (one uncontended add per
//! keyed request, no labels: a shared array would bounce cache lines between cores on every
//! request), and per shard, folded from the slot counters whenever the slot map changes so
//! shard totals stay monotonic while slots move between shards.

use super::shard;
use crate::cluster::topology::{Topology, SLOTS};
use crate::sync::Mutex;

/// Counts one keyed request for `slot` (process-wide, shared by every proxy in the process).
#[inline]
pub fn count_slot(slot: u16) {
    shard::with(|s| s.count_slot(slot));
}

/// Keyed requests per slot since the process started, indexed by slot.
pub fn slot_ops() -> Vec<u64> {
    shard::slot_totals()
}

/// The `n` slots with the most requests, busiest first (slots without traffic are left out).
pub fn hottest_slots(n: usize) -> Vec<(u16, u64)> {
    let mut all: Vec<(u16, u64)> = slot_ops()
        .into_iter()
        .enumerate()
        .map(|(s, ops)| (s as u16, ops))
        .filter(|&(_, ops)| ops > 0)
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

/// Shard numbers as the proxy reports them: shards ordered by their lowest slot (shards
/// without slots last, by primary node ID), so the numbers match how clusters are usually
/// built (shard 0 holds slot 0) and do not change when a replica takes over.
pub fn shard_numbers(t: &Topology) -> Vec<usize> {
    let mut order: Vec<usize> = (0..t.shards.len()).collect();
    order.sort_by(|&a, &b| {
        let first = |i: usize| t.shards[i].slots.first().map(|r| r.0);
        let id = |i: usize| t.nodes.get(t.shards[i].primary).map(|n| n.id.as_str());
        match (first(a), first(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => id(a).cmp(&id(b)),
        }
    });
    let mut number = vec![0; t.shards.len()];
    for (n, &shard) in order.iter().enumerate() {
        number[shard] = n;
    }
    number
}

/// Per-shard totals of one proxy.
#[derive(Debug, Default)]
pub struct ShardOps {
    inner: Mutex<Fold>,
}

#[derive(Debug, Default)]
struct Fold {
    /// Slot → shard number under the current map (`None`: unassigned).
    owner: Vec<Option<usize>>,
    /// Requests attributed to each shard number before the last fold.
    base: Vec<u64>,
    /// Slot counters at the last fold.
    snapshot: Vec<u64>,
}

impl ShardOps {
    /// Attributes the requests counted since the last change to the old map, then switches to
    /// `t`'s map.
    pub fn on_topology(&self, t: &Topology) {
        let numbers = shard_numbers(t);
        let mut f = self.inner.lock();
        let now = slot_ops();
        if f.snapshot.is_empty() {
            // First map: requests before it reached no shard.
            f.snapshot = now.clone();
        }
        let Fold {
            owner,
            base,
            snapshot,
        } = &mut *f;
        for ((owner, now), then) in owner.iter().zip(&now).zip(snapshot.iter()) {
            if let Some(shard) = *owner {
                grow(base, shard)[shard] += now.saturating_sub(*then);
            }
        }
        f.snapshot = now;
        f.owner = (0..SLOTS as u16)
            .map(|s| t.shard_of_slot(s).map(|i| numbers[i]))
            .collect();
        grow(&mut f.base, t.shards.len().saturating_sub(1));
    }

    /// Requests per shard number since start.
    pub fn totals(&self) -> Vec<u64> {
        let f = self.inner.lock();
        let mut out = f.base.clone();
        let now = slot_ops();
        for ((owner, now), then) in f.owner.iter().zip(&now).zip(&f.snapshot) {
            if let Some(shard) = *owner {
                grow(&mut out, shard)[shard] += now.saturating_sub(*then);
            }
        }
        out
    }
}

fn grow(v: &mut Vec<u64>, index: usize) -> &mut Vec<u64> {
    if v.len() <= index {
        v.resize(index + 1, 0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::tests::three_shards;

    #[test]
    fn shards_are_numbered_by_lowest_slot() {
        let t = three_shards();
        let numbers = shard_numbers(&t);
        for (i, shard) in t.shards.iter().enumerate() {
            let first = shard.slots[0].0;
            let lower = t
                .shards
                .iter()
                .filter(|s| s.slots.first().is_some_and(|r| r.0 < first))
                .count();
            assert_eq!(numbers[i], lower);
        }
    }

    #[test]
    fn shard_totals_follow_moved_slots_and_stay_monotonic() {
        // Slot counters are process-wide; other tests may count concurrently, so compare
        // totals against the slot counters' own deltas rather than absolute numbers.
        let t = three_shards();
        let ops = ShardOps::default();
        ops.on_topology(&t);
        let slot = 16000u16;
        let from = shard_numbers(&t)[t.shard_of_slot(slot).unwrap()];
        let before = ops.totals();
        for _ in 0..5 {
            count_slot(slot);
        }
        let mid = ops.totals();
        assert!(mid[from] >= before[from] + 5);
        let target = t.nodes[t.shards[0].primary].addr;
        let moved = t.with_slot_moved(slot, target).unwrap();
        ops.on_topology(&moved);
        let to = shard_numbers(&moved)[0];
        let after_move = ops.totals();
        assert!(after_move[from] >= mid[from]);
        count_slot(slot);
        let last = ops.totals();
        assert!(last[to] > after_move[to]);
        assert!(last.iter().zip(&after_move).all(|(a, b)| a >= b));
    }
}
