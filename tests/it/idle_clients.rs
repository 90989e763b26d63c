//! Idle client connections: a connection that has not sent anything holds no session buffers,
//! and one that goes quiet releases them (the "resting" state) and keeps what the client set
//! on it (protocol, name, pinned WATCH), answering correctly when traffic resumes.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::raw::Raw;
use slotway::proxy::resting_clients;

/// Polls until `want` connections rest, or fails after a generous deadline.
fn wait_resting(want: usize) {
    let end = Instant::now() + Duration::from_secs(30);
    while resting_clients() != want {
        assert!(
            Instant::now() < end,
            "{} connections resting, expected {want}",
            resting_clients()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_rest_while_quiet_and_keep_their_state() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    // The routing probe's connection has closed and its session ended.
    wait_resting(0);

    // Never-used connections rest from the start.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(proxy.addr()).unwrap())
        .collect();
    wait_resting(20);

    let mut a = Raw::connect(proxy.addr());
    wait_resting(21);
    let hello = a.text(&["HELLO", "3", "SETNAME", "idle-a"]);
    assert!(hello.starts_with("%"), "RESP3 map expected: {hello}");
    assert_eq!(a.text(&["SET", "idle:k", "v1"]), "+OK\r\n");
    // `a` goes back to resting once quiet, without closing.
    wait_resting(21);

    // Everything the client set survives the rest.
    assert_eq!(a.text(&["CLIENT", "GETNAME"]), "$6\r\nidle-a\r\n");
    assert_eq!(a.text(&["GET", "idle:k"]), "$2\r\nv1\r\n");
    // RESP3 stays in force: a map reply comes back as a map.
    assert_eq!(a.text(&["HSET", "idle:h", "f", "x"]), ":1\r\n");
    assert_eq!(
        a.text(&["HGETALL", "idle:h"]),
        "%1\r\n$1\r\nf\r\n$1\r\nx\r\n"
    );

    // A pipeline on a fresh connection: buffers grow and replies stay in order.
    wait_resting(21);
    let mut batch = Vec::new();
    for i in 0..200 {
        let v = format!("v{i}");
        batch.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$6\r\nidle:p\r\n${}\r\n{v}\r\n*2\r\n$3\r\nGET\r\n$6\r\nidle:p\r\n",
                v.len()
            )
            .as_bytes(),
        );
    }
    let mut b = Raw::connect(proxy.addr());
    b.send_bytes(&batch);
    for i in 0..200 {
        assert_eq!(b.read_reply(), b"+OK\r\n");
        let v = format!("v{i}");
        assert_eq!(
            b.read_reply(),
            format!("${}\r\n{v}\r\n", v.len()).into_bytes()
        );
    }

    // A WATCH pins a dedicated connection: the session keeps it across a quiet period.
    assert_eq!(a.text(&["WATCH", "idle:k"]), "+OK\r\n");
    wait_resting(22);
    assert_eq!(a.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.text(&["SET", "idle:k", "v2"]), "+QUEUED\r\n");
    assert_eq!(a.text(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(a.text(&["GET", "idle:k"]), "$2\r\nv2\r\n");

    drop(idle);
    drop(a);
    wait_resting(1);
}

#[test]
fn a_resting_client_is_closed_after_the_idle_timeout_not_before() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| c.client.idle_timeout_ms = 2500);
    let mut a = Raw::connect(proxy.addr());
    assert_eq!(a.text(&["SET", "idle:t", "1"]), "+OK\r\n");
    let last = Instant::now();
    // The session comes to rest after a quiet second; the timeout still counts from the
    // last reply, with that second included.
    let mut stream = a.into_stream();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut stream, &mut buf).expect("closed within 30 s");
    assert_eq!(n, 0, "expected the proxy to close the connection");
    let silent = last.elapsed();
    assert!(
        silent >= Duration::from_millis(2400),
        "closed after {silent:?} of silence, before the 2.5 s idle timeout"
    );
}
