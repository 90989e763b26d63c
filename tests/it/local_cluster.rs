//! The embedded local cluster launcher against real redis-server processes.
//!
//! Tests that start clusters serialise themselves through the harness lock
//! (`common::cluster::serial_guard`, taken by every `TestCluster`), so a plain
//! `cargo test` is fine; `--test-threads=1` is not needed.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::cluster::{direct, serial_guard, TestCluster};
use crate::common::ports::free_ports;
use redis::Commands;
use slotway::local::{
    find_redis_server_in, LocalCluster, LocalClusterOptions, LocalError, NodeClient, Reply,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn client(addr: impl std::fmt::Display) -> NodeClient {
    NodeClient::connect(addr, TIMEOUT).expect("connect")
}

fn text(reply: &Reply) -> String {
    reply.as_text().expect("text reply")
}

/// PIDs of our processes whose working directory lies under `dir` (redis-server
/// rewrites its argv, so the directory is the reliable mark of our nodes).
fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().expect("canonical dir");
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cwd: Option<PathBuf> = fs::read_link(entry.path().join("cwd")).ok();
        if cwd.is_some_and(|cwd| cwd.starts_with(&dir)) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` names a live process. A zombie counts as dead: orphans are reaped by
/// whatever init the machine (or container) has, which may take its time.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn three_shards_with_two_replicas_each_cover_all_slots() {
    let tc = TestCluster::start();
    let nodes = tc.cluster().nodes();
    assert_eq!(nodes.len(), 9);
    assert_eq!(tc.seeds().len(), 9);

    for (i, node) in nodes.iter().enumerate() {
        let role = client(node.addr()).call(&["ROLE"]).unwrap();
        let items = role.as_array().expect("ROLE array");
        if node.initially_primary {
            assert_eq!(i % 3, 0);
            assert_eq!(text(&items[0]), "master", "node {i}");
            let mut replica_ports: Vec<i64> = items[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| text(&r.as_array().unwrap()[1]).parse().unwrap())
                .collect();
            replica_ports.sort();
            let expected: Vec<i64> = (1..=2).map(|k| i64::from(nodes[i + k].port)).collect();
            assert_eq!(replica_ports, expected, "replicas of node {i}");
        } else {
            assert_eq!(text(&items[0]), "slave", "node {i}");
            let primary = &nodes[node.shard * 3];
            assert_eq!(items[2].as_int(), Some(i64::from(primary.port)));
            assert_eq!(text(&items[3]), "connected");
        }
    }

    for node in nodes {
        let info = text(&client(node.addr()).call(&["CLUSTER", "INFO"]).unwrap());
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_ok:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:9"), "{info}");
    }

    let slots = client(nodes[4].addr()).call(&["CLUSTER", "SLOTS"]).unwrap();
    let ranges = slots.as_array().unwrap();
    assert_eq!(ranges.len(), 3);
    let mut covered = 0;
    for range in ranges {
        let items = range.as_array().unwrap();
        covered += items[1].as_int().unwrap() - items[0].as_int().unwrap() + 1;
        assert_eq!(items.len(), 2 + 3, "a primary and two replicas per range");
    }
    assert_eq!(covered, 16384);
    assert_eq!(tc.primary_for_slot(0), tc.node_addr(0));
    assert_eq!(tc.primary_for_slot(16383), tc.node_addr(6));

    let owner = tc.primary_for_key("foo");
    let mut con = direct(&owner);
    let _: () = con.set("foo", "bar").unwrap();
    assert_eq!(con.get::<_, String>("foo").unwrap(), "bar");
    let other = (0..3)
        .map(|s| tc.node_addr(s * 3))
        .find(|a| *a != owner)
        .unwrap();
    let moved = direct(&other).get::<_, String>("foo").unwrap_err();
    assert_eq!(moved.kind(), redis::ErrorKind::Moved);
}

#[test]
fn drop_kills_every_node() {
    let tc = TestCluster::start_with(2, 1);
    let pids = tc.pids();
    assert_eq!(pids.len(), 4);
    let mut found = processes_in(tc.data_dir());
    found.sort();
    let mut expected = pids.clone();
    expected.sort();
    assert_eq!(found, expected, "the /proc scan sees exactly our nodes");
    for pid in &pids {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "redis-server");
    }
    drop(tc);
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still exists after drop");
    }
}

#[test]
fn start_failing_half_way_leaves_no_redis_server_behind() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let mut opts =
        LocalClusterOptions::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, dir.path());
    opts.ports = free_ports(opts.node_count());
    opts.appendonly = false;
    // Node 4's port is taken: nodes 0..=3 come up first, then the start must fail.
    let blocker = TcpListener::bind((Ipv4Addr::LOCALHOST, opts.ports[4])).unwrap();
    let err = LocalCluster::start(opts).unwrap_err();
    assert!(err.is_addr_in_use(), "unexpected error: {err}");
    assert!(!err.to_string().contains('\n'));
    assert_eq!(
        processes_in(dir.path()),
        Vec::<u32>::new(),
        "leftover redis-server"
    );
    drop(blocker);
}

#[test]
fn missing_redis_server_is_a_one_line_error() {
    let empty = tempfile::tempdir().unwrap();
    let err = find_redis_server_in(empty.path().as_os_str()).unwrap_err();
    assert!(matches!(err, LocalError::RedisServerMissing));
    assert_eq!(
        err.to_string(),
        "redis-server not found on PATH: install it with `apt-get install redis-server`"
    );

    let mut opts =
        LocalClusterOptions::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 7000, empty.path());
    opts.redis_server = Some(empty.path().join("redis-server"));
    let err = LocalCluster::start(opts).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.contains("apt-get install redis-server"),
        "{message}"
    );
}

#[test]
fn failover_and_restart_on_another_address() {
    let mut tc = TestCluster::start_with(3, 1);
    let old_primary = tc.node_addr(0);
    let old_pid = tc.cluster().nodes()[0].pid().unwrap();
    tc.kill_node(0);
    assert!(!alive(old_pid));
    assert_eq!(tc.cluster().nodes()[0].pid(), None);
    // Its replica (node 1) takes over slot 0 once the failure is detected.
    tc.wait_healthy(Duration::from_secs(30));
    assert_eq!(tc.primary_for_slot(0), tc.node_addr(1));

    // The old primary comes back on 127.0.0.2 and rejoins as a replica.
    let other_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    tc.restart_node(0, Some(other_ip));
    assert_ne!(tc.cluster().nodes()[0].pid(), Some(old_pid));
    assert_eq!(
        tc.node_addr(0),
        format!("127.0.0.2:{}", tc.cluster().nodes()[0].port)
    );
    tc.wait_healthy(Duration::from_secs(30));
    let role = client(tc.node_addr(0).as_str()).call(&["ROLE"]).unwrap();
    assert_eq!(text(&role.as_array().unwrap()[0]), "slave");
    let nodes = text(
        &client(tc.node_addr(3).as_str())
            .call(&["CLUSTER", "NODES"])
            .unwrap(),
    );
    assert!(
        nodes.contains(&tc.node_addr(0)),
        "others learnt the new address:\n{nodes}"
    );
    assert!(
        !nodes.contains(&format!("{old_primary}@")),
        "old address gone:\n{nodes}"
    );
}

#[test]
fn restart_from_existing_data_dir_keeps_the_cluster_and_its_data() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let mut opts =
        LocalClusterOptions::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, dir.path());
    opts.shards = 2;
    opts.replicas_per_shard = 1;
    opts.ports = free_ports(opts.node_count());
    opts.appendonly = true;
    opts.ready_timeout = Duration::from_secs(60);

    let mut cluster = LocalCluster::start(opts.clone()).unwrap();
    let slot = client(cluster.nodes()[0].addr())
        .call(&["CLUSTER", "KEYSLOT", "{k}"])
        .unwrap();
    // Two shards: slots 0..=8191 on node 0, the rest on node 2.
    let owner = if slot.as_int().unwrap() <= 8191 { 0 } else { 2 };
    let owner_addr = cluster.nodes()[owner].addr().to_string();
    let _: () = direct(&owner_addr).set("{k}", "kept").unwrap();
    let ids: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| text(&client(n.addr()).call(&["CLUSTER", "MYID"]).unwrap()))
        .collect();
    cluster.shutdown();
    cluster.shutdown(); // idempotent
    drop(cluster);
    assert_eq!(processes_in(dir.path()), Vec::<u32>::new());

    let cluster = LocalCluster::start(opts).unwrap();
    for (node, id) in cluster.nodes().iter().zip(&ids) {
        assert_eq!(
            &text(&client(node.addr()).call(&["CLUSTER", "MYID"]).unwrap()),
            id
        );
    }
    let value: String = direct(&owner_addr).get("{k}").unwrap();
    assert_eq!(value, "kept");
}

/// Set in the child process of `nodes_die_with_the_process_that_started_them`.
const HELPER_ENV: &str = "SLOTWAY_TEST_ABORT_HELPER_DIR";

/// Not a test on its own: run by `nodes_die_with_the_process_that_started_them` in a
/// child process. Starts a cluster from a short-lived thread, prints the PIDs, aborts.
#[test]
#[ignore = "helper process for nodes_die_with_the_process_that_started_them"]
fn abort_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let cluster = std::thread::spawn(move || {
        let mut opts = LocalClusterOptions::with_base_port(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, dir);
        opts.shards = 1;
        opts.replicas_per_shard = 1;
        opts.appendonly = false;
        opts.ports = free_ports(opts.node_count());
        LocalCluster::start(opts).unwrap()
    })
    .join()
    .unwrap();
    // The starting thread has ended; the nodes must still be up.
    for node in cluster.nodes() {
        assert_eq!(
            client(node.addr()).call(&["PING"]).unwrap(),
            Reply::Status("PONG".into())
        );
    }
    let pids: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.pid().unwrap().to_string())
        .collect();
    println!("PIDS {}", pids.join(" "));
    // No destructor runs: only PR_SET_PDEATHSIG can take the nodes down now.
    std::process::abort();
}

#[test]
fn nodes_die_with_the_process_that_started_them() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    // Test names are paths below the test crate's root: `local_cluster::abort_helper`.
    let helper = module_path!()
        .split_once("::")
        .map_or(String::new(), |(_, module)| {
            format!("{module}::abort_helper")
        });
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &helper,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "helper should abort");
    let pids: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.split_once("PIDS ").map(|(_, pids)| pids))
        .unwrap_or_else(|| panic!("no PIDS line; stdout:\n{stdout}"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids {
        assert!(
            !alive(pid),
            "pid {pid} outlived the process that started it"
        );
    }
}
