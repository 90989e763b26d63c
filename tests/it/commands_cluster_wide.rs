//! Cluster-wide commands through the proxy against a real 3-shard cluster: DBSIZE, KEYS,
//! RANDOMKEY, FLUSHALL/FLUSHDB, a full SCAN (COUNT, MATCH, TYPE), scripts and functions on
//! every shard with NOSCRIPT recovery, INFO, CONFIG GET/SET, WAIT and the per-key and
//! per-node informational commands.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::cluster::{direct, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::raw::Raw;
use redis::Commands;

fn primaries(cluster: &TestCluster) -> Vec<String> {
    let set: HashSet<String> = (0..16384u16)
        .step_by(512)
        .map(|s| cluster.primary_for_slot(s))
        .collect();
    let mut v: Vec<String> = set.into_iter().collect();
    v.sort();
    assert_eq!(v.len(), 3);
    v
}

fn write_keys(con: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(k, "v").ignore();
        }
        pipe.query::<()>(con).unwrap();
    }
}

#[test]
fn dbsize_keys_randomkey_and_flush() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let ok: String = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let keys: Vec<String> = (0..300).map(|i| format!("cw:{i}")).collect();
    write_keys(&mut con, &keys);
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 300);
    // Every shard holds a share.
    for p in primaries(&cluster) {
        let n: i64 = redis::cmd("DBSIZE").query(&mut direct(&p)).unwrap();
        assert!(n > 0, "{p} holds no key");
    }
    let mut all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    all.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(all, expected);
    let some: Vec<String> = redis::cmd("KEYS").arg("cw:1?").query(&mut con).unwrap();
    assert_eq!(some.len(), 10);
    for _ in 0..10 {
        let k: String = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
        assert!(keys.contains(&k), "{k}");
    }
    let ok: String = redis::cmd("FLUSHALL").arg("ASYNC").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 0);
    for p in primaries(&cluster) {
        let n: i64 = redis::cmd("DBSIZE").query(&mut direct(&p)).unwrap();
        assert_eq!(n, 0, "{p} still has keys");
    }
    let k: Option<String> = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    assert_eq!(k, None);
    write_keys(&mut con, &keys[..10]);
    let ok: String = redis::cmd("FLUSHDB").arg("SYNC").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 0);
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(
        raw.text(&["FLUSHALL", "BOGUS"]),
        Raw::connect(&primaries(&cluster)[0]).text(&["FLUSHALL", "BOGUS"])
    );
}

/// Runs a full SCAN with `extra` options; returns every key seen and how often.
fn full_scan(con: &mut redis::Connection, extra: &[&str]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let mut cursor: u64 = 0;
    let mut calls = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg(extra)
            .query(con)
            .unwrap();
        for k in batch {
            *seen.entry(k).or_insert(0) += 1;
        }
        calls += 1;
        assert!(calls < 100_000, "SCAN does not end");
        if next == 0 {
            return seen;
        }
        cursor = next;
    }
}

