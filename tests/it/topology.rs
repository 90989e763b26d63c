//! Topology fetch and refresh against a real three-primary Redis Cluster (the shared harness's
//! `TestCluster` with no replicas), through the control-plane client of `slotway::cluster`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;
use slotway::cluster::topology::SLOTS;
use slotway::cluster::{
    call, fetch_topology, fetch_topology_via, spawn_refresher, FetchMethod, FetchOptions,
    RefreshConfig, Role, Topology,
};
use slotway::local::split_slots;
use tokio_util::sync::CancellationToken;

use crate::common::cluster::TestCluster;
use crate::common::ports::free_port;

/// Three primaries splitting the slots evenly (the harness's lock held, killed on drop).
struct Cluster {
    ports: Vec<u16>,
    _nodes: TestCluster,
}

impl Cluster {
    async fn start() -> Cluster {
        // Blocks this test's thread while the launcher forms the cluster; nothing else runs on
        // the test's runtime yet.
        let nodes = TestCluster::start_with(3, 0);
        let ports: Vec<u16> = (0..nodes.len())
            .map(|i| node_port(&nodes.node_addr(i)))
            .collect();
        let cluster = Cluster {
            ports,
            _nodes: nodes,
        };
        for port in &cluster.ports {
            eventually(|| async {
                let t = fetch_topology(&addr(*port), &opts()).await;
                t.is_ok_and(|t| t.covers_all_slots() && t.nodes.len() == 3)
            })
            .await;
        }
        cluster
    }

    async fn cmd(
        &self,
        port: u16,
        args: &[&str],
    ) -> Result<OwnedFrame, slotway::cluster::TopologyError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        call(&addr(port), &args, &opts()).await
    }

    async fn node_id(&self, port: u16) -> String {
        match self.cmd(port, &["CLUSTER", "MYID"]).await.unwrap() {
            OwnedFrame::BulkString(id) => String::from_utf8(id).unwrap(),
            other => panic!("CLUSTER MYID: {other:?}"),
        }
    }
}

