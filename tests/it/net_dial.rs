//! `net::dial` against real redis-servers: refused AUTH names the node and never the
//! password, a closed port fails within the connect timeout, and HELLO 3, CLIENT SETNAME
//! and READONLY are in force on the connection it returns.

use std::time::{Duration, Instant};

use slotway::net::{dial, Credentials, DialError, DialOptions, NodeAddr, NodeStream, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::cluster::{direct, TestCluster};
use crate::common::standalone::Standalone;

const PASSWORD: &str = "right-horse-battery";
const WRONG: &str = "hunter2-wrong";

fn opts() -> DialOptions {
    DialOptions {
        connect_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(2),
        ..DialOptions::default()
    }
}

/// Sends `CLIENT INFO` on a dialled connection and returns the line it answers.
async fn client_info(conn: &mut NodeStream) -> String {
    conn.stream
        .write_all(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n")
        .await
        .expect("write CLIENT INFO");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    // The reply is one bulk (RESP2) or verbatim (RESP3) string ending in "\n\r\n".
    while !buf.ends_with(b"\n\r\n") {
        assert!(Instant::now() < deadline, "no CLIENT INFO reply: {buf:?}");
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.stream.read(&mut chunk))
            .await
            .expect("CLIENT INFO within 5 s")
            .expect("read CLIENT INFO");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_refused_auth_names_the_node_not_the_password() {
    let server = Standalone::start();
    let addr = NodeAddr::from(server.addr());
    let mut admin = direct(&addr.to_string());
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query::<()>(&mut admin)
        .expect("set requirepass");

    let wrong = DialOptions {
        auth: Credentials::from_parts("", &Secret::new(WRONG)),
        ..opts()
    };
    let err = dial(&addr, &wrong).await.expect_err("wrong password");
    assert!(matches!(err, DialError::AuthRefused { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains(&addr.to_string()), "{shown}");
    assert!(
        !shown.contains(WRONG) && !format!("{err:?}").contains(WRONG),
        "{shown}"
    );

    let user = DialOptions {
        auth: Credentials::from_parts("nobody", &Secret::new(PASSWORD)),
        ..opts()
    };
    let err = dial(&addr, &user).await.expect_err("unknown user");
    assert!(matches!(err, DialError::AuthRefused { .. }), "{err:?}");

    let right = DialOptions {
        auth: Credentials::from_parts("", &Secret::new(PASSWORD)),
        ping: true,
        ..opts()
    };
    let mut conn = dial(&addr, &right).await.expect("right password");
    assert!(client_info(&mut conn).await.contains("cmd=client"));
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_within_the_timeout() {
    let port = crate::common::ports::free_port();
    let addr: NodeAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let started = Instant::now();
    let err = dial(&addr, &opts()).await.expect_err("nobody listens");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            DialError::Connect { .. } | DialError::ConnectTimeout { .. }
        ),
        "{err:?}"
    );
    assert!(err.is_unreachable());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn hello_setname_and_setinfo_are_applied() {
    let server = Standalone::start();
    let addr = NodeAddr::from(server.addr());
    let asked = DialOptions {
        hello: Some(3),
        client_name: Some("slotway-net-test".into()),
        // Refused by Redis before 7.2; the dial must not fail for it.
        lib_info: true,
        ping: true,
        ..opts()
    };
    let mut conn = dial(&addr, &asked).await.expect("dial");
    assert_eq!(conn.peer, server.addr());
    let info = client_info(&mut conn).await;
    assert!(
        info.starts_with('='),
        "RESP3 verbatim string expected: {info}"
    );
    assert!(info.contains("resp=3"), "{info}");
    assert!(info.contains("name=slotway-net-test"), "{info}");

    // READONLY on a server without cluster support is refused, and says which node.
    let readonly = DialOptions {
        readonly: true,
        ..opts()
    };
    let err = dial(&addr, &readonly)
        .await
        .expect_err("not a cluster node");
    assert!(
        matches!(
            err,
            DialError::Refused {
                command: "READONLY",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn readonly_is_in_force_on_a_cluster_node() {
    let cluster = TestCluster::start_with(1, 0);
    let addr: NodeAddr = cluster.node_addr(0).parse().expect("node address");
    let asked = DialOptions {
        readonly: true,
        ..opts()
    };
    let mut conn = dial(&addr, &asked).await.expect("dial");
    let info = client_info(&mut conn).await;
    // CLIENT INFO flags: `r` = the connection is in READONLY mode.
    let flags = info
        .split_whitespace()
        .find_map(|f| f.strip_prefix("flags="))
        .unwrap_or_default();
    assert!(flags.contains('r'), "{info}");
}
