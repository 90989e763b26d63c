//! Observability against a real cluster: the admin endpoint (/healthz, /readyz, /metrics,
//! /cluster), metric values moving by exactly the traffic sent, SLOWLOG, `slotway status`, and
//! every `slotway_*` metric the dashboards and alerts use being exported.
//! Each cluster test starts its own cluster; run with --test-threads=1 (tests/run.sh does).

mod obs;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::cluster::TestCluster;
use crate::common::ports::free_addr;
use crate::common::proxy::TestProxy;
use obs::{check_dashboard_metrics, Scrape};
use slotway::admin::http;
use slotway::admin::report::ClusterReport;
use slotway::cluster::slot::key_slot;

pub(crate) fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    http::get(&admin.to_string(), path, Duration::from_secs(20)).expect("admin endpoint answers")
}

/// Polls `path` until it answers `status`; returns the body.
fn wait_for(admin: SocketAddr, path: &str, status: u16, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let (code, body) = get(admin, path);
        if code == status {
            return body;
        }
        assert!(
            Instant::now() < end,
            "{path} still answers {code} ({body:?}) after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxy with its admin endpoint on a free loopback port.
fn proxy_with_admin(
    seeds: Vec<String>,
    wait: bool,
    tweak: impl FnOnce(&mut slotway::config::Config),
) -> (TestProxy, SocketAddr) {
    let admin = free_addr();
    let configure = move |c: &mut slotway::config::Config| {
        c.admin.listen = admin.to_string();
        tweak(c);
    };
    let proxy = if wait {
        TestProxy::start_with(seeds, configure)
    } else {
        TestProxy::spawn(seeds, configure)
    };
    (proxy, admin)
}

fn status(admin: SocketAddr) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .expect("run slotway status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_answers_before_any_topology() {
    // Port 1 on loopback: nothing listens, so the proxy never learns a topology.
    let (_proxy, admin) = proxy_with_admin(vec!["127.0.0.1:1".into()], false, |_| {});
    assert_eq!(
        wait_for(admin, "/healthz", 200, Duration::from_secs(5)),
        "ok\n"
    );
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("no cluster topology"), "{body}");
    let scrape = Scrape::take(admin);
    assert_eq!(scrape.value("slotway_ready", &[]), 0.0);
    assert_eq!(
        scrape.types.get("slotway_ready").map(String::as_str),
        Some("gauge")
    );
    let (code, body) = get(admin, "/cluster");
    assert_eq!(code, 200);
    let report: ClusterReport = serde_json::from_str(&body).unwrap();
    assert!(!report.ready);
    assert!(report.shards.is_empty());
    assert_eq!(get(admin, "/nope").0, 404);
    let (code, _, stderr) = status(admin);
    assert_eq!(code, 1, "status exit code when not ready; stderr: {stderr}");
    assert!(stderr.contains("not ready"), "{stderr}");
}

#[test]
fn metrics_cluster_report_slowlog_and_status() {
    let cluster = TestCluster::start();
    let (proxy, admin) = proxy_with_admin(cluster.seeds(), true, |c| {
        c.metrics.slowlog_threshold_us = 0;
    });
    assert_eq!(
        wait_for(admin, "/readyz", 200, Duration::from_secs(20)),
        "ready\n"
    );
    let mut con = proxy.client();

    // Commands by name and outcome move by exactly what was sent.
    let before = Scrape::take(admin);
    let keys: Vec<String> = (0..300).map(|i| format!("obs:{i}")).collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k).arg("v").ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("obs:str")
        .arg("abc")
        .query(&mut con)
        .unwrap();
    for _ in 0..5 {
        let r: redis::RedisResult<i64> = redis::cmd("INCR").arg("obs:str").query(&mut con);
        assert!(r.is_err());
    }
    let after = Scrape::take(admin);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        delta(
            "slotway_commands_total",
            &[("command", "set"), ("outcome", "ok")]
        ),
        301.0
    );
    assert_eq!(
        delta(
            "slotway_commands_total",
            &[("command", "incr"), ("outcome", "error")]
        ),
        5.0
    );
    assert_eq!(
        delta(
            "slotway_commands_total",
            &[("command", "incr"), ("outcome", "ok")]
        ),
        0.0
    );
    assert_eq!(
        delta(
            "slotway_command_duration_seconds_count",
            &[("command", "set")]
        ),
        301.0
    );
    assert!(delta("slotway_client_bytes_received_total", &[]) > 300.0 * 20.0);
    assert!(delta("slotway_client_bytes_sent_total", &[]) > 300.0 * 5.0);
    // Every keyed request lands on one shard.
    assert_eq!(delta("slotway_shard_ops_total", &[]), 306.0);

    // Per slot and per shard: 40 GETs of a key whose slot is known.
    let slot = key_slot(b"foo");
    assert_eq!(slot, 12182);
    let before = Scrape::take(admin);
    for _ in 0..40 {
        let _: Option<String> = redis::cmd("GET").arg("foo").query(&mut con).unwrap();
    }
    let after = Scrape::take(admin);
    let slot_label = slot.to_string();
    assert_eq!(
        after.value("slotway_slot_ops_total", &[("slot", &slot_label)])
            - before.value("slotway_slot_ops_total", &[("slot", &slot_label)]),
        40.0
    );
    let (_, body) = get(admin, "/cluster");
    let report: ClusterReport = serde_json::from_str(&body).unwrap();
    let shard = report
        .shards
        .iter()
        .find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .expect("a shard serves slot 12182")
        .shard
        .to_string();
    assert_eq!(
        after.value("slotway_shard_ops_total", &[("shard", &shard)])
            - before.value("slotway_shard_ops_total", &[("shard", &shard)]),
        40.0
    );

    // The /cluster report: 3 shards of a primary and 2 replicas, keys adding up.
    assert!(report.ready, "{report:?}");
    assert_eq!(report.slots_covered, 16384);
    assert_eq!(report.shards.len(), 3);
    let mut nodes = BTreeSet::new();
    for s in &report.shards {
        assert_eq!(s.primary.role, "primary");
        assert_eq!(s.primary.link, "up");
        assert_eq!(s.primary.connected, Some(true));
        assert_eq!(s.replicas.len(), 2, "{s:?}");
        for r in &s.replicas {
            assert_eq!(r.role, "replica");
            assert_eq!(r.link, "up");
            nodes.insert(r.address.clone());
        }
        nodes.insert(s.primary.address.clone());
        assert_eq!(s.primary.id.len(), 40);
        assert!(s.keys.is_some(), "{s:?}");
    }
    assert_eq!(nodes.len(), 9);
    let total_keys: u64 = report.shards.iter().filter_map(|s| s.keys).sum();
    assert_eq!(total_keys, 301, "keys per shard add up to the keys written");
    let slots: usize = report.shards.iter().map(|s| s.slot_count).sum();
    assert_eq!(slots, 16384);
    let shard_numbers: Vec<usize> = report.shards.iter().map(|s| s.shard).collect();
    assert_eq!(shard_numbers, [0, 1, 2]);
    assert!(report.shards.iter().all(|s| s.ops > 0));

    // Hot keys: one key hammered stands out.
    let mut pipe = redis::pipe();
    for _ in 0..3000 {
        pipe.cmd("GET").arg("obs:hot").ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let scrape = Scrape::take(admin);
    let hot = scrape.value("slotway_hot_key_ops", &[("rank", "1"), ("key", "obs:hot")]);
    assert!(hot > 1000.0, "obs:hot should rank first; got {hot}");
    let (_, body) = get(admin, "/cluster");
    let report: ClusterReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.hot_keys[0].key, "obs:hot");
    assert_eq!(
        report.hot_slots[0].slot,
        key_slot(b"obs:hot"),
        "{:?}",
        report.hot_slots
    );

    // SLOWLOG with a threshold of 0 records every forwarded command.
    let ok: String = redis::cmd("SLOWLOG").arg("RESET").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let _: () = redis::cmd("SET")
        .arg("obs:slow")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut con).unwrap();
    assert!(len >= 1, "{len}");
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10)
        .query(&mut con)
        .unwrap();
    let found = entries.iter().any(|e| {
        let redis::Value::Array(fields) = e else {
            return false;
        };
        let args: Vec<String> = redis::from_redis_value(&fields[3]).unwrap_or_default();
        let client: String = redis::from_redis_value(&fields[4]).unwrap_or_default();
        fields.len() == 6 && args == ["SET", "obs:slow", "v"] && client.starts_with("127.0.0.1:")
    });
    assert!(found, "{entries:?}");

    // Every metric a dashboard or an alert uses is exported, with the labels they use.
    check_dashboard_metrics(admin);

    // `slotway status` prints the shards and exits 0.
    let (code, out, err) = status(admin);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("ready; slots covered 16384/16384"), "{out}");
    assert!(out.contains("keys per shard: max"), "{out}");
    assert!(out.contains("hottest keys"), "{out}");
    assert_eq!(out.matches("primary 127.0.0.1:").count(), 3, "{out}");
}

