//! The integration-test Redis Cluster: a [`LocalCluster`] on free ports in a temporary
//! directory, killed on drop (also when the test panics).
//!
//! Cluster tests are heavy (9 redis-server processes on a small machine), so every
//! [`TestCluster`] holds a process-wide lock for its whole life: tests in one binary
//! that start clusters run one after another even under the default parallel test
//! runner, and no `--test-threads=1` is needed. Cargo runs test binaries one at a time.
//! Consequence: a test must not hold two `TestCluster`s (or a `TestCluster` and
//! [`serial_guard`]) at once; it would deadlock.
//!
//! Set `SLOTWAY_KEEP_TEST_DATA=1` to keep each cluster's directory (logs, nodes.conf).
//!
//! Nodes added after the start ([`TestCluster::add_node`]) are numbered after the launcher's
//! own nodes; slot migration, manual failover and role queries live in `super::dynamics`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slotway::local::{LocalCluster, LocalClusterOptions, NodeClient, Reply};
use tempfile::TempDir;

use super::ports::{free_port, free_ports};

/// Serialises cluster-starting tests within one test binary.
static SERIAL: Mutex<()> = Mutex::new(());

/// Start attempts when a port turns out to be taken after all.
const START_ATTEMPTS: usize = 5;
/// Generous: the CI machine has two shared cores.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Takes the lock that serialises cluster-starting tests (a `TestCluster` takes it itself).
pub fn serial_guard() -> MutexGuard<'static, ()> {
    // A test that panicked while holding the lock has already cleaned up its cluster.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running test cluster; everything is killed and deleted on drop.
pub struct TestCluster {
    cluster: LocalCluster,
    /// Nodes started after the cluster was formed (not yet members until MEET).
    extra: Vec<ExtraNode>,
    dir: Option<TempDir>,
    _serial: MutexGuard<'static, ()>,
}

/// A redis-server started by the harness itself, outside the launcher.
struct ExtraNode {
    addr: SocketAddr,
    child: Option<Child>,
}

impl TestCluster {
    /// 3 shards x (1 primary + 2 replicas), node timeout 2000 ms, no AOF.
    pub fn start() -> Self {
        Self::start_with(3, 2)
    }

    /// `shards` x (1 primary + `replicas` replicas), node timeout 2000 ms, no AOF.
    pub fn start_with(shards: usize, replicas: usize) -> Self {
        Self::start_configured(shards, replicas, |_| {})
    }

