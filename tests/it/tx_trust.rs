//! Issue 13, transactions and durability: a refusal while queuing aborts the transaction as
//! in Redis, commands that need every shard are refused inside MULTI, the MULTI queue is
//! bounded, and WAIT and durable-write mode cover writes made on dedicated connections (EXEC,
//! blocking commands, a RESP3 client's scripts). Against a real cluster; every effect is
//! checked on the node itself.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cluster::{direct, wait_until, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;
use slotway::config::UserConfig;
use slotway::security::Secret;

const EXECABORT: &str = "-EXECABORT Transaction discarded because of previous errors.\r\n";

/// The value of `key` read on its primary directly, not through the proxy.
fn on_node(cluster: &TestCluster, key: &str) -> Option<String> {
    let mut con = direct(&cluster.primary_for_key(key));
    redis::cmd("GET").arg(key).query(&mut con).unwrap()
}

/// A client that logged in as `login` (user, password), once the proxy routes.
fn logged_in(proxy: &TestProxy, login: &[&str]) -> Raw {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let mut raw = Raw::connect(proxy.addr());
        let mut auth = vec!["AUTH"];
        auth.extend_from_slice(login);
        let ok = raw.call(&auth) == "+OK\r\n"
            && (0..16).all(|i| {
                !raw.call(&["GET", &format!("app:probe{i}")])
                    .starts_with('-')
            });
        if ok {
            return raw;
        }
        assert!(Instant::now() < end, "proxy did not start routing");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn user(name: &str, password: &str, keys: &[&str]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: Secret::new(password),
        commands: vec!["+@all".into()],
        keys: keys.iter().map(|s| s.to_string()).collect(),
        ..UserConfig::default()
    }
}

/// Runs MULTI, `queued` (each must be answered as `expect` says: `None` = QUEUED, `Some(p)`
/// = an error starting with `p`), then EXEC; returns EXEC's reply.
fn transaction(raw: &mut Raw, queued: &[(&[&str], Option<&str>)]) -> String {
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    for (args, expect) in queued {
        let got = raw.call(args);
        match expect {
            None => assert_eq!(got, "+QUEUED\r\n", "{args:?}"),
            Some(prefix) => assert!(got.starts_with(prefix), "{args:?}: {got}"),
        }
    }
    raw.call(&["EXEC"])
}

