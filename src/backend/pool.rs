//! Per-node pools of multiplexed connections and the registry of pools by node address.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;

use super::conn::{BackendConn, ConnSettings};
use super::BackendRequest;

/// A few multiplexed connections to one node, shared by all clients.
#[derive(Debug)]
pub struct NodePool {
    addr: SocketAddr,
    conns: Vec<BackendConn>,
}

impl NodePool {
    /// Opens `size` connections to the node described by `settings`.
    pub fn new(settings: ConnSettings, size: usize) -> Self {
        let addr = settings.addr;
        let settings = Arc::new(settings);
        let conns = (0..size.max(1))
            .map(|_| BackendConn::spawn(settings.clone()))
            .collect();
        Self { addr, conns }
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request on the connection `affinity` selects. One client always uses the same
    /// connection to a node, so its pipelined requests to that node run in the order it sent
    /// them (a SET then GET of one key must not race on two connections). While that
    /// connection is down the request fails as not sent and the session retries it: a sibling
    /// connection is not used, because when a node dies its other connections have often not
    /// yet read the end of their stream, and a write put on one of them would end with an
    /// unknown outcome instead of a safe retry.
    pub async fn send(&self, req: BackendRequest, affinity: usize) {
        self.conns[affinity % self.conns.len()].send(req).await;
    }

    /// True when at least one connection is established.
    pub fn is_connected(&self) -> bool {
        self.conns.iter().any(BackendConn::is_connected)
    }
}

/// Every node pool the proxy has, keyed by address; the routing table holds the pools it
/// needs directly, so this map is only touched on topology changes and redirects.
#[derive(Debug)]
pub struct Backends {
    template: ConnSettings,
    size: usize,
    pools: DashMap<(SocketAddr, bool), Arc<NodePool>>,
}

impl Backends {
    /// A registry whose pools use `template` (its address ignored) and `size` connections.
    pub fn new(template: ConnSettings, size: usize) -> Self {
        Self {
            template,
            size,
            pools: DashMap::new(),
        }
    }

    /// The pool for `addr`, created on first use. `readonly` pools send `READONLY` (replica reads).
    pub fn pool(&self, addr: SocketAddr, readonly: bool) -> Arc<NodePool> {
        self.pools
            .entry((addr, readonly))
            .or_insert_with(|| {
                let mut s = self.template.clone();
                s.addr = addr;
                s.readonly = readonly;
                Arc::new(NodePool::new(s, self.size))
            })
            .clone()
    }

    /// Drops pools of nodes no longer in the cluster; their connections close once in-flight
    /// requests holding them finish.
    pub fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        self.pools.retain(|(addr, _), _| keep(*addr));
    }

    /// Addresses with a pool.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.pools.iter().map(|e| e.key().0).collect()
    }
}
