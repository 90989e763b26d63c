//! The embedded local Redis Cluster: starts `redis-server` child processes, forms
//! them into a cluster without `redis-cli`, and owns them until shutdown.
//!
//! Used by `slotway local` and by every integration test. Everything here is
//! synchronous (std::process, std::net); call it from a blocking context.
//!
//! Node `i` listens on `ports[i]` (cluster bus on `ports[i] + 10000`) and keeps its
//! `redis.conf`, `nodes.conf`, AOF directory and log in `data_dir/node-<port>`.
//! Shard `s` is `ports[s * (1 + r)]` as primary followed by its `r` replicas.
//!
//! Child processes never outlive the process that started them; see the `process` module
//! (`process.rs`) for how: PDEATHSIG from a dedicated spawner thread, own process group.

mod client;
mod create;
mod health;
mod process;
pub mod upstream;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::Duration;

use tokio::time::Instant;

pub use client::{NodeClient, Reply};
pub use create::{split_slots, SLOTS};
pub use process::{find_redis_server, find_redis_server_in};

use create::Planned;

/// How long an appendonly node gets after SIGTERM to flush before it is SIGKILLed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Offset of the cluster bus port from the client port (fixed by Redis).
pub const BUS_PORT_OFFSET: u16 = 10000;

/// Errors of the local cluster launcher.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No `redis-server` on `PATH`.
    #[error("redis-server not found on PATH: install it with `apt-get install redis-server`")]
    RedisServerMissing,
    /// The explicitly configured binary does not exist or is not executable.
    #[error("redis-server not found at {}: install it with `apt-get install redis-server` or fix the path", .0.display())]
    RedisServerNotFoundAt(PathBuf),
    /// The options describe an impossible cluster.
    #[error("invalid local cluster options: {0}")]
    InvalidOptions(String),
    /// A file-system or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Starting the redis-server process failed.
    #[error("cannot start {}: {source}", .binary.display())]
    Spawn {
        /// The binary we tried to run.
        binary: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A node exited while we waited for it to come up.
    #[error("redis-server for {addr} exited during start-up ({status}): {last_log}")]
    NodeExited {
        /// The node's `host:port`.
        addr: String,
        /// Its exit status.
        status: String,
        /// The last line it logged, usually the reason.
        last_log: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {waited:.1?} waiting for {what}: {last}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last reason it was not ready yet.
        last: String,
    },
    /// A node answered with an error reply.
    #[error("redis node replied with an error: {0}")]
    Server(String),
    /// A node's reply was not what the protocol or command promises.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// No node with that index.
    #[error("no local cluster node with index {0}")]
    NoSuchNode(usize),
}

impl LocalError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LocalError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when a node failed because its port (or bus port) was taken; retrying on
    /// other ports may succeed.
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, LocalError::NodeExited { last_log, .. } if last_log.contains("in use"))
    }
}

/// How to lay out and run the local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterOptions {
    /// Address every node binds to (default 127.0.0.1).
    pub host: IpAddr,
    /// One client port per node, `shards * (1 + replicas_per_shard)` of them; bus port = port + 10000.
    pub ports: Vec<u16>,
    /// Number of primaries (default 3).
    pub shards: usize,
    /// Replicas per primary (default 2).
    pub replicas_per_shard: usize,
    /// Parent of the per-node directories (`node-<port>`).
    pub data_dir: PathBuf,
    /// The `redis-server` binary; `None` looks it up on `PATH`.
    pub redis_server: Option<PathBuf>,
    /// `cluster-node-timeout` in milliseconds (default 2000).
    pub node_timeout_ms: u64,
    /// Whether nodes keep an append-only file (default true).
    pub appendonly: bool,
    /// Extra `redis.conf` directives, applied after (and so overriding) ours.
    pub extra_config: Vec<(String, String)>,
    /// ACL users to define on every node, each `[name, rules…]` (default none; `slotway
    /// local` adds the proxy's upstream user, see [`upstream::provision`]).
    pub acl_users: Vec<Vec<String>>,
    /// Budget for the whole start, and for a restarted node to answer (default 30 s).
    pub ready_timeout: Duration,
}

