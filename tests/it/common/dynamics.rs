//! Changing a running test cluster the way operators do: manual failover, live slot migration
//! (the `SETSLOT IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT NODE` sequence `redis-cli --cluster
//! reshard` runs), and the role/ownership queries those need. Everything goes straight to the
//! nodes, never through the proxy.

use std::time::{Duration, Instant};

use slotway::local::Reply;

use super::cluster::{wait_until, TestCluster};

/// Keys moved per `MIGRATE` call.
const MIGRATE_BATCH: usize = 100;

/// One line of `CLUSTER NODES`, reduced to what the helpers need.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Node ID.
    pub id: String,
    /// `ip:port` (no bus port).
    pub addr: String,
    /// Flags without `myself`.
    pub flags: Vec<String>,
    /// The primary's ID for a replica.
    pub primary: Option<String>,
    /// Slots owned (migrations in progress left out).
    pub slots: Vec<u16>,
}

impl NodeEntry {
    /// True for a primary not flagged failed.
    pub fn is_live_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
            && !self.flags.iter().any(|f| f.starts_with("fail"))
    }
}

/// Parses `CLUSTER NODES` text.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeEntry> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let mut slots = Vec::new();
        for s in f[8..].iter().filter(|s| !s.starts_with('[')) {
            match s.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u16, u16) = (a.parse().unwrap(), b.parse().unwrap());
                    slots.extend(a..=b);
                }
                None => slots.push(s.parse().unwrap()),
            }
        }
        out.push(NodeEntry {
            id: f[0].to_string(),
            addr: f[1].split('@').next().unwrap_or_default().to_string(),
            flags: f[2]
                .split(',')
                .filter(|x| *x != "myself")
                .map(String::from)
                .collect(),
            primary: (f[3] != "-").then(|| f[3].to_string()),
            slots,
        });
    }
    out
}

impl TestCluster {
    /// `CLUSTER NODES` as node `i` sees it.
    pub fn cluster_nodes(&self, i: usize) -> Vec<NodeEntry> {
        let text = self
            .client(i)
            .call_ok(&["CLUSTER", "NODES"])
            .expect("CLUSTER NODES")
            .as_text()
            .expect("CLUSTER NODES text");
        parse_cluster_nodes(&text)
    }