#[test]
fn any_refusal_while_queuing_makes_exec_abort() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::spawn(cluster.seeds(), |c| {
        c.auth.users = vec![user("app", "pw", &["app:*"])];
        c.client.max_transaction_commands = 5;
        c.client.max_transaction_bytes = 64 << 10;
    });
    let mut raw = logged_in(&proxy, &["app", "pw"]);
    let key = "app:{z}m";
    let set: &[&str] = &["SET", key, "v"];
    let refusals: Vec<(&[&str], &str)> = vec![
        (&["GET", "secret"], "-NOPERM"),
        (&["DEBUG", "SLEEP", "0"], "-ERR command 'debug' is disabled"),
        (&["GET"], "-ERR wrong number of arguments"),
        (&["NOSUCHCOMMAND", "x"], "-ERR unknown command"),
        (&["SET", "app:{y}other", "v"], "-CROSSSLOT"),
        (&["AUTH", "app", "pw"], "-ERR slotway: AUTH cannot be part"),
        (&["CLIENT", "SETNAME", "x"], "-ERR slotway:"),
    ];
    for (refused, prefix) in refusals {
        let exec = transaction(&mut raw, &[(set, None), (refused, Some(prefix))]);
        assert_eq!(exec, EXECABORT, "after {refused:?}");
        assert_eq!(
            on_node(&cluster, key),
            None,
            "SET applied after {refused:?}"
        );
    }
    // Refused with the key in a later position too, and commands after a refusal are still
    // answered QUEUED, as by Redis.
    let exec = transaction(
        &mut raw,
        &[
            (&["GET", "secret"], Some("-NOPERM")),
            (set, None),
            (&["INCR", "app:{z}n"], None),
        ],
    );
    assert_eq!(exec, EXECABORT);
    assert_eq!(on_node(&cluster, key), None);

    // Nested MULTI and WATCH inside MULTI are errors that do not abort, as in Redis.
    let exec = transaction(
        &mut raw,
        &[
            (&["MULTI"], Some("-ERR MULTI calls can not be nested")),
            (
                &["WATCH", key],
                Some("-ERR WATCH inside MULTI is not allowed"),
            ),
            (set, None),
        ],
    );
    assert_eq!(exec, "*1\r\n+OK\r\n");
    assert_eq!(on_node(&cluster, key).as_deref(), Some("v"));
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query(&mut direct(&cluster.primary_for_key(key)))
        .unwrap();

    // The queue's bounds: commands, then bytes. Past either the command is refused and the
    // whole transaction is discarded.
    let five: Vec<(&[&str], Option<&str>)> = (0..5).map(|_| (set, None)).collect();
    let mut six = five.clone();
    six.push((set, Some("-ERR slotway: transaction too large")));
    assert_eq!(transaction(&mut raw, &six), EXECABORT);
    assert_eq!(on_node(&cluster, key), None);
    let big = "x".repeat(40 << 10);
    let exec = transaction(
        &mut raw,
        &[
            (&["SET", key, &big], None),
            (
                &["SET", "app:{z}b", &big],
                Some("-ERR slotway: transaction too large"),
            ),
            (&["SET", "app:{z}c", "small"], None),
        ],
    );
    assert_eq!(exec, EXECABORT);
    assert_eq!(on_node(&cluster, key), None);
    assert_eq!(on_node(&cluster, "app:{z}c"), None);

    // Within the bounds everything runs.
    assert_eq!(
        transaction(&mut raw, &five),
        "*5\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n"
    );
    assert_eq!(on_node(&cluster, key).as_deref(), Some("v"));
}

#[test]
fn commands_that_need_every_shard_are_refused_inside_multi() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let keys = ["mk:{a}1", "mk:{b}2", "mk:{c}3", "mk:{d}4", "mk:{e}5"];
    let mut raw = Raw::connect(proxy.addr());
    for k in keys {
        assert_eq!(raw.call(&["SET", k, "v"]), "+OK\r\n");
    }
    let shards: std::collections::HashSet<String> =
        keys.iter().map(|k| cluster.primary_for_key(k)).collect();
    assert!(shards.len() > 1, "the keys should span shards");

    let every_shard = "-ERR slotway:";
    let refused: Vec<(&[&str], &str)> = vec![
        (&["DBSIZE"], every_shard),
        (&["KEYS", "mk:*"], every_shard),
        (&["FLUSHALL"], every_shard),
        (&["FLUSHDB"], every_shard),
        (&["SCAN", "0"], every_shard),
        (&["RANDOMKEY"], every_shard),
        (&["INFO", "keyspace"], every_shard),
        (&["WAIT", "0", "0"], every_shard),
        (&["SCRIPT", "FLUSH"], every_shard),
        (&["FUNCTION", "FLUSH"], every_shard),
        (&["SCRIPT", "LOAD", "return 1"], every_shard),
        (&["MGET", "mk:{a}1", "mk:{b}2"], "-CROSSSLOT"),
        (&["DEL", "mk:{a}1", "mk:{b}2"], "-CROSSSLOT"),
        (&["MSET", "mk:{a}1", "x", "mk:{b}2", "y"], "-CROSSSLOT"),
    ];
    for (cmd, prefix) in refused {
        let exec = transaction(
            &mut raw,
            &[(&["SET", "mk:{a}1", "changed"], None), (cmd, Some(prefix))],
        );
        assert_eq!(exec, EXECABORT, "after {cmd:?}");
    }
    let got = transaction(&mut raw, &[(&["DBSIZE"], Some(every_shard))]);
    assert_eq!(got, EXECABORT);
    // The refusal names the command and why.
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["FLUSHALL"]),
        "-ERR slotway: FLUSHALL cannot be part of a transaction (it needs every shard)\r\n"
    );
    assert_eq!(raw.call(&["EXEC"]), EXECABORT);
    // Nothing was flushed or changed anywhere.
    for k in keys {
        assert_eq!(on_node(&cluster, k).as_deref(), Some("v"), "{k}");
    }
    // Keyed commands in the transaction's slot still run.
    let exec = transaction(
        &mut raw,
        &[
            (&["MGET", "mk:{a}1", "mk:{a}x"], None),
            (&["DEL", "mk:{a}1"], None),
        ],
    );
    assert_eq!(exec, "*2\r\n*2\r\n$1\r\nv\r\n$-1\r\n:1\r\n");
    assert_eq!(on_node(&cluster, "mk:{a}1"), None);
}

