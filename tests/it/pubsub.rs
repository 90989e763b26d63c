//! Pub/Sub through the proxy: SUBSCRIBE/PSUBSCRIBE cluster-wide, SSUBSCRIBE on the shard of
//! the channel's slot, subscribed-mode rules, subscriptions restored after a failover, and a
//! subscriber that does not read being disconnected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::resp::{encode, Raw};
use redis::Commands;

fn text(frame: Vec<u8>) -> String {
    String::from_utf8_lossy(&frame).into_owned()
}

/// Publishes `msg` on `channel` (with `verb`, PUBLISH or SPUBLISH) every 200 ms until `sub`
/// receives a frame containing it.
fn publish_until_received(
    publisher: &mut redis::Connection,
    sub: &mut Raw,
    verb: &str,
    channel: &str,
    msg: &str,
    deadline: Duration,
) -> String {
    let end = Instant::now() + deadline;
    sub.timeout(Duration::from_millis(200));
    loop {
        let _: redis::RedisResult<i64> = redis::cmd(verb).arg(channel).arg(msg).query(publisher);
        while let Some(f) = sub.try_frame() {
            let f = text(f);
            if f.contains(msg) {
                sub.timeout(Duration::from_secs(10));
                return f;
            }
        }
        assert!(
            Instant::now() < end,
            "no {verb} of {msg} on {channel} arrived"
        );
    }
}

/// The running primaries, as `host:port`.
fn primaries(cluster: &TestCluster) -> Vec<String> {
    let mut p: Vec<String> = (0..16384u16)
        .step_by(512)
        .map(|s| cluster.primary_for_slot(s))
        .collect();
    p.sort();
    p.dedup();
    p
}

/// The node whose `PUBSUB <sub>` lists `channel`.
fn node_with(cluster: &TestCluster, sub: &str, channel: &str) -> Option<String> {
    primaries(cluster).into_iter().find(|n| {
        let mut con = common::cluster::direct(n);
        let chans: Vec<String> = redis::cmd("PUBSUB").arg(sub).query(&mut con).unwrap();
        chans.iter().any(|c| c == channel)
    })
}

