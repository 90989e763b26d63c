//! The core data path through a real 9-node cluster: routing, ordering under pipelining,
//! concurrency, local commands, errors that keep the connection usable, and a node dying.
//! Each test starts its own cluster; run with --test-threads=1 (tests/run.sh does).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cluster::TestCluster;
use crate::common::ports::free_addr;
use crate::common::proxy::TestProxy;
use redis::Commands;
use slotway::cluster::slot::key_slot;

fn random_key(i: usize) -> String {
    format!("key:{}:{}", i, fastrand::u64(..))
}

/// Sends raw bytes and reads until `expect` bytes arrived (or the peer closed / timed out).
fn raw_exchange(addr: std::net::SocketAddr, send: &[u8], expect: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(send).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < expect {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn ten_thousand_keys_land_on_their_owners() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let keys: Vec<(String, String)> = (0..10_000)
        .map(|i| (random_key(i), format!("value-{i}")))
        .collect();
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for (k, v) in chunk {
            pipe.set(k, v).ignore();
        }
        pipe.query::<()>(&mut con).unwrap();
    }
    // Read each key directly from the primary that owns its slot: a node answers MOVED for
    // keys it does not own, so a successful read proves where the proxy put the key.
    let mut by_owner: HashMap<String, Vec<&(String, String)>> = HashMap::new();
    for kv in &keys {
        by_owner
            .entry(cluster.primary_for_slot(key_slot(kv.0.as_bytes())))
            .or_default()
            .push(kv);
    }
    assert_eq!(
        by_owner.len(),
        3,
        "10,000 random keys should span all three shards"
    );
    for (owner, kvs) in by_owner {
        let mut direct = common::cluster::direct(&owner);
        for (k, v) in kvs {
            let got: String = direct.get(k).unwrap();
            assert_eq!(&got, v, "key {k} on {owner}");
        }
    }
}

#[test]
fn hash_tagged_keys_share_a_node_and_multi_key_commands_work() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let _: () = redis::cmd("MSET")
        .arg("{user1000}.name")
        .arg("ada")
        .arg("{user1000}.following")
        .arg("42")
        .query(&mut con)
        .unwrap();
    let got: Vec<String> = redis::cmd("MGET")
        .arg("{user1000}.name")
        .arg("{user1000}.following")
        .query(&mut con)
        .unwrap();
    assert_eq!(got, vec!["ada", "42"]);
    let _: () = redis::cmd("RENAME")
        .arg("{user1000}.name")
        .arg("{user1000}.alias")
        .query(&mut con)
        .unwrap();
    let owner = cluster.primary_for_slot(3443);
    let mut direct = common::cluster::direct(&owner);
    let alias: String = direct.get("{user1000}.alias").unwrap();
    let following: String = direct.get("{user1000}.following").unwrap();
    assert_eq!((alias.as_str(), following.as_str()), ("ada", "42"));

    let err = redis::cmd("RENAME")
        .arg("a")
        .arg("b")
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
}