/// SIGSTOPs processes (the replicas of one shard) and SIGCONTs them when dropped, also
/// when the test fails.
struct Frozen(Vec<u32>);

impl Frozen {
    fn new(pids: Vec<u32>) -> Self {
        for pid in &pids {
            signal("-STOP", *pid);
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            signal("-CONT", *pid);
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Stops Redis Cluster from moving a replica of another shard to a primary whose replicas
/// are frozen (replica migration to an orphaned primary), which would confirm its writes.
fn no_replica_migration(cluster: &TestCluster) {
    for addr in cluster.seeds() {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "cluster-allow-replica-migration", "no"])
            .query(&mut direct(&addr))
            .unwrap();
    }
}

/// The pids of the replicas of the shard serving `key`.
fn replica_pids(cluster: &TestCluster, key: &str) -> Vec<u32> {
    let primary = cluster.primary_index_for_slot(cluster.key_slot(key));
    let replicas = cluster.replicas_of(primary);
    assert_eq!(replicas.len(), 2, "two replicas expected");
    replicas
        .iter()
        .map(|&i| cluster.cluster().nodes()[i].pid().expect("running replica"))
        .collect()
}

/// Waits until every replica of `key`'s shard has acknowledged its primary's current offset
/// (after a thaw), so a later write starts from replicas in step.
fn replicas_in_step(cluster: &TestCluster, key: &str) {
    let primary = cluster.primary_for_key(key);
    wait_until(Duration::from_secs(30), "replicas to catch up", || {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut direct(&primary)).unwrap();
        let offset = match role.get(1) {
            Some(redis::Value::Int(n)) => *n,
            _ => return false,
        };
        let Some(redis::Value::Array(reps)) = role.get(2) else {
            return false;
        };
        reps.len() == 2
            && reps.iter().all(|r| match r {
                redis::Value::Array(f) => match f.get(2) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b)
                        .parse::<i64>()
                        .is_ok_and(|a| a >= offset),
                    _ => false,
                },
                _ => false,
            })
    });
}

/// Each way of writing that is not a plain command (a transaction on the shared connection,
/// and on dedicated ones: WATCH'd, RESP3, a blocking move, a RESP3 script), each done by a
/// fresh client so no earlier write of its own covers it; returns the clients for their WAIT.
fn write_each_way(proxy: &TestProxy, cluster: &TestCluster, round: usize) -> Vec<(String, Raw)> {
    let mut out = Vec::new();
    let mut raw = Raw::connect(proxy.addr());
    let exec = transaction(&mut raw, &[(&["SET", "w:{z}tx", &round.to_string()], None)]);
    assert_eq!(exec, "*1\r\n+OK\r\n");
    out.push(("MULTI/SET/EXEC".to_string(), raw));

    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(raw.call(&["WATCH", "w:{z}watched"]), "+OK\r\n");
    let exec = transaction(&mut raw, &[(&["SET", "w:{z}watched", "v"], None)]);
    assert_eq!(exec, "*1\r\n+OK\r\n");
    out.push(("WATCH+MULTI/SET/EXEC".to_string(), raw));

    // The list is filled on the node directly: the proxy client's only write is the move.
    let _: () = redis::cmd("RPUSH")
        .arg("w:{z}src")
        .arg("item")
        .query(&mut direct(&cluster.primary_for_key("w:{z}src")))
        .unwrap();
    let mut raw = Raw::connect(proxy.addr());
    let moved = raw.call(&["BLMOVE", "w:{z}src", "w:{z}dst", "LEFT", "RIGHT", "1"]);
    assert_eq!(moved, "$4\r\nitem\r\n");
    out.push(("BLMOVE".to_string(), raw));

    let mut raw = Raw::connect(proxy.addr());
    let hello = raw.call(&["HELLO", "3"]);
    assert!(hello.starts_with('%'), "{hello}");
    let script = "redis.call('SET', KEYS[1], ARGV[1]) return 1";
    let ran = raw.call(&["EVAL", script, "1", "w:{z}script", "v"]);
    assert_eq!(ran, ":1\r\n");
    out.push(("RESP3 EVAL".to_string(), raw));

    let mut raw = Raw::connect(proxy.addr());
    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    let exec = transaction(&mut raw, &[(&["HSET", "w:{z}h", "f", "v"], None)]);
    assert_eq!(exec, "*1\r\n:1\r\n");
    let _: () = redis::cmd("DEL")
        .arg("w:{z}h")
        .query(&mut direct(&cluster.primary_for_key("w:{z}h")))
        .unwrap();
    out.push(("RESP3 MULTI/HSET/EXEC".to_string(), raw));
    out
}