    /// The node ID of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        self.client(i)
            .call_ok(&["CLUSTER", "MYID"])
            .expect("CLUSTER MYID")
            .as_text()
            .expect("node id")
    }

    /// What `ROLE` says node `i` is (`master` or `slave`); None if it does not answer.
    pub fn role(&self, i: usize) -> Option<String> {
        let mut c = slotway::local::NodeClient::connect(
            self.node_addr(i).as_str(),
            Duration::from_millis(500),
        )
        .ok()?;
        match c.call(&["ROLE"]).ok()? {
            Reply::Array(items) => items.first().and_then(Reply::as_text),
            _ => None,
        }
    }

    /// Index of the primary serving `slot` (according to a running node).
    pub fn primary_index_for_slot(&self, slot: u16) -> usize {
        let addr = self.primary_for_slot(slot);
        self.node_index(&addr)
            .unwrap_or_else(|| panic!("{addr} is not a cluster node"))
    }

    /// Indices of the running replicas of node `primary`, as node `primary` sees them.
    pub fn replicas_of(&self, primary: usize) -> Vec<usize> {
        let id = self.node_id(primary);
        self.cluster_nodes(primary)
            .into_iter()
            .filter(|n| n.primary.as_deref() == Some(id.as_str()))
            .filter(|n| !n.flags.iter().any(|f| f.starts_with("fail")))
            .filter_map(|n| self.node_index(&n.addr))
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// Indices of the live primaries that own slots, as node `asker` sees them.
    pub fn slot_owners(&self, asker: usize) -> Vec<usize> {
        self.cluster_nodes(asker)
            .into_iter()
            .filter(|n| n.is_live_primary() && !n.slots.is_empty())
            .filter_map(|n| self.node_index(&n.addr))
            .collect()
    }

    /// The slots node `primary` owns, as it sees itself.
    pub fn slots_of(&self, primary: usize) -> Vec<u16> {
        let id = self.node_id(primary);
        self.cluster_nodes(primary)
            .into_iter()
            .find(|n| n.id == id)
            .map(|n| n.slots)
            .unwrap_or_default()
    }

    /// Runs `CLUSTER FAILOVER` on replica `replica` and waits until it reports itself primary
    /// and every running primary agrees.
    pub fn manual_failover(&self, replica: usize, timeout: Duration) {
        self.client(replica)
            .call_ok(&["CLUSTER", "FAILOVER"])
            .expect("CLUSTER FAILOVER");
        wait_until(timeout, "the replica to become primary", || {
            self.role(replica).as_deref() == Some("master")
        });
        let id = self.node_id(replica);
        wait_until(timeout, "every node to see the new primary", || {
            (0..self.len()).filter(|&i| self.is_running(i)).all(|i| {
                self.cluster_nodes(i)
                    .iter()
                    .any(|n| n.id == id && n.is_live_primary() && !n.slots.is_empty())
            })
        });
    }

    /// Moves `slots` from primary `from` to primary `to` while clients keep working: for each
    /// slot, `IMPORTING` on the target, `MIGRATING` on the source, `MIGRATE` of its keys in
    /// batches, then `SETSLOT NODE` on the target, the source and every other primary.
    /// `pause` is slept with the slot half-migrated (keys moved, ownership not yet), so clients
    /// see `-ASK` for it. Returns how long the whole move took.
    pub fn migrate_slots(
        &self,
        slots: &[u16],
        from: usize,
        to: usize,
        pause: Duration,
    ) -> Duration {
        let started = Instant::now();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let to_addr = self.node_addr(to);
        let (to_host, to_port) = to_addr.rsplit_once(':').expect("host:port");
        let mut src = self.client(from);
        let mut dst = self.client(to);
        let others: Vec<usize> = self
            .slot_owners(from)
            .into_iter()
            .filter(|&i| i != from && i != to)
            .collect();
        for &slot in slots {
            let s = slot.to_string();
            dst.call_ok(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])
                .expect("SETSLOT IMPORTING");
            src.call_ok(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])
                .expect("SETSLOT MIGRATING");
            loop {
                let batch = MIGRATE_BATCH.to_string();
                let keys = src
                    .call_ok(&["CLUSTER", "GETKEYSINSLOT", &s, &batch])
                    .expect("GETKEYSINSLOT");
                let keys: Vec<String> = keys
                    .as_array()
                    .expect("key list")
                    .iter()
                    .filter_map(Reply::as_text)
                    .collect();
                if keys.is_empty() {
                    break;
                }
                let mut args = vec!["MIGRATE", to_host, to_port, "", "0", "5000", "KEYS"];
                args.extend(keys.iter().map(String::as_str));
                let reply = src.call(&args).expect("MIGRATE");
                if matches!(reply, Reply::Error(_)) {
                    // The target's own view usually tells why it refused.
                    let view = dst
                        .call(&["CLUSTER", "NODES"])
                        .ok()
                        .and_then(|r| r.as_text());
                    panic!("MIGRATE of slot {slot}: {reply:?}; target's view:\n{view:?}");
                }
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            dst.call_ok(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id])
                .expect("SETSLOT NODE on the target");
            src.call_ok(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id])
                .expect("SETSLOT NODE on the source");
            for &o in &others {
                // Others learn it from gossip anyway; telling them saves a round of MOVED.
                let _ = self
                    .client(o)
                    .call(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            }
        }
        started.elapsed()
    }

    /// Opens a move of `slot` from node `from` to node `to` and leaves it open (the target
    /// IMPORTING, the source MIGRATING): keys not on the source are answered with `-ASK`.
    pub fn begin_slot_migration(&self, slot: u16, from: usize, to: usize) {
        let s = slot.to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.client(to)
            .call_ok(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])
            .expect("SETSLOT IMPORTING");
        self.client(from)
            .call_ok(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])
            .expect("SETSLOT MIGRATING");
    }

    /// Whether node `i` holds `key` in a slot it is importing (asked with `ASKING`).
    pub fn importing_node_has(&self, i: usize, key: &str) -> bool {
        let mut node = self.client(i);
        node.call_ok(&["ASKING"]).expect("ASKING");
        let exists = node.call(&["EXISTS", key]).expect("EXISTS");
        exists.as_int() == Some(1)
    }

    /// Waits until every running node agrees that node `owner` serves all of `slots`.
    pub fn wait_slots_owned(&self, slots: &[u16], owner: usize, timeout: Duration) {
        let id = self.node_id(owner);
        wait_until(timeout, "every node to agree on the moved slots", || {
            (0..self.len()).filter(|&i| self.is_running(i)).all(|i| {
                self.cluster_nodes(i)
                    .iter()
                    .find(|n| n.id == id)
                    .is_some_and(|n| slots.iter().all(|s| n.slots.contains(s)))
            })
        });
    }

    /// `DBSIZE` of node `i`.
    pub fn dbsize(&self, i: usize) -> i64 {
        self.client(i)
            .call_ok(&["DBSIZE"])
            .expect("DBSIZE")
            .as_int()
            .expect("integer")
    }
}