#[test]
fn readyz_reports_a_dead_primary_until_failover() {
    let mut cluster = TestCluster::start();
    let (proxy, admin) = proxy_with_admin(cluster.seeds(), true, |_| {});
    wait_for(admin, "/readyz", 200, Duration::from_secs(20));
    let failovers = Scrape::take(admin).value("slotway_failovers_total", &[]);
    let victim_addr = cluster.primary_for_slot(0);
    let victim = (0..cluster.len())
        .find(|&i| cluster.node_addr(i) == victim_addr)
        .expect("primary of slot 0 is a cluster node");
    cluster.kill_node(victim);
    let reason = wait_for(admin, "/readyz", 503, Duration::from_secs(10));
    assert!(
        reason.contains(&victim_addr) && reason.contains("not connected"),
        "{reason}"
    );
    // A replica takes over (node timeout 2 s) and the proxy becomes ready again.
    wait_for(admin, "/readyz", 200, Duration::from_secs(60));
    let mut con = proxy.client();
    let _: () = redis::cmd("SET")
        .arg("after:failover")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let scrape = Scrape::take(admin);
    assert!(scrape.value("slotway_failovers_total", &[]) >= failovers + 1.0);
    assert_eq!(scrape.value("slotway_ready", &[]), 1.0);
    // The dead node is still in the cluster, failed: status says so and exits 1.
    let (code, out, err) = status(admin);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&victim_addr), "{err}");
}
