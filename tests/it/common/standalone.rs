//! A plain (non-cluster) `redis-server` for differential tests: the reference a single Redis
//! server would give, killed and deleted on drop.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::cluster::wait_until;
use super::ports::free_port;

/// One standalone redis-server on a free port of 127.0.0.1, without persistence.
pub struct Standalone {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Standalone {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("slotway-standalone-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a standalone redis-server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_until(Duration::from_secs(30), "the standalone redis", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
