//! Blocking commands through the proxy: each runs on a dedicated backend connection, so it
//! never stalls the multiplexed ones; timeouts are the server's; a client that goes away
//! releases its backend connection.

use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::resp::{encode, Raw};
use redis::Commands;

/// Connections on `node` currently running `cmd` (per CLIENT LIST).
fn running(node: &str, cmd: &str) -> usize {
    let mut con = common::cluster::direct(node);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    list.lines()
        .filter(|l| l.contains(&format!(" cmd={cmd} ")))
        .count()
}

fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn blocking_commands() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.max_dedicated_per_node = 24;
    });
    let addr = proxy.addr();

    // BLPOP wakes when another client pushes.
    let waiter = thread::spawn(move || {
        let mut raw = Raw::connect(addr);
        raw.call(&["BLPOP", "{b}list", "10"])
    });
    let owner = cluster.primary_for_key("{b}list");
    wait_until("BLPOP to block on the node", Duration::from_secs(5), || {
        running(&owner, "blpop") == 1
    });
    let mut con = proxy.client();
    let _: () = con.lpush("{b}list", "hello").unwrap();
    assert_eq!(
        waiter.join().unwrap(),
        "*2\r\n$7\r\n{b}list\r\n$5\r\nhello\r\n"
    );

    // The server's timeout is honoured (and the proxy's own command timeout does not cut a
    // longer block short).
    let mut raw = Raw::connect(addr);
    let started = Instant::now();
    assert_eq!(raw.call(&["BLPOP", "{b}empty", "1"]), "*-1\r\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let started = Instant::now();
    assert_eq!(
        raw.call(&["XREAD", "BLOCK", "300", "STREAMS", "{b}stream", "$"]),
        "*-1\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A push pipelined before the pop on the same connection is seen by the pop, and the
    // request after it waits for it, as on one Redis connection.
    let mut batch = encode(&["RPUSH", "{b}pipe", "a"]);
    batch.extend(encode(&["BLPOP", "{b}pipe", "5"]));
    batch.extend(encode(&["LLEN", "{b}pipe"]));
    raw.send_bytes(&batch);
    assert_eq!(String::from_utf8_lossy(&raw.frame()), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&raw.frame()),
        "*2\r\n$7\r\n{b}pipe\r\n$1\r\na\r\n"
    );
    assert_eq!(String::from_utf8_lossy(&raw.frame()), ":0\r\n");

    // 20 blocked clients do not stall regular traffic.
    let blocked: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                raw.timeout(Duration::from_secs(30));
                raw.call(&["BLPOP", &format!("wake:{i}"), "0"])
            })
        })
        .collect();
    let nodes: Vec<String> = (0..20)
        .map(|i| cluster.primary_for_key(&format!("wake:{i}")))
        .collect();
    let mut unique = nodes.clone();
    unique.sort();
    unique.dedup();
    wait_until("20 blocked clients", Duration::from_secs(10), || {
        unique.iter().map(|n| running(n, "blpop")).sum::<usize>() == 20
    });
    let mut worst = Duration::ZERO;
    for i in 0..300 {
        let started = Instant::now();
        let _: Option<String> = con.get(format!("regular:{i}")).unwrap();
        worst = worst.max(started.elapsed());
    }
    assert!(
        worst < Duration::from_millis(200),
        "a GET took {worst:?} while clients were blocked"
    );
    for i in 0..20 {
        let _: () = con.rpush(format!("wake:{i}"), "go").unwrap();
    }
    for (i, t) in blocked.into_iter().enumerate() {
        let key = format!("wake:{i}");
        assert_eq!(
            t.join().unwrap(),
            format!("*2\r\n${}\r\n{key}\r\n$2\r\ngo\r\n", key.len())
        );
    }

    // A client that disconnects while blocked releases its backend connection.
    let mut gone: Vec<Raw> = (0..5)
        .map(|_| {
            let mut r = Raw::connect(addr);
            r.send(&["BRPOP", "{b}never", "0"]);
            r
        })
        .collect();
    wait_until("5 blocked BRPOPs", Duration::from_secs(5), || {
        running(&owner, "brpop") == 5
    });
    gone.truncate(2);
    wait_until(
        "3 backend connections released",
        Duration::from_secs(5),
        || running(&owner, "brpop") == 2,
    );
    drop(gone);
    wait_until(
        "all backend connections released",
        Duration::from_secs(5),
        || running(&owner, "brpop") == 0,
    );
    // The released slots are usable again.
    let mut raw = Raw::connect(addr);
    assert_eq!(raw.call(&["BLPOP", "{b}empty", "0.1"]), "*-1\r\n");

    // Past backend.max_dedicated_per_node, a clear error (after a short wait for a release).
    let hogs: Vec<Raw> = (0..24)
        .map(|_| {
            let mut r = Raw::connect(addr);
            r.send(&["BLPOP", "{b}hog", "0"]);
            r
        })
        .collect();
    wait_until("24 blocked clients", Duration::from_secs(10), || {
        running(&owner, "blpop") == 24
    });
    let mut raw = Raw::connect(addr);
    let reply = raw.call(&["BLPOP", "{b}hog", "0"]);
    assert!(
        reply.starts_with("-ERR slotway: no dedicated connection left")
            && reply.contains("max_dedicated_per_node"),
        "{reply}"
    );
    // The refused client's connection still works.
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n");
    drop(hogs);
    wait_until("hogs released", Duration::from_secs(5), || {
        running(&owner, "blpop") == 0
    });
}
