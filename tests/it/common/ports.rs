//! Free loopback ports for everything a test starts (cluster nodes, standalone servers, proxies,
//! admin endpoints, seeds nobody listens on): the one place the tests get ports from.
//!
//! A port is handed out only when it and its cluster bus port (+10000) are free, and never twice
//! in one process: every module of the `it` binary shares this set, so two tests cannot be given
//! the same port even while the first has not bound it yet, and a port is not handed out as
//! another node's bus port either. Ports and bus ports stay below the Linux ephemeral range
//! (32768+), so the kernel never picks them for outgoing connections. Another process may still
//! take a port between the probe and the bind; cluster starters retry on such a clash.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

/// Lowest port handed out.
const PORT_MIN: u16 = 10000;
/// Highest port handed out; its bus port (+10000) is still below the ephemeral range.
const PORT_MAX: u16 = 22767;
/// Redis Cluster's bus port is the client port plus this.
const BUS_OFFSET: u16 = 10000;

/// Ports handed out in this process, with their bus ports.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` consecutive ports, each free on 127.0.0.1 with its bus port, never handed out before
/// in this process. Random placement keeps concurrently running test processes apart.
pub fn free_ports(count: usize) -> Vec<u16> {
    let span = u16::try_from(count).expect("a sane number of ports");
    // A test that panicked while holding the lock left the set consistent: it only inserts.
    let mut handed = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let base = fastrand::u16(PORT_MIN..=PORT_MAX - span);
        let ports: Vec<u16> = (base..base + span).collect();
        let usable = |p: u16| {
            !handed.contains(&p)
                && !handed.contains(&(p + BUS_OFFSET))
                && port_free(p)
                && port_free(p + BUS_OFFSET)
        };
        if ports.iter().all(|&p| usable(p)) {
            for &p in &ports {
                handed.insert(p);
                handed.insert(p + BUS_OFFSET);
            }
            return ports;
        }
    }
    panic!("no {count} free consecutive ports (and bus ports) found");
}

/// One free port (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// A free loopback address, for a listener the test starts or a seed nobody listens on.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

fn port_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
