//! RESP3 for the replies slotway builds itself (INFO, the CLUSTER emulation, merged fan-out
//! replies) and for scripts, whose RESP3 form only a RESP3 connection can produce: each is
//! checked against what a real node answers a `HELLO 3` client.

use std::time::Duration;

use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;

/// The type structure of one RESP3 value: `*[…]` for an aggregate (its first element's
/// structure, since counts differ between a one-node emulation and a real cluster), `%{k:…}`
/// for a map with its keys, one character for a scalar. Returns it and the bytes used.
fn skeleton(buf: &[u8]) -> (String, usize) {
    let cr = buf.windows(2).position(|w| w == b"\r\n").expect("line");
    let head = std::str::from_utf8(&buf[1..cr]).expect("header");
    let after = cr + 2;
    match buf[0] {
        b'$' | b'=' | b'!' => {
            let n: usize = head.parse().expect("length");
            ((buf[0] as char).to_string(), after + n + 2)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n: usize = head.parse().expect("count");
            let map = buf[0] == b'%';
            let mut at = after;
            let mut parts = Vec::new();
            for i in 0..(if map { n * 2 } else { n }) {
                let (s, used) = skeleton(&buf[at..]);
                if map && i % 2 == 0 {
                    let key = &buf[at..at + used];
                    let text = String::from_utf8_lossy(key);
                    parts.push(text.split("\r\n").nth(1).unwrap_or("").to_string());
                } else {
                    parts.push(s);
                }
                at += used;
            }
            let shape = if map {
                let pairs: Vec<String> = parts.chunks(2).map(|p| p.join(":")).collect();
                format!("%{{{}}}", pairs.join(","))
            } else {
                format!(
                    "{}[{}]",
                    buf[0] as char,
                    parts.first().cloned().unwrap_or_default()
                )
            };
            (shape, at)
        }
        other => ((other as char).to_string(), after),
    }
}

fn shape_of(frame: &str) -> String {
    let (s, used) = skeleton(frame.as_bytes());
    assert_eq!(used, frame.len(), "one frame: {frame:?}");
    s
}

