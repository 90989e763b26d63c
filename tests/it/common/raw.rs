//! A bare RESP connection for tests that compare exact reply bytes (error texts, frames the
//! `redis` crate would reinterpret).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use slotway::protocol::{encode, ResponseScanner};

/// One TCP connection speaking raw RESP.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: impl std::net::ToSocketAddrs) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends one command and returns its complete reply frame.
    pub fn call(&mut self, args: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        encode::command(&mut out, &refs);
        self.stream.write_all(&out).expect("write");
        self.read_reply()
    }

    /// The underlying socket (to watch for a close).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// A second handle on the socket, to write from another thread while this one reads.
    // Only tests/bounded_caches.rs (a target of its own) uses it.
    #[allow(dead_code)]
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the socket")
    }

    /// Sends bytes as they are (a pipeline); read the replies with `read_reply`.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one command and returns its reply as (lossy) text.
    pub fn text(&mut self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.call(args)).into_owned()
    }

    /// Reads the next complete reply frame.
    pub fn read_reply(&mut self) -> Vec<u8> {
        let mut scanner = ResponseScanner::new(64);
        loop {
            if let Some(r) = scanner.scan(&self.buf).expect("valid RESP") {
                return self.buf.drain(..r.len).collect();
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Reads until the peer closes or `quiet` passes without data; returns (bytes, closed).
pub fn read_all(s: &mut TcpStream, quiet: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, false)
            }
            Err(_) => return (out, true),
        }
    }
}
