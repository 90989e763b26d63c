//! A tiny blocking RESP2 client used to bootstrap and inspect the local cluster.
//!
//! It owns nothing but one `TcpStream`, made by `net::dial` like every connection to a
//! node; the launcher and the integration tests use
//! it to send control commands (`CLUSTER ...`, `ROLE`, `PING`). It is not meant for
//! the data path: every call is one round trip and replies are decoded into a tree.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::LocalError;
use crate::net::{dial, AddrError, DialError, DialOptions, NodeAddr, NodeStream};
use crate::tls::UpstreamStream;

/// Upper bound on one reply, so a confused peer cannot make us buffer forever.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// One decoded RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+...` simple string.
    Status(String),
    /// `-...` error line.
    Error(String),
    /// `:...` integer.
    Int(i64),
    /// `$...` bulk string.
    Bulk(Vec<u8>),
    /// `*...` array.
    Array(Vec<Reply>),
    /// `$-1` / `*-1` null.
    Nil,
}

impl Reply {
    /// The reply as text when it is a status or bulk string (lossy UTF-8).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The integer value, if this is an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements, if this is an array reply.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Turns an error reply into `LocalError::Server`, passing anything else through.
    pub fn into_result(self) -> Result<Reply, LocalError> {
        match self {
            Reply::Error(e) => Err(LocalError::Server(e)),
            other => Ok(other),
        }
    }
}

impl From<OwnedFrame> for Reply {
    fn from(frame: OwnedFrame) -> Self {
        match frame {
            OwnedFrame::SimpleString(s) => Reply::Status(String::from_utf8_lossy(&s).into_owned()),
            OwnedFrame::Error(e) => Reply::Error(e),
            OwnedFrame::Integer(i) => Reply::Int(i),
            OwnedFrame::BulkString(b) => Reply::Bulk(b),
            OwnedFrame::Array(items) => Reply::Array(items.into_iter().map(Reply::from).collect()),
            OwnedFrame::Null => Reply::Nil,
        }
    }
}

/// A blocking connection to one Redis node.
#[derive(Debug)]
pub struct NodeClient {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read past the end of the previous reply (kept for the next call).
    buf: Vec<u8>,
}

impl NodeClient {
    /// Connects to `addr` (`host:port`, as [`NodeAddr`] reads it) through [`crate::net::dial`]
    /// within `timeout`; the same timeout then bounds every read and write.
    pub fn connect(addr: impl fmt::Display, timeout: Duration) -> Result<Self, LocalError> {
        let text = addr.to_string();
        let node: NodeAddr = text
            .parse()
            .map_err(|e: AddrError| LocalError::InvalidOptions(e.to_string()))?;
        let opts = DialOptions {
            connect_timeout: timeout,
            handshake_timeout: timeout,
            ..DialOptions::default()
        };
        let connecting = |e| LocalError::io(format!("connecting to {node}"), e);
        let NodeStream { stream, peer } = dial_blocking(&node, &opts).map_err(|e| {
            // Keep the socket's error kind (refused, timed out) for callers that look at it.
            let kind = match &e {
                DialError::Connect { source, .. } => source.kind(),
                DialError::ConnectTimeout { .. } => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::Other,
            };
            connecting(io::Error::new(kind, e))
        })?;
        let UpstreamStream::Plain(tcp) = stream else {
            // Not reachable: the options above ask for no TLS.
            return Err(LocalError::Protocol(format!(
                "{node}: unexpected TLS stream"
            )));
        };
        let tcp = tcp.into_std().map_err(connecting)?;
        tcp.set_nonblocking(false).map_err(connecting)?;
        Self::from_stream(tcp, peer, timeout)
    }