#[test]
fn replies_built_by_the_proxy_follow_the_clients_protocol() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    proxy.wait_routing(Duration::from_secs(30));
    let mut node = Raw::connect_str(&cluster.primary_for_key("{b}"));
    let mut p = Raw::connect(proxy.addr());
    assert!(node.call(&["HELLO", "3"]).starts_with('%'));
    assert!(p.call(&["HELLO", "3"]).starts_with('%'));

    // INFO: the proxy's own sections alone, merged with the nodes', and the keyspace sum.
    assert_eq!(p.call(&["SET", "{b}k", "v"]), "+OK\r\n");
    for args in [
        &["INFO"][..],
        &["INFO", "clients"],
        &["INFO", "server"],
        &["INFO", "keyspace"],
    ] {
        let ours = p.call(args);
        let theirs = node.call(args);
        assert!(
            ours.starts_with('=') && ours.contains("\r\ntxt:# "),
            "{args:?}: {ours}"
        );
        assert!(theirs.starts_with('='), "{args:?}: {theirs}");
    }
    assert!(p.call(&["INFO", "keyspace"]).contains("db0:keys=1,"));

    // The cluster emulation against a real node's replies.
    for sub in ["INFO", "NODES", "SHARDS", "SLOTS", "MYID"] {
        let ours = p.call(&["CLUSTER", sub]);
        let theirs = node.call(&["CLUSTER", sub]);
        assert_eq!(shape_of(&ours), shape_of(&theirs), "CLUSTER {sub}");
    }
    assert!(p
        .call(&["CLUSTER", "SHARDS"])
        .starts_with("*1\r\n%2\r\n$5\r\nslots\r\n"));

    // Merged fan-out replies: nulls, integers and arrays in RESP3 form.
    assert_eq!(
        p.call(&["MGET", "{b}k", "{other}missing"]),
        "*2\r\n$1\r\nv\r\n_\r\n"
    );
    assert_eq!(p.call(&["DEL", "{b}k", "{other}missing"]), ":1\r\n");
    assert_eq!(p.call(&["RANDOMKEY"]), node.call(&["RANDOMKEY"]));
    assert_eq!(p.call(&["DBSIZE"]), ":0\r\n");
    let ours = p.call(&["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(ours, node.call(&["CONFIG", "GET", "maxmemory-policy"]));
    assert!(ours.starts_with("%1\r\n"), "{ours}");

    // RESP2 again: the same commands give RESP2 forms.
    assert!(p.call(&["HELLO", "2"]).starts_with("*14\r\n"));
    assert!(p.call(&["INFO", "clients"]).starts_with('$'));
    assert!(p.call(&["CLUSTER", "SHARDS"]).starts_with("*1\r\n*4\r\n"));
    assert!(p.call(&["CLUSTER", "NODES"]).starts_with('$'));
}

#[test]
fn scripts_reply_in_resp3_for_a_resp3_client() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    proxy.wait_routing(Duration::from_secs(30));
    let mut node = Raw::connect_str(&cluster.primary_for_key("{s}"));
    let mut p = Raw::connect(proxy.addr());
    assert!(node.call(&["HELLO", "3"]).starts_with('%'));
    assert!(p.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(p.call(&["HSET", "{s}h", "f", "v"]), ":1\r\n");
    for args in [
        &["EVAL", "return {double=1.25}", "0"][..],
        &["EVAL", "return {map={a=1}}", "0"],
        &[
            "EVAL",
            "redis.setresp(3); return redis.call('HGETALL', KEYS[1])",
            "1",
            "{s}h",
        ],
        &[
            "EVAL",
            "redis.setresp(3); return redis.call('GET', KEYS[1])",
            "1",
            "{s}none",
        ],
        &[
            "EVAL",
            "redis.setresp(3); return redis.call('HEXISTS', KEYS[1], 'f') == 1",
            "1",
            "{s}h",
        ],
    ] {
        assert_eq!(p.call(args), node.call(args), "{args:?}");
    }
    assert_eq!(p.call(&["EVAL", "return {double=1.25}", "0"]), ",1.25\r\n");

    // Pipelined around a script: replies stay in request order.
    let body = "return {double=tonumber(ARGV[1])}";
    p.send(&["SET", "{s}a", "1"]);
    p.send(&["EVAL", body, "0", "2.5"]);
    p.send(&["INCR", "{s}a"]);
    let replies: Vec<String> = (0..3)
        .map(|_| String::from_utf8_lossy(&p.frame()).into_owned())
        .collect();
    assert_eq!(replies, ["+OK\r\n", ",2.5\r\n", ":2\r\n"]);

    // EVALSHA after the node lost its scripts: slotway loads the body it saw and retries.
    let sha = p.call(&["SCRIPT", "LOAD", body]);
    let sha = sha.split("\r\n").nth(1).expect("sha").to_string();
    for i in 0..cluster.len() {
        let mut c = Raw::connect_str(&cluster.node_addr(i));
        assert_eq!(c.call(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    }
    assert_eq!(p.call(&["EVALSHA", &sha, "0", "4"]), ",4\r\n");

    // A RESP2 client gets the RESP2 forms on the shared connections.
    assert!(p.call(&["HELLO", "2"]).starts_with('*'));
    assert_eq!(
        p.call(&["EVAL", "return {double=1.25}", "0"]),
        "$4\r\n1.25\r\n"
    );
}

#[test]
fn dedicated_requests_follow_ask_during_a_migration() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    proxy.wait_routing(Duration::from_secs(30));
    let slot = cluster.key_slot("{m}");
    let src = cluster.primary_index_for_slot(slot);
    let dst = cluster
        .slot_owners(src)
        .into_iter()
        .find(|&i| i != src)
        .expect("another primary");
    let (src_id, dst_id) = (cluster.node_id(src), cluster.node_id(dst));
    let slot = slot.to_string();
    let mut to = Raw::connect_str(&cluster.node_addr(dst));
    let mut from = Raw::connect_str(&cluster.node_addr(src));
    assert_eq!(
        to.call(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]),
        "+OK\r\n"
    );
    assert_eq!(
        from.call(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]),
        "+OK\r\n"
    );

    // Keys missing on the source are asked for on the target: a RESP3 script and a
    // blocking command (both on dedicated connections) follow the ASK.
    let mut p = Raw::connect(proxy.addr());
    assert!(p.call(&["HELLO", "3"]).starts_with('%'));
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return {double=2}";
    assert_eq!(p.call(&["EVAL", script, "1", "{m}k", "v"]), ",2\r\n");
    assert_eq!(to.call(&["ASKING"]), "+OK\r\n");
    assert_eq!(to.call(&["GET", "{m}k"]), "$1\r\nv\r\n");
    assert_eq!(p.call(&["BLPOP", "{m}none", "0.1"]), "_\r\n");
}

#[test]
fn resp3_script_writes_are_durable_in_durable_mode() {
    let cluster = TestCluster::start_with(3, 1);
    // Two confirmations wanted, one replica per shard: every write is reported not durable.
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.durable_writes = true;
        c.cluster.durable_replicas = 2;
        c.cluster.durable_timeout_ms = 100;
    });
    proxy.wait_routing(Duration::from_secs(30));
    let mut p = Raw::connect(proxy.addr());
    assert!(p.call(&["HELLO", "3"]).starts_with('%'));
    let write = "redis.call('SET', KEYS[1], ARGV[1]); return {double=1}";
    let reply = p.call(&["EVAL", write, "1", "{w}k", "v"]);
    assert!(reply.contains("may not be durable"), "{reply}");
    // Applied on the primary all the same; a read-only script waits for nobody.
    let read = "return redis.call('GET', KEYS[1])";
    assert_eq!(p.call(&["EVAL_RO", read, "1", "{w}k"]), "$1\r\nv\r\n");
}