#[test]
fn wait_counts_only_replicas_that_have_the_clients_writes() {
    let cluster = TestCluster::start();
    // WAIT's timeout is capped at half the command timeout: room for a loaded machine.
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.command_timeout_ms = 20_000;
    });
    let key = "w:{z}tx";
    no_replica_migration(&cluster);
    replicas_in_step(&cluster, key);
    {
        let _frozen = Frozen::new(replica_pids(&cluster, key));
        for (how, mut raw) in write_each_way(&proxy, &cluster, 1) {
            assert_eq!(
                raw.call(&["WAIT", "1", "300"]),
                ":0\r\n",
                "WAIT after {how}"
            );
        }
    }
    replicas_in_step(&cluster, key);
    // WAITAOF is routed like WAIT; Redis 7.0 does not know it, and says so.
    let mut raw = Raw::connect(proxy.addr());
    let aof = raw.call(&["WAITAOF", "0", "1", "100"]);
    assert!(aof.starts_with("-ERR unknown command"), "{aof}");
    for (how, mut raw) in write_each_way(&proxy, &cluster, 2) {
        let got = raw.call(&["WAIT", "2", "8000"]);
        assert_eq!(got, ":2\r\n", "WAIT after {how} with live replicas");
    }
}

#[test]
fn durable_mode_confirms_exec_and_blocking_writes() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.durable_writes = true;
        c.cluster.durable_replicas = 2;
        c.cluster.durable_timeout_ms = 1000;
    });
    let key = "d:{z}k";
    let node = cluster.primary_for_key(key);
    let push = |list: &str| {
        let _: () = redis::cmd("RPUSH")
            .arg(list)
            .arg("item")
            .query(&mut direct(&node))
            .unwrap();
    };
    no_replica_migration(&cluster);
    replicas_in_step(&cluster, key);
    let mut raw = Raw::connect(proxy.addr());
    {
        let _frozen = Frozen::new(replica_pids(&cluster, key));
        let plain = raw.call(&["SET", key, "plain"]);
        assert!(plain.contains("may not be durable"), "{plain}");
        assert!(plain.contains("0 of 2"), "{plain}");

        let exec = transaction(&mut raw, &[(&["SET", key, "tx"], None)]);
        assert_eq!(exec, plain, "MULTI/SET/EXEC");
        assert_eq!(raw.call(&["WATCH", key]), "+OK\r\n");
        let exec = transaction(&mut raw, &[(&["SET", key, "watched"], None)]);
        assert_eq!(exec, plain, "WATCH+MULTI/SET/EXEC");
        // A read-only transaction has nothing to confirm.
        let exec = transaction(&mut raw, &[(&["GET", key], None)]);
        assert_eq!(exec, "*1\r\n$7\r\nwatched\r\n");

        push("d:{z}src");
        let moved = raw.call(&["BLMOVE", "d:{z}src", "d:{z}dst", "LEFT", "RIGHT", "1"]);
        assert_eq!(moved, plain, "BLMOVE");
        push("d:{z}src");
        let moved = raw.call(&["BRPOPLPUSH", "d:{z}src", "d:{z}dst", "1"]);
        assert_eq!(moved, plain, "BRPOPLPUSH");
        push("d:{z}src");
        let popped = raw.call(&["BLMPOP", "1", "1", "d:{z}src", "LEFT"]);
        assert_eq!(popped, plain, "BLMPOP");
        push("d:{z}src");
        let popped = raw.call(&["BLPOP", "d:{z}src", "1"]);
        assert_eq!(popped, plain, "BLPOP");
        let mut node_con = direct(&node);
        let _: () = redis::cmd("ZADD")
            .arg("d:{z}zs")
            .arg(1)
            .arg("m")
            .query(&mut node_con)
            .unwrap();
        let popped = raw.call(&["BZPOPMIN", "d:{z}zs", "1"]);
        assert_eq!(popped, plain, "BZPOPMIN");
        let _: () = redis::cmd("XGROUP")
            .arg(&["CREATE", "d:{z}st", "g", "$", "MKSTREAM"])
            .query(&mut node_con)
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&["d:{z}st", "*", "f", "v"])
            .query(&mut node_con)
            .unwrap();
        let read = raw.call(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "100",
            "STREAMS",
            "d:{z}st",
            ">",
        ]);
        assert_eq!(read, plain, "XREADGROUP BLOCK (writes the PEL)");
        // A pop that times out wrote nothing: its null reply is passed on.
        assert_eq!(raw.call(&["BLPOP", "d:{z}empty", "0.1"]), "*-1\r\n");
        // A split write is confirmed part by part.
        let split = raw.call(&["MSET", "d:{z}a", "1", "d:{y}b", "2", "d:{x}c", "3"]);
        assert!(split.contains("may not be durable"), "{split}");
    }
    replicas_in_step(&cluster, key);
    let exec = transaction(&mut raw, &[(&["SET", key, "tx"], None)]);
    assert_eq!(exec, "*1\r\n+OK\r\n");
    assert_eq!(raw.call(&["WATCH", key]), "+OK\r\n");
    let exec = transaction(&mut raw, &[(&["SET", key, "watched"], None)]);
    assert_eq!(exec, "*1\r\n+OK\r\n");
    push("d:{z}src");
    let moved = raw.call(&["BLMOVE", "d:{z}src", "d:{z}dst", "LEFT", "RIGHT", "1"]);
    assert_eq!(moved, "$4\r\nitem\r\n");
}