    fn from_stream(
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, LocalError> {
        let setup = |e| LocalError::io(format!("configuring connection to {peer}"), e);
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        stream.set_nodelay(true).map_err(setup)?;
        Ok(NodeClient {
            stream,
            peer,
            buf: Vec::new(),
        })
    }

    /// The address this client is connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one command and reads its reply; error replies come back as `Reply::Error`.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, LocalError> {
        let request = encode_command(args);
        self.stream
            .write_all(&request)
            .map_err(|e| LocalError::io(format!("writing to {}", self.peer), e))?;
        self.read_reply()
    }

    /// Like [`NodeClient::call`], but an error reply becomes `Err(LocalError::Server)`.
    pub fn call_ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, LocalError> {
        self.call(args)?.into_result()
    }

    fn read_reply(&mut self) -> Result<Reply, LocalError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // The decoder restarts from byte 0 on partial input; acceptable for the
            // small control-plane replies this client handles.
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(Reply::from(frame));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(LocalError::Protocol(format!(
                        "bad reply from {}: {e}",
                        self.peer
                    )))
                }
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(LocalError::Protocol(format!(
                    "reply from {} too large",
                    self.peer
                )));
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| LocalError::io(format!("reading from {}", self.peer), e))?;
            if n == 0 {
                return Err(LocalError::Protocol(format!(
                    "{} closed the connection",
                    self.peer
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Runs [`dial`] to completion from blocking code. The launcher and the test harness call
/// this from plain threads and from inside async tests alike, so the dial gets its own
/// thread and single-threaded runtime rather than the caller's.
fn dial_blocking(node: &NodeAddr, opts: &DialOptions) -> Result<NodeStream, DialError> {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| -> Result<NodeStream, DialError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| lost(node, e))?;
            runtime.block_on(dial(node, opts))
        });
        worker
            .join()
            .unwrap_or_else(|_| Err(lost(node, io::Error::other("the dialling thread panicked"))))
    })
}

fn lost(node: &NodeAddr, e: io::Error) -> DialError {
    DialError::Lost {
        addr: node.clone(),
        source: std::sync::Arc::new(e),
    }
}

/// Encodes a command as a RESP array of bulk strings.
fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn encodes_bulk_array() {
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn converts_frames() {
        let frame = OwnedFrame::Array(vec![
            OwnedFrame::SimpleString(b"OK".to_vec()),
            OwnedFrame::Integer(-3),
            OwnedFrame::Null,
            OwnedFrame::Error("ERR x".into()),
        ]);
        assert_eq!(
            Reply::from(frame),
            Reply::Array(vec![
                Reply::Status("OK".into()),
                Reply::Int(-3),
                Reply::Nil,
                Reply::Error("ERR x".into())
            ])
        );
        assert!(matches!(
            Reply::Error("ERR x".into()).into_result(),
            Err(LocalError::Server(_))
        ));
    }

    #[test]
    fn reads_replies_split_across_writes_and_keeps_leftovers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut req = [0u8; 64];
            let _ = sock.read(&mut req).unwrap();
            // First reply in three pieces, immediately followed by a second reply.
            for piece in [&b"*2\r\n$5\r\nhel"[..], b"lo\r\n:4", b"2\r\n+PONG\r\n"] {
                sock.write_all(piece).unwrap();
                sock.flush().unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            let _ = sock.read(&mut req).unwrap();
        });
        let mut client = NodeClient::connect(addr, Duration::from_secs(2)).unwrap();
        let first = client.call(&["LRANGE"]).unwrap();
        assert_eq!(
            first,
            Reply::Array(vec![Reply::Bulk(b"hello".to_vec()), Reply::Int(42)])
        );
        assert_eq!(
            client.call(&["PING"]).unwrap(),
            Reply::Status("PONG".into())
        );
        server.join().unwrap();
    }

    #[test]
    fn closed_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || drop(listener.accept().unwrap()));
        let mut client = NodeClient::connect(addr, Duration::from_secs(2)).unwrap();
        server.join().unwrap();
        assert!(client.call(&["PING"]).is_err());
    }
}