    /// Like [`TestCluster::start_with`], letting `configure` adjust the options
    /// (ports and data directory are chosen by the harness and re-chosen on retry).
    pub fn start_configured(
        shards: usize,
        replicas: usize,
        configure: impl Fn(&mut LocalClusterOptions),
    ) -> Self {
        let serial = serial_guard();
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("slotway-test-")
                .tempdir()
                .expect("tempdir");
            let mut opts =
                LocalClusterOptions::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, dir.path());
            opts.shards = shards;
            opts.replicas_per_shard = replicas;
            opts.node_timeout_ms = 2000;
            opts.appendonly = false;
            opts.ready_timeout = READY_TIMEOUT;
            configure(&mut opts);
            opts.ports = free_ports(opts.node_count());
            match LocalCluster::start(opts) {
                Ok(cluster) => {
                    return TestCluster {
                        cluster,
                        extra: Vec::new(),
                        dir: Some(dir),
                        _serial: serial,
                    }
                }
                Err(e) if e.is_addr_in_use() => last_err = Some(e),
                Err(e) => panic!("local cluster failed to start: {e}"),
            }
        }
        panic!("local cluster failed to start after {START_ATTEMPTS} attempts: {last_err:?}");
    }

    /// Like [`TestCluster::start_with`] on the given ports (each port and port+10000 must be
    /// free): for tests that point a proxy at the cluster before it exists. No retry on a clash.
    pub fn start_on_ports(shards: usize, replicas: usize, ports: Vec<u16>) -> Self {
        let serial = serial_guard();
        let dir = tempfile::Builder::new()
            .prefix("slotway-test-")
            .tempdir()
            .expect("tempdir");
        let mut opts =
            LocalClusterOptions::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, dir.path());
        opts.shards = shards;
        opts.replicas_per_shard = replicas;
        opts.node_timeout_ms = 2000;
        opts.appendonly = false;
        opts.ready_timeout = READY_TIMEOUT;
        opts.ports = ports;
        let cluster = LocalCluster::start(opts).expect("local cluster on the given ports");
        TestCluster {
            cluster,
            extra: Vec::new(),
            dir: Some(dir),
            _serial: serial,
        }
    }

    /// Starts one more empty cluster-enabled node (same settings as the others) on a free
    /// port, introduces it with `CLUSTER MEET` and waits until every node knows it. It joins
    /// as a primary without slots; returns its index.
    pub fn add_node(&mut self) -> usize {
        let port = free_port();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let dir = self.data_dir().join(format!("extra-{port}"));
        std::fs::create_dir_all(&dir).expect("extra node dir");
        let child = spawn_extra(addr, &dir);
        self.extra.push(ExtraNode {
            addr,
            child: Some(child),
        });
        let index = self.len() - 1;
        wait_until(
            Duration::from_secs(30),
            "the new node to answer PING",
            || {
                NodeClient::connect(addr, Duration::from_millis(500))
                    .and_then(|mut c| c.call(&["PING"]))
                    .is_ok_and(|r| r.as_text().as_deref() == Some("PONG"))
            },
        );
        let port_text = port.to_string();
        self.any_client()
            .call_ok(&["CLUSTER", "MEET", "127.0.0.1", &port_text])
            .expect("CLUSTER MEET");
        let everyone: Vec<String> = (0..self.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.node_addr(i))
            .collect();
        // Every node must be linked to every other one, and the new node must have learned who
        // owns every slot: before that it answers CLUSTERDOWN (to a MIGRATE's RESTORE too).
        wait_until(
            Duration::from_secs(30),
            "the new node to join fully",
            || {
                everyone.iter().all(|a| linked_to_all(a, everyone.len()))
                    && NodeClient::connect(addr, Duration::from_secs(2))
                        .and_then(|mut c| c.call(&["CLUSTER", "INFO"]))
                        .ok()
                        .and_then(|r| r.as_text())
                        .is_some_and(|info| {
                            info.contains("cluster_state:ok")
                                && info.contains("cluster_slots_assigned:16384")
                        })
            },
        );
        index
    }

    /// True while node `i` has a process.
    pub fn is_running(&self, i: usize) -> bool {
        match i.checked_sub(self.cluster.nodes().len()) {
            None => self.cluster.nodes()[i].pid().is_some(),
            Some(e) => self.extra[e].child.is_some(),
        }
    }

    /// A control client on node `i`.
    pub fn client(&self, i: usize) -> NodeClient {
        NodeClient::connect(self.node_addr(i).as_str(), Duration::from_secs(5))
            .expect("connect to node")
    }

    /// The underlying launcher.
    pub fn cluster(&self) -> &LocalCluster {
        &self.cluster
    }

    /// The directory holding every node's files.
    pub fn data_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .expect("data dir present while running")
    }

    /// `host:port` of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.cluster.seeds()
    }

    /// `host:port` of node `i` (its current address).
    pub fn node_addr(&self, i: usize) -> String {
        match i.checked_sub(self.cluster.nodes().len()) {
            None => self.cluster.nodes()[i].addr().to_string(),
            Some(e) => self.extra[e].addr.to_string(),
        }
    }

    /// Number of nodes, added ones included.
    pub fn len(&self) -> usize {
        self.cluster.nodes().len() + self.extra.len()
    }

    /// The index of the node at `addr` (`host:port`).
    pub fn node_index(&self, addr: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.node_addr(i) == addr)
    }

    /// PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.cluster
            .nodes()
            .iter()
            .filter_map(|n| n.pid())
            .collect()
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        self.cluster.kill_node(i).expect("kill node");
    }

    /// Restarts node `i` (optionally on another loopback address) and waits until it answers.
    pub fn restart_node(&mut self, i: usize, host: Option<IpAddr>) {
        self.cluster.restart_node(i, host).expect("restart node");
    }

    /// Waits until the running nodes agree on a healthy cluster.
    pub fn wait_healthy(&self, timeout: Duration) {
        if let Err(e) = self.cluster.wait_until_healthy(timeout) {
            panic!("cluster did not become healthy: {e}");
        }
    }

    /// A control client on some running node.
    pub fn any_client(&self) -> NodeClient {
        let node = self
            .cluster
            .nodes()
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a running node");
        NodeClient::connect(node.addr(), Duration::from_secs(5)).expect("connect to node")
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn key_slot(&self, key: &str) -> u16 {
        let reply = self
            .any_client()
            .call(&["CLUSTER", "KEYSLOT", key])
            .expect("CLUSTER KEYSLOT");
        reply
            .as_int()
            .and_then(|s| u16::try_from(s).ok())
            .expect("integer slot")
    }

    /// `host:port` of the primary serving `slot`, according to a running node's `CLUSTER SLOTS`.
    pub fn primary_for_slot(&self, slot: u16) -> String {
        let mut client = self.any_client();
        let answering = client.peer();
        let reply = client.call(&["CLUSTER", "SLOTS"]).expect("CLUSTER SLOTS");
        for range in reply.as_array().expect("CLUSTER SLOTS array") {
            let items = range.as_array().expect("slot range entry");
            let bounds = (
                items[0].as_int().expect("start"),
                items[1].as_int().expect("end"),
            );
            if !(bounds.0..=bounds.1).contains(&i64::from(slot)) {
                continue;
            }
            return endpoint(&items[2], answering);
        }
        panic!("slot {slot} is not served");
    }

    /// The primary serving `key`.
    pub fn primary_for_key(&self, key: &str) -> String {
        self.primary_for_slot(self.key_slot(key))
    }
}

