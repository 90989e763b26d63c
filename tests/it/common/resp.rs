//! A raw RESP connection for tests that check exact reply bytes (RESP2 or RESP3), pipelining
//! and out-of-band pushes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use slotway::protocol::ResponseScanner;

/// One raw client connection.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    scanner: ResponseScanner,
}

/// Encodes one request.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    out
}

impl Raw {
    /// Connects with a 10 s read timeout.
    pub fn connect(addr: impl Into<SocketAddr>) -> Self {
        let stream = TcpStream::connect(addr.into()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
            scanner: ResponseScanner::new(64),
        }
    }

    /// Connects to a `host:port` string.
    pub fn connect_str(addr: &str) -> Self {
        Self::connect(addr.parse::<SocketAddr>().expect("addr"))
    }

    /// Sets the read timeout.
    pub fn timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// Sends one request without reading.
    pub fn send(&mut self, args: &[&str]) {
        self.stream.write_all(&encode(args)).unwrap();
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one complete reply frame, or None on EOF / timeout.
    pub fn try_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(r) = self.scanner.scan(&self.buf).expect("valid RESP") {
                return Some(self.buf.drain(..r.len).collect());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one complete reply frame.
    pub fn frame(&mut self) -> Vec<u8> {
        self.try_frame().expect("a reply frame")
    }

    /// Sends a request and returns its reply as text (lossy) for easy assertions.
    pub fn call(&mut self, args: &[&str]) -> String {
        self.send(args);
        String::from_utf8_lossy(&self.frame()).into_owned()
    }

    /// True once the peer has closed the connection (reads until EOF, up to the timeout).
    pub fn closed_by_peer(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
