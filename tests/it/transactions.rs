//! MULTI / EXEC / DISCARD / WATCH through the proxy against a real 3-shard cluster.

use std::time::Duration;

use crate::common;
use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::resp::{encode, Raw};
use redis::Commands;

#[test]
fn transactions() {
    let cluster = TestCluster::start();
    // One dedicated connection per node: every transaction reuses the same backend
    // connection, so a WATCH left behind would break the next transaction.
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.max_transaction_per_node = 1;
    });

    // MULTI … EXEC with keys in one slot, replies passed through in order.
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{t}a", "1"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["INCR", "{t}a"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["PING"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["GET", "{t}a"]), "+QUEUED\r\n");
    assert_eq!(
        raw.call(&["EXEC"]),
        "*4\r\n+OK\r\n:2\r\n+PONG\r\n$1\r\n2\r\n"
    );

    // MULTI survives being pipelined, together with requests before and after it.
    let mut con = proxy.client();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{p}n", 5)
        .incr("{p}n", 1)
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b), (5, 6));
    let mut batch = Vec::new();
    for args in [
        &["SET", "{q}x", "before"][..],
        &["MULTI"],
        &["APPEND", "{q}x", "-in"],
        &["GET", "{q}x"],
        &["EXEC"],
        &["GET", "{q}x"],
    ] {
        batch.extend(encode(args));
    }
    raw.send_bytes(&batch);
    let replies: Vec<String> = (0..6)
        .map(|_| String::from_utf8_lossy(&raw.frame()).into_owned())
        .collect();
    assert_eq!(
        replies,
        [
            "+OK\r\n",
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*2\r\n:9\r\n$9\r\nbefore-in\r\n",
            "$9\r\nbefore-in\r\n"
        ]
    );

    // A key in another slot inside the transaction: CROSSSLOT, then EXECABORT.
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{t}a", "x"]), "+QUEUED\r\n");
    assert_eq!(
        raw.call(&["SET", "{other}b", "y"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        raw.call(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    let v: String = con.get("{t}a").unwrap();
    assert_eq!(v, "2", "an aborted transaction runs nothing");

    // Queue-time errors Redis gives, and the errors outside MULTI.
    assert_eq!(raw.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(raw.call(&["DISCARD"]), "-ERR DISCARD without MULTI\r\n");
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["MULTI"]),
        "-ERR MULTI calls can not be nested\r\n"
    );
    assert_eq!(
        raw.call(&["WATCH", "{t}a"]),
        "-ERR WATCH inside MULTI is not allowed\r\n"
    );
    assert!(raw
        .call(&["GET"])
        .starts_with("-ERR wrong number of arguments"));
    assert_eq!(
        raw.call(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );

    // DISCARD drops the queue.
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{t}a", "discarded"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["DISCARD"]), "+OK\r\n");
    let v: String = con.get("{t}a").unwrap();
    assert_eq!(v, "2");
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["EXEC"]), "*0\r\n");

    // WATCH conflict: another client changes the key, EXEC answers nil.
    assert_eq!(raw.call(&["WATCH", "{w}k"]), "+OK\r\n");
    assert_eq!(raw.call(&["GET", "{w}k"]), "$-1\r\n");
    let _: () = con.set("{w}k", "theirs").unwrap();
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{w}k", "mine"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["EXEC"]), "*-1\r\n");
    let v: String = con.get("{w}k").unwrap();
    assert_eq!(v, "theirs");
    // Without a conflict the watched transaction runs.
    assert_eq!(raw.call(&["WATCH", "{w}k"]), "+OK\r\n");
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{w}k", "mine"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");
    // WATCH and the transaction must share a slot.
    assert_eq!(raw.call(&["WATCH", "{w}k"]), "+OK\r\n");
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        raw.call(&["SET", "{elsewhere}k", "1"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert!(raw.call(&["EXEC"]).starts_with("-EXECABORT"));

    // The pinned connection goes back clean: a WATCH ended by UNWATCH (or by a client that
    // disconnected) must not make a later transaction on the same backend connection fail.
    assert_eq!(raw.call(&["WATCH", "{w}k"]), "+OK\r\n");
    assert_eq!(raw.call(&["UNWATCH"]), "+OK\r\n");
    {
        let mut gone = Raw::connect(proxy.addr());
        assert_eq!(gone.call(&["WATCH", "{w}k"]), "+OK\r\n");
    }
    std::thread::sleep(Duration::from_millis(200));
    let _: () = con.set("{w}k", "changed").unwrap();
    let mut fresh = Raw::connect(proxy.addr());
    assert_eq!(fresh.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(fresh.call(&["SET", "{w}k", "fresh"]), "+QUEUED\r\n");
    assert_eq!(fresh.call(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(fresh.call(&["GET", "{w}k"]), "$5\r\nfresh\r\n");

    // Many transactions from fresh clients do not pile up connections on the node.
    let owner = cluster.primary_for_key("{t}a");
    for i in 0..50 {
        let mut c = proxy.client();
        let (n,): (i64,) = redis::pipe()
            .atomic()
            .incr("{t}count", 1)
            .query(&mut c)
            .unwrap();
        assert_eq!(n, i + 1);
    }
    let mut node = common::cluster::direct(&owner);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut node).unwrap();
    assert!(
        list.lines().count() < 12,
        "connections on the node after 50 transactions:\n{list}"
    );

    // RESET inside a transaction ends it.
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{t}a", "reset"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(raw.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(raw.call(&["GET", "{t}a"]), "$1\r\n2\r\n");
}

#[test]
fn a_slot_move_or_a_lost_node_ends_the_transaction_with_a_clear_error() {
    let mut cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut raw = Raw::connect(proxy.addr());

    // Move the (empty) slot of {mv}k to another primary between WATCH and EXEC.
    let slot = cluster.key_slot("{mv}k");
    let source = cluster.primary_for_slot(slot);
    let target = (0..16384u16)
        .step_by(1000)
        .map(|s| cluster.primary_for_slot(s))
        .find(|n| *n != source)
        .unwrap();
    let target_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut common::cluster::direct(&target))
        .unwrap();
    assert_eq!(raw.call(&["WATCH", "{mv}k"]), "+OK\r\n");
    for node in [&target, &source] {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&target_id)
            .query(&mut common::cluster::direct(node))
            .unwrap();
    }
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{mv}k", "1"]), "+QUEUED\r\n");
    let reply = raw.call(&["EXEC"]);
    assert!(
        reply.starts_with("-ERR slotway: transaction aborted (nothing was executed)")
            && reply.contains("MOVED"),
        "{reply}"
    );
    // The proxy learned the move: the next transaction runs on the new owner.
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", "{mv}k", "2"]), "+QUEUED\r\n");
    assert_eq!(raw.call(&["EXEC"]), "*1\r\n+OK\r\n");
    let v: String = common::cluster::direct(&target).get("{mv}k").unwrap();
    assert_eq!(v, "2");

    // The node holding a WATCH dies: EXEC reports the lost connection and the transaction ends.
    // (A primary the slot move did not touch, so its replicas take over cleanly.)
    let third = (0..16384u16)
        .step_by(500)
        .map(|s| cluster.primary_for_slot(s))
        .find(|n| *n != source && *n != target)
        .unwrap();
    let key = (0..)
        .map(|i| format!("{{lost{i}}}k"))
        .find(|k| cluster.primary_for_key(k) == third)
        .unwrap();
    assert_eq!(raw.call(&["WATCH", &key]), "+OK\r\n");
    let idx = (0..cluster.len())
        .find(|&i| cluster.node_addr(i) == third)
        .unwrap();
    cluster.kill_node(idx);
    assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.call(&["SET", &key, "3"]), "+QUEUED\r\n");
    let reply = raw.call(&["EXEC"]);
    assert!(reply.starts_with("-ERR slotway: "), "{reply}");
    assert_eq!(raw.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    // After the failover a new transaction works again.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
        assert_eq!(raw.call(&["SET", &key, "4"]), "+QUEUED\r\n");
        let last = raw.call(&["EXEC"]);
        if last == "*1\r\n+OK\r\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "no transaction after the failover: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
