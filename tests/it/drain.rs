//! Graceful drain on SIGTERM, as Kubernetes sends it: the proxy stops accepting, finishes the
//! requests clients already sent, closes idle clients and exits 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cluster::TestCluster;
use crate::common::ports::free_addr;

/// The slotway binary, killed on drop if a test fails half way.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                return s;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "proxy not listening: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Sends one inline command and reads one single-line reply.
fn exchange(s: &mut TcpStream, req: &[u8]) -> Vec<u8> {
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        s.read_exact(&mut byte).unwrap();
        out.push(byte[0]);
    }
    out
}

/// True when the node does not answer PING within a short time: it is busy running a script.
fn node_busy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_err()
}

#[test]
fn sigterm_finishes_in_flight_requests_closes_idle_clients_and_exits_zero() {
    let cluster = TestCluster::start();
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .args(["--listen", &addr.to_string()])
        .args(["--seeds", &cluster.seeds().join(",")])
        .env("SLOTWAY_CLIENT_DRAIN_GRACE_MS", "15000")
        // One worker runs the current-thread scheduler (main.rs); the other binary tests run
        // the default multi-thread one, so the drain covers this one.
        .env("SLOTWAY_RUNTIME_WORKER_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proxy = Binary(child);

    // Wait until the proxy routes.
    let mut idle = connect(addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while exchange(&mut idle, b"SET drain-k v\r\n") != b"+OK\r\n" {
        assert!(Instant::now() < deadline, "proxy never routed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The primaries, asked before the script starts: asking a node that is running it would
    // wait for the script to end, and the busy window would pass unseen.
    let nodes: Vec<String> = [0, 8000, 16000]
        .iter()
        .map(|&slot| cluster.primary_for_slot(slot))
        .collect();
    // A request that keeps a primary busy for a few seconds (under Redis's 5 s busy-script limit) (a Lua loop, not a sleep).
    let mut busy = connect(addr);
    busy.write_all(b"EVAL \"local i = 0 while i < 60000000 do i = i + 1 end return 7\" 0\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nodes.iter().any(|a| node_busy(a)) {
        assert!(
            Instant::now() < deadline,
            "the script never started on a node"
        );
    }

    let term = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());

    // The in-flight script's reply still arrives, then the connection closes.
    let mut reply = Vec::new();
    busy.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b":7\r\n");
    // The idle client is closed without a reply.
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "idle client got {rest:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = proxy.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "slotway did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}