#[test]
fn subscribe_publish_and_subscribed_mode() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut publisher = proxy.client();
    let mut sub = Raw::connect(proxy.addr());

    assert_eq!(
        sub.call(&["SUBSCRIBE", "news", "sport"]),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n"
    );
    assert_eq!(
        sub.call(&["PSUBSCRIBE", "weather.*"]),
        "*3\r\n$10\r\npsubscribe\r\n$9\r\nweather.*\r\n:3\r\n"
    );
    // Confirmed means subscribed on the node: a PUBLISH right now is delivered.
    let _: i64 = publisher.publish("news", "first").unwrap();
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nfirst\r\n"
    );
    let _: i64 = publisher.publish("weather.rome", "sunny").unwrap();
    assert_eq!(
        text(sub.frame()),
        "*4\r\n$8\r\npmessage\r\n$9\r\nweather.*\r\n$12\r\nweather.rome\r\n$5\r\nsunny\r\n"
    );

    // Subscribed mode (RESP2): only the commands Redis allows.
    assert_eq!(sub.call(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(
        sub.call(&["PING", "hi"]),
        "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"
    );
    assert_eq!(
        sub.call(&["GET", "k"]),
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );

    // Unsubscribe: confirmations with falling counts; no more messages for the channel.
    assert_eq!(
        sub.call(&["UNSUBSCRIBE", "news"]),
        "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:2\r\n"
    );
    let _: i64 = publisher.publish("news", "unwanted").unwrap();
    let _: i64 = publisher.publish("sport", "goal").unwrap();
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$7\r\nmessage\r\n$5\r\nsport\r\n$4\r\ngoal\r\n"
    );
    sub.send_bytes(&[encode(&["UNSUBSCRIBE"]), encode(&["PUNSUBSCRIBE"])].concat());
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:1\r\n"
    );
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$12\r\npunsubscribe\r\n$9\r\nweather.*\r\n:0\r\n"
    );
    // Back to a normal connection.
    assert_eq!(sub.call(&["PING"]), "+PONG\r\n");
    assert_eq!(sub.call(&["GET", "nothing"]), "$-1\r\n");
    assert_eq!(
        sub.call(&["UNSUBSCRIBE"]),
        "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    );

    // SSUBSCRIBE lands on the shard that owns the channel's slot.
    assert_eq!(
        sub.call(&["SSUBSCRIBE", "{orders}eu", "{orders}us"]),
        "*3\r\n$10\r\nssubscribe\r\n$10\r\n{orders}eu\r\n:1\r\n"
    );
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$10\r\nssubscribe\r\n$10\r\n{orders}us\r\n:2\r\n"
    );
    assert_eq!(
        node_with(&cluster, "SHARDCHANNELS", "{orders}eu"),
        Some(cluster.primary_for_key("{orders}eu"))
    );
    assert_eq!(
        sub.call(&["SSUBSCRIBE", "a", "b"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    let _: i64 = redis::cmd("SPUBLISH")
        .arg("{orders}us")
        .arg("shipped")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(
        text(sub.frame()),
        "*3\r\n$8\r\nsmessage\r\n$10\r\n{orders}us\r\n$7\r\nshipped\r\n"
    );
    assert_eq!(
        sub.call(&["SUNSUBSCRIBE", "{orders}eu"]),
        "*3\r\n$12\r\nsunsubscribe\r\n$10\r\n{orders}eu\r\n:1\r\n"
    );
    // RESET leaves subscribed mode.
    assert_eq!(sub.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(sub.call(&["PING"]), "+PONG\r\n");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(node_with(&cluster, "SHARDCHANNELS", "{orders}us"), None);
}

#[test]
fn subscriptions_survive_a_failover() {
    let mut cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.refresh_interval_ms = 1000;
    });
    let mut publisher = proxy.client();
    let mut sub = Raw::connect(proxy.addr());
    assert!(sub.call(&["SUBSCRIBE", "alerts"]).contains("subscribe"));
    let node = node_with(&cluster, "CHANNELS", "alerts").expect("a node has the subscription");
    // A shard channel owned by the same node, so one kill tests both kinds.
    let shard_channel = (0..)
        .map(|i| format!("sc:{i}"))
        .find(|c| cluster.primary_for_key(c) == node)
        .unwrap();
    assert!(sub
        .call(&["SSUBSCRIBE", &shard_channel])
        .contains("ssubscribe"));
    publish_until_received(
        &mut publisher,
        &mut sub,
        "PUBLISH",
        "alerts",
        "before",
        Duration::from_secs(5),
    );

    let idx = (0..cluster.len())
        .find(|&i| cluster.node_addr(i) == node)
        .unwrap();
    cluster.kill_node(idx);
    publish_until_received(
        &mut publisher,
        &mut sub,
        "PUBLISH",
        "alerts",
        "after-failover",
        Duration::from_secs(30),
    );
    publish_until_received(
        &mut publisher,
        &mut sub,
        "SPUBLISH",
        &shard_channel,
        "shard-after-failover",
        Duration::from_secs(30),
    );
    assert_ne!(cluster.primary_for_key(&shard_channel), node);
}

#[test]
fn a_subscriber_that_does_not_read_is_disconnected() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.client.pubsub_buffer_bytes = 4 << 20;
    });
    let mut slow = Raw::connect(proxy.addr());
    assert!(slow.call(&["SUBSCRIBE", "firehose"]).contains("subscribe"));
    let mut fast = Raw::connect(proxy.addr());
    assert!(fast.call(&["SUBSCRIBE", "firehose"]).contains("subscribe"));
    let mut publisher = proxy.client();
    let payload = "x".repeat(16 << 10);
    // 48 MiB, paced by the reading subscriber: far more than the socket buffers between the
    // proxy and the slow client, never more than one batch ahead of the fast one.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let reader = thread::spawn(move || {
        fast.timeout(Duration::from_secs(10));
        while counter.load(Ordering::SeqCst) < 3072 {
            match fast.try_frame() {
                Some(_) => counter.fetch_add(1, Ordering::SeqCst),
                None => break,
            };
        }
        counter.load(Ordering::SeqCst)
    });
    for chunk in 1..=48 {
        let mut pipe = redis::pipe();
        for _ in 0..64 {
            pipe.cmd("PUBLISH").arg("firehose").arg(&payload).ignore();
        }
        let _: () = pipe.query(&mut publisher).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::SeqCst) < chunk * 64 && Instant::now() < end {
            thread::sleep(Duration::from_millis(2));
        }
    }
    slow.timeout(Duration::from_secs(20));
    assert!(
        slow.closed_by_peer(),
        "the slow subscriber was not disconnected"
    );
    assert_eq!(
        reader.join().unwrap(),
        3072,
        "a reading subscriber got everything"
    );
    let pong: String = redis::cmd("PING").query(&mut publisher).unwrap();
    assert_eq!(pong, "PONG");
    let _: Option<String> = publisher.get("still-works").unwrap();
}