/// Turns a CLUSTER SLOTS node entry into `ip:port`; an empty or `?` host means the node
/// that answered, and a host name (`cluster-preferred-endpoint-type hostname`) is resolved,
/// IPv4 first.
fn endpoint(entry: &Reply, answering: SocketAddr) -> String {
    let items = entry.as_array().expect("node entry");
    let host = items[0].as_text().unwrap_or_default();
    let port = u16::try_from(items[1].as_int().expect("port")).expect("port range");
    let ip: IpAddr = match host.as_str() {
        "" | "?" => answering.ip(),
        h => h.parse().unwrap_or_else(|_| {
            use std::net::ToSocketAddrs;
            let found: Vec<SocketAddr> = (h, port)
                .to_socket_addrs()
                .expect("resolve a node's host name")
                .collect();
            found
                .iter()
                .find(|a| a.is_ipv4())
                .or(found.first())
                .expect("host name resolves")
                .ip()
        }),
    };
    SocketAddr::new(ip, port).to_string()
}

/// A plain (non-cluster) redis-rs connection to one node.
pub fn direct(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .expect("redis client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("direct connection")
}

/// True when the node at `addr` lists `count` nodes, every one with its link up.
fn linked_to_all(addr: &str, count: usize) -> bool {
    let text = NodeClient::connect(addr, Duration::from_secs(2))
        .and_then(|mut c| c.call(&["CLUSTER", "NODES"]))
        .ok()
        .and_then(|r| r.as_text());
    text.is_some_and(|text| {
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        lines.len() == count
            && lines.iter().all(|f| {
                f.len() >= 8
                    && f[7] == "connected"
                    && !f[2].contains("handshake")
                    && !f[2].contains("noaddr")
            })
    })
}

/// Starts redis-server for an added node, configured like the launcher's nodes.
fn spawn_extra(addr: SocketAddr, dir: &Path) -> Child {
    let port = addr.port().to_string();
    let host = addr.ip().to_string();
    let mut cmd = cluster_node_command(dir);
    cmd.args([
        "--port",
        &port,
        "--bind",
        &host,
        "--cluster-announce-ip",
        &host,
    ])
    .args([
        "--repl-diskless-sync-delay",
        "0",
        "--repl-ping-replica-period",
        "1",
    ]);
    cmd.spawn().expect("start an extra redis-server")
}

/// A redis-server command for a cluster node living in `dir` (node timeout 2000 ms, no
/// persistence, log in `dir`) that dies with the test; the caller adds ports and the rest.
pub fn cluster_node_command(dir: &Path) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ])
    .args([
        "--cluster-node-timeout",
        "2000",
        "--appendonly",
        "no",
        "--save",
        "",
    ])
    .arg("--logfile")
    .arg(dir.join("redis.log"))
    .current_dir(dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd
}

/// Makes the process `cmd` starts die with the test thread that started it, even if the test
/// process is killed without unwinding.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe; nothing is allocated and no lock is touched.
    #[allow(unsafe_code)]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.extra {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.cluster.shutdown();
        if std::env::var_os("SLOTWAY_KEEP_TEST_DATA").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("keeping test cluster data in {}", dir.keep().display());
            }
        }
    }
}