#[test]
fn transactions_on_shared_connections_never_interleave() {
    let cluster = TestCluster::start_with(3, 0);
    // One shared connection per node: every client's transactions go through it.
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.connections_per_node = 1;
        c.backend.max_dedicated_per_node = 1;
    });
    let addr = proxy.addr();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                for _ in 0..50 {
                    let mut batch = Vec::new();
                    for args in [
                        &["MULTI"][..],
                        &["INCR", "il:{c}n"],
                        &["INCR", "il:{c}n"],
                        &["GET", "il:{c}n"],
                        &["EXEC"],
                    ] {
                        batch.extend(common::resp::encode(args));
                    }
                    raw.send_bytes(&batch);
                    let replies: Vec<String> = (0..5)
                        .map(|_| String::from_utf8_lossy(&raw.frame()).into_owned())
                        .collect();
                    let exec = &replies[4];
                    let nums: Vec<i64> = exec
                        .split("\r\n")
                        .filter_map(|l| l.strip_prefix(':'))
                        .map(|n| n.parse().unwrap())
                        .collect();
                    assert_eq!(nums.len(), 2, "{replies:?}");
                    assert_eq!(nums[1], nums[0] + 1, "interleaved: {exec}");
                    assert!(exec.ends_with(&format!("\r\n{}\r\n", nums[1])), "{exec}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(on_node(&cluster, "il:{c}n").as_deref(), Some("800"));
}
