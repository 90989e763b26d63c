//! The routing table: which node pool serves each slot, rebuilt from every topology snapshot
//! and read lock-free (one ArcSwap load) on the request path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::backend::{BackendError, Backends, NodePool};
use crate::cluster::refresh::TopologyHandle;
use crate::cluster::topology::{Health, Topology};
use crate::command::CommandTable;
use crate::config::ReadPolicy;

/// An immutable view: the topology plus the pools of each shard's primary and replicas.
#[derive(Debug)]
pub struct RoutingTable {
    /// The snapshot this table was built from.
    pub topology: Arc<Topology>,
    primaries: Vec<Arc<NodePool>>,
    /// Per shard, the pools (sending `READONLY`) of replicas reported online; empty unless a
    /// replica read policy is configured.
    replicas: Vec<Vec<Arc<NodePool>>>,
}

impl RoutingTable {
    /// The pool of the primary owning `slot`, if the slot is served.
    pub fn primary_for_slot(&self, slot: u16) -> Option<&Arc<NodePool>> {
        self.primaries.get(self.topology.shard_of_slot(slot)?)
    }

    /// One primary for a keyless command, rotating by `hint`.
    /// Primaries the cluster marks failed are skipped (after a failover the dead primary still
    /// leads a shard without slots until it comes back as a replica).
    pub fn any_primary(&self, hint: usize) -> Option<&Arc<NodePool>> {
        let t = &self.topology;
        let usable = |&i: &usize| {
            t.shards
                .get(i)
                .and_then(|s| t.nodes.get(s.primary))
                .is_some_and(|n| n.health != Health::Failed)
        };
        let count = (0..self.primaries.len()).filter(usable).count();
        if count == 0 {
            return self.primaries.get(hint % self.primaries.len().max(1));
        }
        let pick = (0..self.primaries.len()).filter(usable).nth(hint % count)?;
        self.primaries.get(pick)
    }

    /// Every primary's pool, one per shard.
    pub fn primaries(&self) -> &[Arc<NodePool>] {
        &self.primaries
    }

    /// The pool a read-only command for `slot` goes to under `policy`: a connected replica of
    /// the slot's shard (chosen by `pick`), else the primary.
    pub fn reader_for_slot(
        &self,
        slot: u16,
        policy: ReadPolicy,
        pick: usize,
    ) -> Option<&Arc<NodePool>> {
        let shard = self.topology.shard_of_slot(slot)?;
        if policy != ReadPolicy::Primary {
            let replicas = self.replicas.get(shard).map_or(&[][..], Vec::as_slice);
            let n = replicas.len();
            let found = (0..n)
                .map(|i| &replicas[(pick + i) % n])
                .find(|p| p.is_connected());
            if found.is_some() {
                return found;
            }
        }
        self.primaries.get(shard)
    }
}

/// Shared routing state of the proxy.
pub struct Router {
    table: ArcSwapOption<RoutingTable>,
    commands: ArcSwap<CommandTable>,
    backends: Arc<Backends>,
    topology: OnceLock<TopologyHandle>,
    rotate: AtomicUsize,
    read_policy: ReadPolicy,
    asks: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no topology yet.
    pub fn new(backends: Arc<Backends>, commands: CommandTable, read_policy: ReadPolicy) -> Self {
        Self {
            read_policy,
            table: ArcSwapOption::empty(),
            commands: ArcSwap::from_pointee(commands),
            backends,
            topology: OnceLock::new(),
            rotate: AtomicUsize::new(0),
            asks: AtomicU64::new(0),
        }
    }

    /// Connects the router to the refresher that feeds it (set once at start-up).
    pub fn attach(&self, handle: TopologyHandle) {
        let _ = self.topology.set(handle);
    }

    /// The topology refresher, once attached.
    pub fn topology(&self) -> Option<&TopologyHandle> {
        self.topology.get()
    }

    /// Rebuilds the routing table from a new snapshot and drops pools of departed nodes.
    pub fn install(&self, topology: &Arc<Topology>) {
        let primaries = topology
            .shards
            .iter()
            .map(|shard| {
                let node = &topology.nodes[shard.primary];
                self.backends.pool(node.addr, false)
            })
            .collect();
        let replicas = topology
            .shards
            .iter()
            .map(|shard| {
                if self.read_policy == ReadPolicy::Primary {
                    return Vec::new();
                }
                shard
                    .replicas
                    .iter()
                    .map(|&i| &topology.nodes[i])
                    .filter(|n| n.health == Health::Online)
                    .map(|n| self.backends.pool(n.addr, true))
                    .collect()
            })
            .collect();
        self.table.store(Some(Arc::new(RoutingTable {
            topology: topology.clone(),
            primaries,
            replicas,
        })));
        let known: Vec<SocketAddr> = topology.nodes.iter().map(|n| n.addr).collect();
        self.backends.retain(|addr| known.contains(&addr));
    }

    /// The current routing table, if a topology has been learned.
    pub fn table(&self) -> arc_swap::Guard<Option<Arc<RoutingTable>>> {
        self.table.load()
    }

    /// The command table in force.
    pub fn commands(&self) -> arc_swap::Guard<Arc<CommandTable>> {
        self.commands.load()
    }

    /// Replaces the command table (after learning from the cluster).
    pub fn set_commands(&self, table: CommandTable) {
        self.commands.store(Arc::new(table));
    }

