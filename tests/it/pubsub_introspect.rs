//! `PUBSUB NUMSUB / CHANNELS / NUMPAT / SHARDNUMSUB / SHARDCHANNELS` through the proxy count
//! the subscribers of the whole cluster: clients connected straight to primaries and to
//! replicas, and slotway's own subscribers, as one Redis server holding them all would.

use std::time::Duration;

use crate::common::cluster::{wait_until, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;

/// A direct connection to node `i` that ran `args` (a subscribe naming `n` channels).
fn subscribed(cluster: &TestCluster, i: usize, args: &[&str]) -> Raw {
    let mut c = Raw::connect_str(&cluster.node_addr(i));
    c.send(args);
    for _ in 1..args.len() {
        let confirm = String::from_utf8_lossy(&c.frame()).into_owned();
        assert!(
            confirm.contains("subscribe"),
            "{args:?} on node {i}: {confirm}"
        );
    }
    c
}

/// The elements of a flat array of bulk strings, sorted.
fn sorted_items(reply: &str) -> Vec<String> {
    let mut items: Vec<String> = reply
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.starts_with('$') && !l.is_empty())
        .map(String::from)
        .collect();
    items.sort();
    items
}

/// `[name, count …]` as Redis encodes a NUMSUB reply.
fn numsub(pairs: &[(&str, i64)]) -> String {
    let mut out = format!("*{}\r\n", pairs.len() * 2);
    for (name, n) in pairs {
        out.push_str(&format!("${}\r\n{name}\r\n:{n}\r\n", name.len()));
    }
    out
}

#[test]
fn introspection_counts_subscribers_on_every_node() {
    let cluster = TestCluster::start_with(3, 1);
    let proxy = TestProxy::start(cluster.seeds());
    proxy.wait_routing(Duration::from_secs(30));

    // Shard channels in two different shards.
    let (sa, sb) = ("{sa}chan", "{sb}chan");
    let pa = cluster.primary_index_for_slot(cluster.key_slot(sa));
    let pb = cluster.primary_index_for_slot(cluster.key_slot(sb));
    assert_ne!(pa, pb, "test channels must live in different shards");
    let ra = cluster.replicas_of(pa)[0];
    let rb = cluster.replicas_of(pb)[0];

    // Direct subscribers: a primary, a replica, and shard subscribers on a primary and on
    // its replica.
    let _d1 = subscribed(&cluster, pa, &["SUBSCRIBE", "ch1"]);
    let _d2 = subscribed(&cluster, rb, &["SUBSCRIBE", "ch1", "ch2"]);
    let _d3 = subscribed(&cluster, ra, &["PSUBSCRIBE", "p*"]);
    let _d4 = subscribed(&cluster, pb, &["PSUBSCRIBE", "q*"]);
    let _d5 = subscribed(&cluster, pa, &["SSUBSCRIBE", sa]);
    let _d6 = subscribed(&cluster, ra, &["SSUBSCRIBE", sa]);
    // slotway's own subscribers.
    let mut s1 = Raw::connect(proxy.addr());
    assert!(s1.call(&["SUBSCRIBE", "ch1"]).contains("subscribe"));
    let mut s2 = Raw::connect(proxy.addr());
    assert!(s2.call(&["SSUBSCRIBE", sa]).contains("ssubscribe"));
    let mut s3 = Raw::connect(proxy.addr());
    assert!(s3.call(&["SSUBSCRIBE", sb]).contains("ssubscribe"));

    let mut q = Raw::connect(proxy.addr());
    let want = numsub(&[("ch1", 3), ("ch2", 1), ("nope", 0), ("ch1", 3)]);
    wait_until(
        Duration::from_secs(30),
        "NUMSUB to count every node",
        || q.call(&["PUBSUB", "NUMSUB", "ch1", "ch2", "nope", "ch1"]) == want,
    );
    assert_eq!(q.call(&["PUBSUB", "NUMSUB"]), "*0\r\n");
    assert_eq!(q.call(&["PUBSUB", "NUMPAT"]), ":2\r\n");
    assert_eq!(
        sorted_items(&q.call(&["PUBSUB", "CHANNELS"])),
        ["ch1", "ch2"]
    );
    assert_eq!(q.call(&["PUBSUB", "CHANNELS", "*2"]), "*1\r\n$3\r\nch2\r\n");
    let want = numsub(&[(sa, 3), (sb, 1), ("{sa}none", 0)]);
    wait_until(Duration::from_secs(30), "SHARDNUMSUB per shard", || {
        q.call(&["PUBSUB", "SHARDNUMSUB", sa, sb, "{sa}none"]) == want
    });
    assert_eq!(
        sorted_items(&q.call(&["PUBSUB", "SHARDCHANNELS"])),
        [sa, sb]
    );

    // RESP3: the same reply types as a node's.
    let mut node = Raw::connect_str(&cluster.node_addr(pa));
    assert!(node.call(&["HELLO", "3"]).starts_with('%'));
    assert!(q.call(&["HELLO", "3"]).starts_with('%'));
    for args in [
        &["PUBSUB", "NUMSUB", "ch2"][..],
        &["PUBSUB", "NUMPAT"],
        &["PUBSUB", "CHANNELS", "ch2"],
        &["PUBSUB", "SHARDNUMSUB", "{sa}none"],
    ] {
        let (ours, theirs) = (q.call(args), node.call(args));
        assert_eq!(ours[..1], theirs[..1], "{args:?}: {ours} vs {theirs}");
    }
    assert_eq!(q.call(&["PUBSUB", "NUMSUB", "ch2"]), numsub(&[("ch2", 1)]));
}