impl LocalClusterOptions {
    /// Defaults: 3 shards x (1 + 2) on `base_port .. base_port + 8`.
    pub fn with_base_port(host: IpAddr, base_port: u16, data_dir: impl Into<PathBuf>) -> Self {
        let mut opts = LocalClusterOptions {
            host,
            ports: Vec::new(),
            shards: 3,
            replicas_per_shard: 2,
            data_dir: data_dir.into(),
            redis_server: None,
            node_timeout_ms: 2000,
            appendonly: true,
            extra_config: Vec::new(),
            acl_users: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        };
        opts.set_base_port(base_port);
        opts
    }

    /// Number of nodes the layout needs.
    pub fn node_count(&self) -> usize {
        self.shards * (1 + self.replicas_per_shard)
    }

    /// Replaces `ports` by `node_count()` consecutive ports from `base_port`.
    pub fn set_base_port(&mut self, base_port: u16) {
        self.ports = (0..self.node_count())
            .map(|i| base_port.saturating_add(i as u16))
            .collect();
    }

    fn validate(&self) -> Result<(), LocalError> {
        let bad = |why: String| Err(LocalError::InvalidOptions(why));
        if self.shards == 0 {
            return bad("at least one shard is needed".into());
        }
        if self.ports.len() != self.node_count() {
            return bad(format!(
                "{} shards x (1 + {} replicas) need {} ports, got {}",
                self.shards,
                self.replicas_per_shard,
                self.node_count(),
                self.ports.len()
            ));
        }
        if self.ports.iter().collect::<BTreeSet<_>>().len() != self.ports.len() {
            return bad("ports must be distinct".into());
        }
        if let Some(p) = self
            .ports
            .iter()
            .find(|&&p| p == 0 || p > u16::MAX - BUS_PORT_OFFSET)
        {
            return bad(format!(
                "port {p} is unusable: ports must be 1..={}",
                u16::MAX - BUS_PORT_OFFSET
            ));
        }
        Ok(())
    }
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        Self::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 7000, "slotway-local")
    }
}

/// One node of the local cluster and its process.
#[derive(Debug)]
pub struct LocalNode {
    /// Client port.
    pub port: u16,
    /// Address the node currently binds to.
    pub host: IpAddr,
    /// The node's directory (config, nodes.conf, AOF, log).
    pub dir: PathBuf,
    /// Index of the shard it was created in.
    pub shard: usize,
    /// Whether it was created as its shard's primary (failovers may change that since).
    pub initially_primary: bool,
    child: Option<Child>,
}

impl LocalNode {
    /// PID of the node's process, `None` after it was killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node's client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// A running local Redis Cluster; dropping it kills every node.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<LocalNode>,
    binary: PathBuf,
    opts: LocalClusterOptions,
}

