//! Read policies (reads served by replicas, unhealthy replicas skipped) and durable-write
//! mode (writes acknowledged only once replicas confirmed them), against a real cluster.

use std::time::{Duration, Instant};

use crate::common::cluster::{direct, TestCluster};
use crate::common::proxy::TestProxy;
use redis::Commands;

/// `calls` of one command from a node's INFO commandstats.
fn calls(addr: &str, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut direct(addr))
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The replicas (by address) of the primary at `primary`.
fn replicas_of(primary: &str) -> Vec<String> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut direct(primary)).unwrap();
    let mut out = Vec::new();
    if let Some(redis::Value::Array(reps)) = role.get(2) {
        for r in reps {
            if let redis::Value::Array(fields) = r {
                let s = |v: &redis::Value| match v {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                out.push(format!("{}:{}", s(&fields[0]), s(&fields[1])));
            }
        }
    }
    assert_eq!(out.len(), 2, "{primary} should have 2 replicas");
    out
}

fn reset_stats(cluster: &TestCluster) {
    for addr in cluster.seeds() {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut direct(&addr))
            .unwrap();
    }
}

/// Writes `key` through the proxy and waits until both replicas have it.
fn write_replicated(proxy: &TestProxy, key: &str, replicas: &[String]) {
    let _: () = proxy.client().set(key, "v").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in replicas {
        let mut con = direct(r);
        let _: () = redis::cmd("READONLY").query(&mut con).unwrap();
        while con.get::<_, Option<String>>(key).unwrap().is_none() {
            assert!(Instant::now() < deadline, "replica {r} never got {key}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads until replicas have served some reads (their pools connect in the background),
/// then checks that further reads never reach the primary.
fn reads_go_to_replicas(policy: &str) -> Vec<u64> {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.read_policy = policy.parse().unwrap()
    });
    let key = "read-policy-key";
    let primary = cluster.primary_for_key(key);
    let replicas = replicas_of(&primary);
    write_replicated(&proxy, key, &replicas);
    reset_stats(&cluster);

    let mut con = proxy.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replicas.iter().map(|r| calls(r, "get")).sum::<u64>() == 0 {
        assert!(Instant::now() < deadline, "no read reached a replica");
        assert_eq!(con.get::<_, String>(key).unwrap(), "v");
    }
    let primary_before = calls(&primary, "get");
    let before: Vec<u64> = replicas.iter().map(|r| calls(r, "get")).collect();
    // Several clients, so per-client stickiness and rotation both show.
    for _ in 0..4 {
        let mut con = proxy.client();
        for _ in 0..50 {
            assert_eq!(con.get::<_, String>(key).unwrap(), "v");
        }
    }
    assert_eq!(
        calls(&primary, "get"),
        primary_before,
        "a read reached the primary"
    );
    // Writes still go to the primary.
    let _: () = con.set(key, "w").unwrap();
    assert_eq!(calls(&primary, "set"), 1);
    replicas
        .iter()
        .zip(before)
        .map(|(r, b)| calls(r, "get") - b)
        .collect()
}

#[test]
fn prefer_replica_serves_reads_from_replicas() {
    let served = reads_go_to_replicas("prefer-replica");
    assert_eq!(served.iter().sum::<u64>(), 200, "{served:?}");
}

#[test]
fn replica_round_robin_spreads_reads_over_every_replica() {
    let served = reads_go_to_replicas("replica-round-robin");
    assert_eq!(served.iter().sum::<u64>(), 200, "{served:?}");
    assert!(served.iter().all(|&n| n > 0), "not spread: {served:?}");
}

#[test]
fn a_dead_replica_is_skipped_without_errors() {
    let mut cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.read_policy = "replica-round-robin".parse().unwrap()
    });
    let key = "skip-dead-replica";
    let primary = cluster.primary_for_key(key);
    let replicas = replicas_of(&primary);
    write_replicated(&proxy, key, &replicas);
    let victim = (0..cluster.len())
        .find(|&i| cluster.node_addr(i) == replicas[0])
        .unwrap();
    let mut con = proxy.client();
    for _ in 0..50 {
        assert_eq!(con.get::<_, String>(key).unwrap(), "v");
    }
    cluster.kill_node(victim);
    for i in 0..300 {
        let got: redis::RedisResult<String> = con.get(key);
        assert_eq!(
            got.as_deref().ok(),
            Some("v"),
            "read {i} after the kill: {got:?}"
        );
    }
}

#[test]
fn durable_writes_are_acknowledged_once_replicas_confirm() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.durable_writes = true;
        c.cluster.durable_replicas = 2;
        c.cluster.durable_timeout_ms = 2000;
    });
    let mut con = proxy.client();
    for i in 0..200 {
        let key = format!("durable:{i}");
        let _: () = con.set(&key, i).unwrap();
        // Acknowledged means both replicas already hold it.
        for r in replicas_of(&cluster.primary_for_key(&key)) {
            let mut rc = direct(&r);
            let _: () = redis::cmd("READONLY").query(&mut rc).unwrap();
            assert_eq!(
                rc.get::<_, i64>(&key).unwrap(),
                i,
                "replica {r} lacks {key}"
            );
        }
    }
    // A failing write is passed on as is, not turned into a durability error.
    let _: () = con.set("durable:s", "text").unwrap();
    let err = con.incr::<_, _, i64>("durable:s", 1).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
}

#[test]
fn durable_writes_not_confirmed_in_time_get_a_clear_error() {
    let cluster = TestCluster::start();
    // Three replicas can never confirm: every shard has two.
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.durable_writes = true;
        c.cluster.durable_replicas = 3;
        c.cluster.durable_timeout_ms = 100;
    });
    let mut con = proxy.client();
    let err = con.set::<_, _, ()>("durable:x", 1).unwrap_err();
    assert!(err.to_string().contains("may not be durable"), "{err}");
    assert!(err.to_string().contains("2 of 3"), "{err}");
    // Reads are not affected.
    assert_eq!(con.get::<_, i64>("durable:x").unwrap(), 1);
}