/// The port of a harness node address (`127.0.0.1:port`).
fn node_port(addr: &str) -> u16 {
    let (_, port) = addr.rsplit_once(':').expect("host:port");
    port.parse().expect("a port number")
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn opts() -> FetchOptions {
    FetchOptions::default()
}

fn ok(reply: Result<OwnedFrame, slotway::cluster::TopologyError>) {
    match reply {
        Ok(OwnedFrame::SimpleString(s)) if s == b"OK" => {}
        other => panic!("expected +OK, got {other:?}"),
    }
}

/// Polls `check` until it holds, for up to 15 s.
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slot → primary node ID, for comparing snapshots fetched different ways.
fn owners(t: &Topology) -> Vec<Option<String>> {
    (0..SLOTS as u16)
        .map(|s| t.primary_of_slot(s).map(|n| n.id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_via_cluster_shards_and_cluster_slots() {
    let cluster = Cluster::start().await;
    let shards = fetch_topology_via(&addr(cluster.ports[1]), &opts(), FetchMethod::Shards)
        .await
        .unwrap();
    assert!(shards.covers_all_slots());
    assert_eq!(shards.shards.len(), 3);
    for (i, &port) in cluster.ports.iter().enumerate() {
        let id = cluster.node_id(port).await;
        let (_, node) = shards
            .node_by_id(&id)
            .expect("every node is known by its ID");
        assert_eq!(node.addr, addr(port).parse().unwrap());
        assert_eq!(node.endpoint, "127.0.0.1");
        assert_eq!(node.role, Role::Primary);
        // The launcher gives shard i (node i, no replicas) the i-th range of the split.
        let first_slot = split_slots(3)[i].0;
        assert_eq!(shards.primary_of_slot(first_slot).unwrap().id, id);
    }

    let slots = fetch_topology_via(&addr(cluster.ports[2]), &opts(), FetchMethod::Slots)
        .await
        .unwrap();
    assert_eq!(owners(&slots), owners(&shards));
    let mut ids: Vec<_> = slots.nodes.iter().map(|n| n.id.clone()).collect();
    ids.sort();
    let mut expected: Vec<_> = shards.nodes.iter().map(|n| n.id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);

    let auto = fetch_topology(&addr(cluster.ports[0]), &opts())
        .await
        .unwrap();
    assert_eq!(owners(&auto), owners(&shards));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_and_unknown_endpoints() {
    let cluster = Cluster::start().await;
    for &port in &cluster.ports {
        ok(cluster
            .cmd(
                port,
                &["CONFIG", "SET", "cluster-announce-hostname", "localhost"],
            )
            .await);
        ok(cluster
            .cmd(
                port,
                &[
                    "CONFIG",
                    "SET",
                    "cluster-preferred-endpoint-type",
                    "hostname",
                ],
            )
            .await);
    }
    // Hostnames spread by gossip; wait until the asked node knows them all.
    let asked = addr(cluster.ports[0]);
    eventually(|| async {
        let t = fetch_topology(&asked, &opts()).await.unwrap();
        t.nodes.iter().all(|n| n.endpoint == "localhost")
    })
    .await;
    let t = fetch_topology_via(&asked, &opts(), FetchMethod::Slots)
        .await
        .unwrap();
    for node in &t.nodes {
        assert_eq!(node.endpoint, "localhost");
        assert!(node.addr.ip().is_loopback());
        assert!(cluster.ports.contains(&node.addr.port()));
    }

    // unknown-endpoint: clients must use the host they asked, with each node's own port.
    let port = cluster.ports[1];
    ok(cluster
        .cmd(
            port,
            &[
                "CONFIG",
                "SET",
                "cluster-preferred-endpoint-type",
                "unknown-endpoint",
            ],
        )
        .await);
    for method in [FetchMethod::Shards, FetchMethod::Slots] {
        let t = fetch_topology_via(&format!("localhost:{port}"), &opts(), method)
            .await
            .unwrap();
        assert!(t.covers_all_slots());
        for node in &t.nodes {
            assert_eq!(node.endpoint, "localhost", "{method:?}");
            assert!(node.addr.ip().is_loopback());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresher_publishes_follows_changes_and_coalesces() {
    let cluster = Cluster::start().await;
    let updates = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&updates);
    let hook = Box::new(move |t: &Arc<Topology>| seen.lock().unwrap().push(t.assigned_slots()));
    let cancel = CancellationToken::new();
    // A dead seed first: the refresher must move on to the next one.
    let cfg = RefreshConfig::new(vec![addr(free_port()), addr(cluster.ports[0])]);
    let handle = spawn_refresher(cfg, Some(hook), cancel.clone());

    let mut epoch = handle.subscribe();
    epoch.wait_for(|&e| e >= 1).await.unwrap();
    let first = handle.current().unwrap();
    assert!(first.covers_all_slots());
    assert_eq!(updates.lock().unwrap().as_slice(), [SLOTS]);

    let before = handle.stats();
    for _ in 0..100 {
        handle.request_refresh();
    }
    handle.refresh_and_wait().await.unwrap();
    let after = handle.stats();
    let rounds = after.rounds - before.rounds;
    assert!(
        (1..=4).contains(&rounds),
        "100 requests took {rounds} rounds"
    );
    assert!(
        after.fetches - before.fetches <= 2 * rounds,
        "a healthy snapshot node answers first"
    );
    assert_eq!(
        after.epoch, before.epoch,
        "an unchanged layout bumps no epoch"
    );

    // Give slot 0 (empty) from the first primary to the second on every node.
    let to = cluster.node_id(cluster.ports[1]).await;
    for &port in &cluster.ports {
        ok(cluster
            .cmd(port, &["CLUSTER", "SETSLOT", "0", "NODE", &to])
            .await);
    }
    eventually(|| async {
        let t = handle.refresh_and_wait().await.unwrap();
        t.primary_of_slot(0).is_some_and(|n| n.id == to)
    })
    .await;
    assert!(handle.stats().epoch > after.epoch);
    assert!(updates.lock().unwrap().len() >= 2);

    cancel.cancel();
    assert!(handle.refresh_and_wait().await.is_err());
    let ids: HashSet<_> = first.nodes.iter().map(|n| n.id.clone()).collect();
    assert_eq!(ids.len(), 3);
}