#[test]
fn full_scan_returns_every_key_exactly_once() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let strings: Vec<String> = (0..4500).map(|i| format!("scan:s:{i}")).collect();
    write_keys(&mut con, &strings);
    let hashes: Vec<String> = (0..500).map(|i| format!("scan:h:{i}")).collect();
    let mut pipe = redis::pipe();
    for h in &hashes {
        pipe.hset(h, "f", "v").ignore();
    }
    pipe.query::<()>(&mut con).unwrap();

    let check = |seen: HashMap<String, usize>, expected: &[String]| {
        let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
        assert!(dups.is_empty(), "returned more than once: {dups:?}");
        let got: HashSet<&String> = seen.keys().collect();
        let want: HashSet<&String> = expected.iter().collect();
        assert_eq!(got, want);
    };
    let mut everything = strings.clone();
    everything.extend(hashes.iter().cloned());
    check(full_scan(&mut con, &[]), &everything);
    check(full_scan(&mut con, &["COUNT", "1000"]), &everything);
    check(
        full_scan(&mut con, &["MATCH", "scan:h:*", "COUNT", "50"]),
        &hashes,
    );
    check(full_scan(&mut con, &["TYPE", "hash"]), &hashes);
    check(
        full_scan(&mut con, &["MATCH", "scan:s:1*", "TYPE", "string"]),
        &{
            strings
                .iter()
                .filter(|k| k.starts_with("scan:s:1"))
                .cloned()
                .collect::<Vec<_>>()
        },
    );
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(raw.text(&["SCAN", "nope"]), "-ERR invalid cursor\r\n");
    assert_eq!(
        raw.text(&["SCAN", "0", "COUNT", "0"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn scripts_and_functions_on_every_shard() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let body = "return redis.call('GET', KEYS[1])";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut con)
        .unwrap();
    let direct_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut direct(&primaries(&cluster)[0]))
        .unwrap();
    assert_eq!(sha, direct_sha);
    let keys: Vec<String> = (0..30).map(|i| format!("script:{i}")).collect();
    for k in &keys {
        let _: () = con.set(k, format!("val-{k}")).unwrap();
    }
    let owners: HashSet<String> = keys.iter().map(|k| cluster.primary_for_key(k)).collect();
    assert_eq!(owners.len(), 3, "keys span every shard");
    for k in &keys {
        let v: String = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(k)
            .query(&mut con)
            .unwrap();
        assert_eq!(v, format!("val-{k}"));
    }
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000000000000000000000000000000000000000")
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);

    // NOSCRIPT recovery: the owner of a key forgets its scripts (as a promoted replica or a
    // restarted node would); EVALSHA through the proxy still works.
    let k = &keys[0];
    let owner = cluster.primary_for_key(k);
    let flushed: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut direct(&owner))
        .unwrap();
    assert_eq!(flushed, "OK");
    let v: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(k)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, format!("val-{k}"));
    // A body seen through EVAL is recovered the same way.
    let eval_body = "return 'from-eval'";
    let v: String = redis::cmd("EVAL")
        .arg(eval_body)
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "from-eval");
    for p in primaries(&cluster) {
        let _: String = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut direct(&p))
            .unwrap();
    }
    let eval_sha = slotway::proxy::sha1::hex(eval_body.as_bytes());
    let v: String = redis::cmd("EVALSHA")
        .arg(&eval_sha)
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "from-eval");
    // SCRIPT FLUSH through the proxy forgets for good, as on one server.
    let flushed: String = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
    assert_eq!(flushed, "OK");
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(
        raw.text(&["EVALSHA", &sha, "1", k]),
        "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    );

    // Functions: loaded on every primary, callable on keys in every shard.
    let lib = "#!lua name=slotwaylib\n\
               redis.register_function('getit', function(keys, args) return redis.call('GET', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut con)
        .unwrap();
    assert_eq!(name, "slotwaylib");
    for k in &keys {
        let v: String = redis::cmd("FCALL")
            .arg("getit")
            .arg(1)
            .arg(k)
            .query(&mut con)
            .unwrap();
        assert_eq!(v, format!("val-{k}"));
    }
    let list = raw.text(&["FUNCTION", "LIST"]);
    assert!(list.contains("slotwaylib"), "{list}");
    let dump = raw.call(&["FUNCTION", "DUMP"]);
    assert!(dump.starts_with(b"$"));
    assert!(raw.text(&["FUNCTION", "STATS"]).starts_with('*'));
    assert_eq!(raw.text(&["FUNCTION", "DELETE", "slotwaylib"]), "+OK\r\n");
    for p in primaries(&cluster) {
        let list = Raw::connect(&p).text(&["FUNCTION", "LIST"]);
        assert_eq!(list, "*0\r\n", "{p}");
    }
    // RESTORE of the dump puts the library back everywhere; FLUSH removes it everywhere.
    let dumped = &dump[dump.iter().position(|&b| b == b'\n').unwrap() + 1..dump.len() - 2];
    let mut restore = redis::cmd("FUNCTION");
    restore.arg("RESTORE").arg(dumped);
    let ok: String = restore.query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    for p in primaries(&cluster) {
        assert!(Raw::connect(&p)
            .text(&["FUNCTION", "LIST"])
            .contains("slotwaylib"));
    }
    assert_eq!(raw.text(&["FUNCTION", "FLUSH", "SYNC"]), "+OK\r\n");
    for p in primaries(&cluster) {
        assert_eq!(Raw::connect(&p).text(&["FUNCTION", "LIST"]), "*0\r\n");
    }
}