    /// The pool for a node of the current topology; None for any other address, so no
    /// connection, pool or credential ever goes to a node that is not a member.
    pub fn pool_for_addr(&self, addr: SocketAddr) -> Option<Arc<NodePool>> {
        self.is_member(addr)
            .then(|| self.backends.pool(addr, false))
    }

    /// Addresses that have a backend pool (only members: see [`Router::pool_for_addr`]).
    pub fn pool_addrs(&self) -> Vec<SocketAddr> {
        self.backends.addrs()
    }

    /// True when `addr` is a node of the current topology.
    pub fn is_member(&self, addr: SocketAddr) -> bool {
        self.table()
            .as_ref()
            .is_some_and(|t| super::trust::is_member(&t.topology, addr))
    }

    /// The configured read policy.
    pub fn read_policy(&self) -> ReadPolicy {
        self.read_policy
    }

    /// A rotating counter for spreading keyless commands over primaries.
    pub fn next_rotation(&self) -> usize {
        self.rotate.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a `MOVED`: the slot's new owner is used at once if it is a primary of the
    /// topology (anything else only asks for the refresh that follows either way).
    pub fn note_moved(&self, slot: u16, to: SocketAddr) {
        let Some(handle) = self.topology.get() else {
            return;
        };
        if let Some(current) = handle.current() {
            if let Some(updated) = current.with_slot_moved(slot, to) {
                handle.publish(updated);
            }
        }
        handle.request_refresh();
    }

    /// Counts one `-ASK` redirect followed.
    pub fn note_ask(&self) {
        self.asks.fetch_add(1, Ordering::Relaxed);
    }

    /// `-ASK` redirects followed since start (tests use it to prove the ASK path ran).
    pub fn ask_redirects(&self) -> u64 {
        self.asks.load(Ordering::Relaxed)
    }

    /// Reports a request a node could not answer: if the node is a primary serving slots, a
    /// failover is suspected and the topology is polled quickly until it shows the outcome.
    pub fn note_failure(&self, err: &BackendError) {
        if let (Some(addr), Some(handle)) = (super::retry::failed_node(err), self.topology.get()) {
            handle.suspect(addr);
        }
    }

    /// Asks for a topology refresh (coalesced with others in flight).
    pub fn request_refresh(&self) {
        if let Some(handle) = self.topology.get() {
            handle.request_refresh();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ConnSettings;
    use crate::cluster::topology::{Node, Role, Shard};

    /// Two shards with slots, and the dead primary a failover replaced: failed, no slots.
    fn after_failover() -> Router {
        let node = |i: u16, health| Node {
            id: format!("{i:040}"),
            addr: format!("127.0.0.1:{}", 1 + i).parse().unwrap(),
            endpoint: "127.0.0.1".into(),
            port: 1 + i,
            role: Role::Primary,
            health,
        };
        let nodes = vec![
            node(0, Health::Online),
            node(1, Health::Failed),
            node(2, Health::Online),
        ];
        let shard = |p, slots: Vec<(u16, u16)>| Shard {
            primary: p,
            replicas: vec![],
            slots,
        };
        let topo = Topology::new(
            nodes,
            vec![
                shard(0, vec![(0, 8191)]),
                shard(1, vec![]),
                shard(2, vec![(8192, 16383)]),
            ],
        )
        .unwrap();
        let settings = ConnSettings {
            addr: "127.0.0.1:1".parse().unwrap(),
            connect_timeout: std::time::Duration::from_millis(100),
            command_timeout: std::time::Duration::from_millis(100),
            backoff_min: std::time::Duration::from_secs(60),
            backoff_max: std::time::Duration::from_secs(60),
            queue_depth: 4,
            max_reply_bytes: 1 << 20,
            auth: None,
            readonly: false,
            metrics: false,
            wait: None,
            tls: None,
        };
        let router = Router::new(
            Arc::new(Backends::new(settings, 1)),
            CommandTable::builtin(),
            ReadPolicy::Primary,
        );
        router.install(&Arc::new(topo));
        router
    }

    #[tokio::test]
    async fn pools_only_for_members_and_only_while_they_are() {
        let router = after_failover();
        let outsider: SocketAddr = "127.0.0.1:18999".parse().unwrap();
        assert!(router.pool_for_addr(outsider).is_none());
        assert!(!router.pool_addrs().contains(&outsider));
        let member: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(router.pool_for_addr(member).is_some());
        assert!(router.pool_addrs().contains(&member));
        // The failed node leaves the topology: its pool goes with it.
        let current = router.table().as_ref().unwrap().topology.clone();
        let mut nodes = current.nodes.clone();
        let mut shards = current.shards.clone();
        nodes.remove(1);
        shards.remove(1);
        shards[1].primary = 1;
        router.install(&Arc::new(Topology::new(nodes, shards).unwrap()));
        assert!(!router.pool_addrs().contains(&member));
        assert!(router.pool_for_addr(member).is_none());
    }

    #[tokio::test]
    async fn keyless_commands_skip_a_failed_primary() {
        let router = after_failover();
        let table = router.table();
        let t = table.as_ref().unwrap();
        let dead: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let picked: Vec<SocketAddr> = (0..10)
            .map(|hint| t.any_primary(hint).unwrap().addr())
            .collect();
        assert!(!picked.contains(&dead), "{picked:?}");
        assert!(picked.contains(&"127.0.0.1:1".parse().unwrap()));
        assert!(picked.contains(&"127.0.0.1:3".parse().unwrap()));
    }
}
