//! Cluster-mode clients through the proxy's one endpoint: slotway describes itself as a
//! one-node cluster owning every slot, so the `redis` crate's cluster client and `redis-cli -c`
//! work through it; with emulation off the describing commands fail as on a standalone Redis.

use std::collections::HashSet;

use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::raw::Raw;
use redis::Commands;
use slotway::cluster::slot::key_slot;

#[test]
fn cluster_clients_work_through_the_emulation() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let port = proxy.addr().port();
    let mut raw = Raw::connect(proxy.addr());

    // One node, every slot, at the address the client connected to.
    let myid = raw.text(&["CLUSTER", "MYID"]);
    let id = myid.split("\r\n").nth(1).unwrap().to_string();
    assert_eq!(id.len(), 40);
    let slots = raw.text(&["CLUSTER", "SLOTS"]);
    assert_eq!(
        slots,
        format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{id}\r\n*0\r\n"
        )
    );
    let nodes = raw.text(&["CLUSTER", "NODES"]);
    assert!(
        nodes.contains(&format!(
            "{id} 127.0.0.1:{port}@0 myself,master - 0 0 1 connected 0-16383\n"
        )),
        "{nodes}"
    );
    let info = raw.text(&["CLUSTER", "INFO"]);
    assert!(info.contains("cluster_state:ok\r\n"), "{info}");
    assert!(info.contains("cluster_known_nodes:1\r\n"));
    let shards = raw.text(&["CLUSTER", "SHARDS"]);
    assert!(
        shards.contains(&id) && shards.contains("master"),
        "{shards}"
    );
    assert_eq!(
        raw.text(&["CLUSTER", "KEYSLOT", "{user1000}.following"]),
        ":3443\r\n"
    );
    assert_eq!(raw.text(&["READONLY"]), "+OK\r\n");
    assert_eq!(raw.text(&["READWRITE"]), "+OK\r\n");
    // Refused: by the default command policy before the emulation would refuse it.
    let failover = raw.text(&["CLUSTER", "FAILOVER"]);
    assert!(
        failover.starts_with("-ERR command 'cluster|failover' is disabled"),
        "{failover}"
    );

    // The redis crate in cluster mode, seeded with the proxy alone.
    let client = redis::cluster::ClusterClient::new(vec![proxy.url()]).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("emu:{i}")).collect();
    for k in &keys {
        let _: () = con.set(k, format!("v-{k}")).unwrap();
    }
    let slots: HashSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots.len() > 100);
    for k in &keys {
        let v: String = con.get(k).unwrap();
        assert_eq!(v, format!("v-{k}"));
    }
    // Keys really are spread over the three shards behind the proxy.
    let owners: HashSet<String> = keys
        .iter()
        .take(30)
        .map(|k| cluster.primary_for_key(k))
        .collect();
    assert_eq!(owners.len(), 3);
    let n: i64 = redis::cmd("DBSIZE").query(&mut proxy.client()).unwrap();
    assert_eq!(n, 200);

    // redis-cli in cluster mode.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "cli:key", "hello"]), "OK");
    assert_eq!(cli(&["GET", "cli:key"]), "hello");
    assert_eq!(cli(&["GET", "emu:7"]), "v-emu:7");
}

#[test]
fn announce_address_and_disabled_emulation() {
    let cluster = TestCluster::start_with(3, 0);
    let announced = TestProxy::start_with(cluster.seeds(), |c| {
        c.commands.announce_address = "proxy.example:6380".into();
    });
    let slots = Raw::connect(announced.addr()).text(&["CLUSTER", "SLOTS"]);
    assert!(
        slots.contains("$13\r\nproxy.example\r\n:6380\r\n"),
        "{slots}"
    );
    drop(announced);

    let off = TestProxy::start_with(cluster.seeds(), |c| c.commands.cluster_emulation = false);
    let mut raw = Raw::connect(off.addr());
    for sub in ["SLOTS", "SHARDS", "NODES", "INFO", "MYID"] {
        assert_eq!(
            raw.text(&["CLUSTER", sub]),
            "-ERR This instance has cluster support disabled\r\n",
            "CLUSTER {sub}"
        );
    }
    assert_eq!(raw.text(&["CLUSTER", "KEYSLOT", "foo"]), ":12182\r\n");
    let info = raw.text(&["INFO", "cluster"]);
    assert!(info.contains("cluster_enabled:0"), "{info}");
}