impl LocalCluster {
    /// Starts every node, forms the cluster and waits until it is healthy (every node
    /// sees cluster_state:ok, all 16384 slots served, every replica linked). A data
    /// directory from an earlier run is reused: its cluster is not re-created, only
    /// waited for. On any failure every process started so far is killed first.
    ///
    /// Blocking; may be called from any thread, even a short-lived one: the nodes are
    /// forked by a process-wide spawner thread, so their PDEATHSIG tracks the process.
    pub fn start(opts: LocalClusterOptions) -> Result<Self, LocalError> {
        opts.validate()?;
        let binary = match &opts.redis_server {
            Some(path) => process::check_redis_server(path)?,
            None => find_redis_server()?,
        };
        let data_dir = prepare_dir(&opts.data_dir)?;
        let per_shard = 1 + opts.replicas_per_shard;
        let nodes = opts
            .ports
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let dir = prepare_dir(&data_dir.join(format!("node-{port}")))?;
                Ok(LocalNode {
                    port,
                    host: opts.host,
                    dir,
                    shard: i / per_shard,
                    initially_primary: i % per_shard == 0,
                    child: None,
                })
            })
            .collect::<Result<Vec<_>, LocalError>>()?;
        let mut cluster = LocalCluster {
            nodes,
            binary,
            opts,
        };
        if let Err(e) = cluster.launch() {
            cluster.kill_all();
            return Err(e);
        }
        Ok(cluster)
    }

    fn launch(&mut self) -> Result<(), LocalError> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        for idx in 0..self.nodes.len() {
            self.spawn(idx)?;
        }
        for idx in 0..self.nodes.len() {
            self.wait_answering(idx, deadline)?;
        }
        let addrs: Vec<SocketAddr> = self.nodes.iter().map(LocalNode::addr).collect();
        if create::already_formed(&addrs)? {
            // Reused data directory: the nodes rejoin on their own; creating again would fail.
            let what = format!(
                "the cluster saved in {} to become healthy (delete that directory to start afresh)",
                self.opts.data_dir.display()
            );
            return create::wait_for(&what, deadline, || {
                health::check_health(&addrs, addrs.len())
            });
        }
        create::create(&self.plan(), deadline)
    }

    fn plan(&self) -> Vec<Planned> {
        let per_shard = 1 + self.opts.replicas_per_shard;
        let ranges = split_slots(self.opts.shards);
        self.nodes
            .iter()
            .map(|node| Planned {
                addr: node.addr(),
                primary: (!node.initially_primary).then_some(node.shard * per_shard),
                slots: node.initially_primary.then(|| ranges[node.shard]),
            })
            .collect()
    }

    fn spawn(&mut self, idx: usize) -> Result<(), LocalError> {
        let node = &self.nodes[idx];
        let config = process::NodeConfig {
            host: node.host,
            port: node.port,
            dir: &node.dir,
            node_timeout_ms: self.opts.node_timeout_ms,
            appendonly: self.opts.appendonly,
            extra: &self.opts.extra_config,
            acl_users: &self.opts.acl_users,
        }
        .write()?;
        let child = process::spawn_node(&self.binary, &config, &node.dir)?;
        self.nodes[idx].child = Some(child);
        Ok(())
    }

    /// Waits until node `idx` answers PING, failing fast if its process exits.
    fn wait_answering(&mut self, idx: usize, deadline: Instant) -> Result<(), LocalError> {
        let node = &mut self.nodes[idx];
        let addr = node.addr();
        let started = Instant::now();
        loop {
            let exited = match node.child.as_mut() {
                Some(child) => child
                    .try_wait()
                    .map_err(|e| LocalError::io(format!("waiting for {addr}"), e))?,
                None => return Err(LocalError::NoSuchNode(idx)),
            };
            if let Some(status) = exited {
                node.child = None;
                let last_log = process::last_log_line(&node.dir);
                return Err(LocalError::NodeExited {
                    addr: addr.to_string(),
                    status: status.to_string(),
                    last_log,
                });
            }
            let last = match ping(addr) {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let what = format!("{addr} to answer PING");
                return Err(LocalError::Timeout {
                    what,
                    waited: started.elapsed(),
                    last,
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `host:port` of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }

    /// All nodes, in port order as given in the options.
    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &LocalClusterOptions {
        &self.opts
    }

    /// SIGKILLs node `idx` (a crash, not a clean shutdown) and reaps it.
    pub fn kill_node(&mut self, idx: usize) -> Result<(), LocalError> {
        let node = self.nodes.get_mut(idx).ok_or(LocalError::NoSuchNode(idx))?;
        if let Some(mut child) = node.child.take() {
            process::kill_and_wait(&mut child)
                .map_err(|e| LocalError::io(format!("killing {}", node.addr()), e))?;
        }
        Ok(())
    }

    /// (Re)starts node `idx` from its directory (same nodes.conf, so same node id),
    /// optionally bound to another address, and waits until it answers PING. A running
    /// node is killed first. Does not wait for the cluster to heal; see
    /// [`LocalCluster::wait_until_healthy`].
    pub fn restart_node(&mut self, idx: usize, host: Option<IpAddr>) -> Result<(), LocalError> {
        self.kill_node(idx)?;
        if let Some(host) = host {
            self.nodes[idx].host = host;
        }
        self.spawn(idx)?;
        let deadline = Instant::now() + self.opts.ready_timeout;
        if let Err(e) = self.wait_answering(idx, deadline) {
            let _ = self.kill_node(idx);
            return Err(e);
        }
        Ok(())
    }

    /// Waits until the running nodes agree on a healthy cluster: cluster_state:ok, all
    /// slots served, none of them flagged failing, replicas linked. Killed nodes are
    /// ignored (they may stay flagged as failed).
    pub fn wait_until_healthy(&self, timeout: Duration) -> Result<(), LocalError> {
        let running: Vec<SocketAddr> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(LocalNode::addr)
            .collect();
        let total = self.nodes.len();
        create::wait_for(
            "the cluster to become healthy",
            Instant::now() + timeout,
            || health::check_health(&running, total),
        )
    }

    /// Stops every node and reaps it; idempotent. Appendonly nodes get SIGTERM and a
    /// short grace to flush their AOF, everything else is SIGKILLed at once.
    pub fn shutdown(&mut self) {
        if !self.opts.appendonly {
            return self.kill_all();
        }
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        children.iter_mut().for_each(process::terminate);
        process::wait_all_until(&mut children, Instant::now() + SHUTDOWN_GRACE);
    }

    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = process::kill_and_wait(&mut child);
            }
        }
    }

    /// Where the node keeps its files, for callers that want to inspect logs.
    pub fn node_dir(&self, idx: usize) -> Option<&Path> {
        self.nodes.get(idx).map(|n| n.dir.as_path())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn ping(addr: SocketAddr) -> Result<(), LocalError> {
    let mut client = NodeClient::connect(addr, Duration::from_millis(500))?;
    match client.call(&["PING"])? {
        Reply::Status(s) if s == "PONG" => Ok(()),
        other => Err(LocalError::Protocol(format!("PING answered {other:?}"))),
    }
}

/// Creates `dir` if needed and returns it absolute, since redis-server changes directory.
fn prepare_dir(dir: &Path) -> Result<PathBuf, LocalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LocalError::io(format!("creating {}", dir.display()), e))?;
    dir.canonicalize()
        .map_err(|e| LocalError::io(format!("resolving {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_describe_nine_nodes() {
        let opts =
            LocalClusterOptions::with_base_port("127.0.0.1".parse().unwrap(), 7000, "/tmp/x");
        assert_eq!(opts.ports, (7000..=7008).collect::<Vec<_>>());
        assert_eq!(
            (opts.shards, opts.replicas_per_shard, opts.node_timeout_ms),
            (3, 2, 2000)
        );
        assert!(opts.appendonly);
        assert_eq!(opts.ready_timeout, Duration::from_secs(30));
        assert!(opts.validate().is_ok());
    }

    #[test]
    fn validation_rejects_bad_layouts() {
        let mut opts =
            LocalClusterOptions::with_base_port("127.0.0.1".parse().unwrap(), 7000, "/tmp/x");
        opts.ports.pop();
        assert!(matches!(
            opts.validate(),
            Err(LocalError::InvalidOptions(_))
        ));
        opts.set_base_port(60000);
        assert!(opts.validate().is_err(), "bus port would exceed 65535");
        opts.set_base_port(7000);
        opts.ports[1] = 7000;
        assert!(opts.validate().is_err(), "duplicate port");
        opts.shards = 0;
        opts.ports.clear();
        assert!(opts.validate().is_err());
    }

    #[test]
    fn missing_explicit_binary_fails_before_spawning() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts =
            LocalClusterOptions::with_base_port("127.0.0.1".parse().unwrap(), 7000, dir.path());
        opts.redis_server = Some(dir.path().join("no-such-redis-server"));
        let err = LocalCluster::start(opts).unwrap_err();
        assert!(matches!(err, LocalError::RedisServerNotFoundAt(_)));
        let text = err.to_string();
        assert!(
            !text.contains('\n') && text.contains("apt-get install redis-server"),
            "{text}"
        );
    }

    #[test]
    fn addr_in_use_is_recognised() {
        let err = LocalError::NodeExited {
            addr: "127.0.0.1:7000".into(),
            status: "exit status: 1".into(),
            last_log: "Could not create server TCP listening socket 127.0.0.1:7000: bind: Address already in use"
                .into(),
        };
        assert!(err.is_addr_in_use());
        assert!(!LocalError::RedisServerMissing.is_addr_in_use());
    }
}