#[test]
fn a_ten_thousand_command_pipeline_is_answered_in_order() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.set(format!("p:{i}"), i).ignore();
        pipe.get(format!("p:{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(got, (0..5_000).collect::<Vec<i64>>());

    // Interleave local and forwarded commands: order must hold across both kinds.
    let mut pipe = redis::pipe();
    for i in 0..1_000 {
        pipe.cmd("ECHO").arg(format!("e{i}"));
        pipe.get(format!("p:{i}"));
    }
    let got: Vec<String> = pipe.query(&mut con).unwrap();
    for i in 0..1_000 {
        assert_eq!(got[2 * i], format!("e{i}"));
        assert_eq!(got[2 * i + 1], i.to_string());
    }
}

#[test]
fn two_hundred_concurrent_clients() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let url = proxy.url();
    let threads: Vec<_> = (0..200)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = redis::Client::open(url).unwrap();
                let mut con = client.get_connection().unwrap();
                for i in 0..50 {
                    let key = format!("c{c}:k{i}");
                    let _: () = con.set(&key, i * c).unwrap();
                    let got: usize = con.get(&key).unwrap();
                    assert_eq!(got, i * c);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn local_commands_and_errors_keep_the_connection_usable() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
    assert_eq!(
        redis::cmd("PING")
            .arg("hi")
            .query::<String>(&mut con)
            .unwrap(),
        "hi"
    );
    assert_eq!(
        redis::cmd("ECHO")
            .arg("x y")
            .query::<String>(&mut con)
            .unwrap(),
        "x y"
    );
    assert_eq!(
        redis::cmd("SELECT")
            .arg(0)
            .query::<String>(&mut con)
            .unwrap(),
        "OK"
    );
    let err = redis::cmd("SELECT")
        .arg(1)
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("SELECT is not allowed in cluster mode"),
        "{err}"
    );

    let err = redis::cmd("NOSUCHCMD")
        .arg("a")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown command 'NOSUCHCMD'"),
        "{err}"
    );
    let err = redis::cmd("GET").query::<String>(&mut con).unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'get'"),
        "{err}"
    );
    let err = redis::cmd("MONITOR").query::<String>(&mut con).unwrap_err();
    assert!(
        // Refused by the default command policy before it could be found unsupported.
        err.to_string()
            .contains("command 'monitor' is disabled by slotway's command policy"),
        "{err}"
    );
    // Still usable after every error.
    let _: () = con.set("after-errors", 1).unwrap();
    assert_eq!(con.get::<_, i64>("after-errors").unwrap(), 1);
    // COMMAND is forwarded to a node.
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    assert!(count > 200, "COMMAND COUNT = {count}");
}

#[test]
fn raw_protocol_inline_quit_and_protocol_errors() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    // Inline commands, as telnet users type them, with quoting.
    let out = raw_exchange(proxy.addr(), b"SET inl \"a b\"\r\nGET inl\r\nPING\r\n", 20);
    assert_eq!(out, b"+OK\r\n$3\r\na b\r\n+PONG\r\n");
    // QUIT answers +OK after earlier replies, then closes.
    let out = raw_exchange(
        proxy.addr(),
        b"*2\r\n$3\r\nGET\r\n$3\r\ninl\r\n*1\r\n$4\r\nQUIT\r\n",
        1 << 20,
    );
    assert_eq!(out, b"$3\r\na b\r\n+OK\r\n");
    // A protocol error gets Redis's error and a close.
    let out = raw_exchange(proxy.addr(), b"*1\r\n$abc\r\n", 1 << 20);
    assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");
    // A request split across many writes is reassembled.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for b in b"*3\r\n$3\r\nSET\r\n$5\r\nslow1\r\n$5\r\nvalue\r\n" {
        s.write_all(&[*b]).unwrap();
        s.flush().unwrap();
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+OK\r\n");
}

#[test]
fn redis_cli_works_through_the_proxy() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let port = proxy.addr().port().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "{:?}", out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "cli-key", "cli-value"]), "OK");
    assert_eq!(cli(&["GET", "cli-key"]), "cli-value");
    assert_eq!(cli(&["INCRBY", "cli-counter", "5"]), "5");
    assert_eq!(cli(&["PING"]), "PONG");
}

#[test]
fn a_node_killed_while_idle_does_not_take_the_proxy_down() {
    let mut cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let keys: Vec<String> = (0..300).map(random_key).collect();
    for k in &keys {
        let _: () = con.set(k, k).unwrap();
    }
    let owner = cluster.primary_for_slot(key_slot(keys[0].as_bytes()));
    let victim = (0..cluster.len())
        .find(|&i| cluster.node_addr(i) == owner)
        .expect("owner is a cluster node");
    cluster.kill_node(victim);
    // The proxy stays up and keeps serving; once Redis has promoted a replica (a few seconds
    // at cluster-node-timeout 2000 ms) every key is readable again through the same proxy.
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut con = proxy.client();
        let all_ok = keys
            .iter()
            .all(|k| con.get::<_, String>(k).map(|v| &v == k).unwrap_or(false));
        if all_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keys not readable after the failover"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn no_reachable_seed_gives_a_quick_clear_error() {
    // A port nobody listens on: the proxy starts, keeps retrying, and answers at once.
    let dead = free_addr().to_string();
    let proxy = TestProxy::spawn(vec![dead], |_| {});
    let mut con = proxy.client();
    let started = Instant::now();
    let err = con.get::<_, String>("k").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
}