#[test]
fn info_time_config_and_per_key_commands() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let keys: Vec<String> = (0..120).map(|i| format!("info:{i}")).collect();
    write_keys(&mut con, &keys);
    for k in &keys[..20] {
        let _: () = con.expire(k, 1000).unwrap();
    }
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    for needle in [
        "# Server\r\n",
        "redis_version:7.",
        &format!("slotway_version:{}", env!("CARGO_PKG_VERSION")),
        &format!("process_id:{}", std::process::id()),
        &format!("tcp_port:{}", proxy.addr().port()),
        "uptime_in_seconds:",
        "# Clients\r\nconnected_clients:",
        "# Cluster\r\ncluster_enabled:1",
        "# Keyspace\r\ndb0:keys=120,expires=20,avg_ttl=",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle:?}:\n{info}");
    }
    let ks: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(
        ks.starts_with("# Keyspace\r\ndb0:keys=120,expires=20,"),
        "{ks}"
    );
    assert!(!ks.contains("# Server"));

    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut con).unwrap();
    assert!(secs > 1_600_000_000 && micros < 1_000_000);
    let lastsave: i64 = redis::cmd("LASTSAVE").query(&mut con).unwrap();
    assert!(lastsave > 1_600_000_000);
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&keys[0])
        .query(&mut con)
        .unwrap();
    assert!(usage > 0);
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&keys[1])
        .query(&mut con)
        .unwrap();
    assert_eq!(enc, "embstr");

    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut con)
        .unwrap();
    assert_eq!(got, vec!["maxmemory-policy", "noeviction"]);
    let mut raw = Raw::connect(proxy.addr());
    let denied = raw.text(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    // Denied by default (the command policy refuses it before anything else).
    assert!(
        denied.starts_with("-ERR command 'config|set' is disabled"),
        "{denied}"
    );
    drop(proxy);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| c.commands.allow_config_set = true);
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(
        raw.text(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        "+OK\r\n"
    );
    for i in 0..cluster.len() {
        let got = Raw::connect(cluster.node_addr(i)).text(&["CONFIG", "GET", "maxmemory-policy"]);
        assert!(got.contains("allkeys-lru"), "node {i}: {got}");
    }

    // CLUSTER KEYSLOT / COUNTKEYSINSLOT / GETKEYSINSLOT as a node would answer them.
    let slot = cluster.key_slot(&keys[3]);
    assert_eq!(
        raw.text(&["CLUSTER", "KEYSLOT", &keys[3]]),
        format!(":{slot}\r\n")
    );
    let owner = cluster.primary_for_slot(slot);
    let mut node = Raw::connect(&owner);
    for args in [
        &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()][..],
        &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "100"],
        &["CLUSTER", "COUNTKEYSINSLOT", "99999"],
        &["CLUSTER", "GETKEYSINSLOT", "x", "1"],
    ] {
        assert_eq!(raw.text(args), node.text(args), "{args:?}");
    }
    assert!(raw
        .text(&["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "100"])
        .contains(&keys[3]));
}

#[test]
fn wait_counts_replicas_of_the_nodes_written() {
    let cluster = TestCluster::start_with(3, 1);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    for i in 0..20 {
        let _: () = con.set(format!("wait:{i}"), i).unwrap();
    }
    let n: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut con).unwrap();
    assert_eq!(
        n, 1,
        "each written primary has one replica that acknowledged"
    );
    // More replicas than exist: the timeout elapses and the count is what was reached.
    let started = std::time::Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(2).arg(200).query(&mut con).unwrap();
    assert_eq!(n, 1);
    assert!(started.elapsed() >= Duration::from_millis(150));
    // Forever is capped below the backend command timeout (5 s by default).
    let started = std::time::Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(2).arg(0).query(&mut con).unwrap();
    assert_eq!(n, 1);
    assert!(started.elapsed() < Duration::from_millis(4000));
}
