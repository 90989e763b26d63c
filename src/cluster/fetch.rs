//! Control-plane connections: ask one node for the cluster layout, or send it one command.
//!
//! A connection made by [`crate::net::dial`] and redis-protocol's RESP2 decoder: these run a
//! few times a minute, so they favour simplicity over the data path's zero-copy rules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::TopologyError;
use super::parse::{parse_cluster_shards_with, parse_cluster_slots};
use super::resolve::{resolve, AskedNode};
use super::topology::Topology;
use crate::net::{dial, AddrError, Credentials, DialOptions, NodeAddr, NodeStream};

/// A control-plane reply larger than this is refused rather than buffered without bound.
const MAX_REPLY_BYTES: usize = 64 << 20;

/// How to reach and authenticate to nodes for control-plane commands.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Budget for resolving the address and opening the TCP connection (default 1 s).
    pub connect_timeout: Duration,
    /// Budget for each command's reply, AUTH included (default 2 s).
    pub command_timeout: Duration,
    /// `AUTH` credentials; `None` sends no AUTH.
    pub auth: Option<Credentials>,
    /// TLS to the nodes (`[upstream_tls]`); `None` = plaintext.
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            auth: None,
            tls: None,
        }
    }
}

/// Which command [`fetch_topology_via`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchMethod {
    /// `CLUSTER SHARDS`, falling back to `CLUSTER SLOTS` on servers older than 7.0.
    Auto,
    /// Only `CLUSTER SHARDS`.
    Shards,
    /// Only `CLUSTER SLOTS`.
    Slots,
}

/// Connects to `addr` (`host:port`, host may be a DNS name), AUTHs if configured, asks for the
/// layout (`CLUSTER SHARDS`, else `CLUSTER SLOTS`), parses and resolves it.
pub async fn fetch_topology(addr: &str, opts: &FetchOptions) -> Result<Topology, TopologyError> {
    fetch_topology_via(addr, opts, FetchMethod::Auto).await
}

/// Like [`fetch_topology`], choosing the command.
pub async fn fetch_topology_via(
    addr: &str,
    opts: &FetchOptions,
    method: FetchMethod,
) -> Result<Topology, TopologyError> {
    Ok(fetch_with_peer(addr, opts, method).await?.0)
}

/// Fetches and also returns the address that answered, so callers can tell distinct nodes apart.
pub(crate) async fn fetch_with_peer(
    addr: &str,
    opts: &FetchOptions,
    method: FetchMethod,
) -> Result<(Topology, SocketAddr), TopologyError> {
    let mut conn = Connection::open(addr, opts).await?;
    let raw = match method {
        FetchMethod::Slots => conn.cluster_slots().await?,
        FetchMethod::Shards | FetchMethod::Auto => {
            let reply = conn.command(&[b"CLUSTER", b"SHARDS"]).await?;
            match reply {
                OwnedFrame::Error(e)
                    if method == FetchMethod::Auto && is_unknown_subcommand(&e) =>
                {
                    conn.cluster_slots().await?
                }
                OwnedFrame::Error(e) => return Err(server_error(addr, e)),
                reply => parse_cluster_shards_with(&reply, opts.tls.is_some())
                    .map_err(|e| TopologyError::protocol(addr, e.reason))?,
            }
        }
    };
    let topology = resolve(raw, &conn.asked, opts.connect_timeout).await?;
    Ok((topology, conn.peer))
}

/// Sends one command to the node at `addr` on a fresh connection (AUTH first if configured) and
/// returns its reply. An error reply comes back as `Ok(OwnedFrame::Error(..))`: what it means is the
/// caller's business.
pub async fn call(
    addr: &str,
    args: &[&[u8]],
    opts: &FetchOptions,
) -> Result<OwnedFrame, TopologyError> {
    let mut conn = Connection::open(addr, opts).await?;
    conn.command(args).await
}

/// Like [`call`] for several commands, one after another on one connection.
pub async fn call_many(
    addr: &str,
    commands: &[Vec<Vec<u8>>],
    opts: &FetchOptions,
) -> Result<Vec<OwnedFrame>, TopologyError> {
    let mut conn = Connection::open(addr, opts).await?;
    let mut replies = Vec::with_capacity(commands.len());
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        replies.push(conn.command(&args).await?);
    }
    Ok(replies)
}

fn is_unknown_subcommand(message: &str) -> bool {
    message.to_ascii_lowercase().contains("unknown subcommand")
}

fn server_error(addr: &str, message: String) -> TopologyError {
    TopologyError::Server {
        addr: addr.to_owned(),
        message,
    }
}

/// One control-plane connection.
struct Connection {
    addr: String,
    stream: crate::tls::UpstreamStream,
    buf: BytesMut,
    asked: AskedNode,
    peer: SocketAddr,
    command_timeout: Duration,
}

impl Connection {
    async fn open(addr: &str, opts: &FetchOptions) -> Result<Connection, TopologyError> {
        let node: NodeAddr = addr
            .parse()
            .map_err(|e: AddrError| TopologyError::BadAddress {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        let dial_opts = DialOptions {
            connect_timeout: opts.connect_timeout,
            handshake_timeout: opts.command_timeout,
            auth: opts.auth.clone(),
            tls: opts.tls.clone(),
            ..DialOptions::default()
        };
        let NodeStream { stream, peer } = dial(&node, &dial_opts).await?;
        Ok(Connection {
            addr: addr.to_owned(),
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            asked: AskedNode {
                host: node.host().to_owned(),
                ip: peer.ip(),
            },
            peer,
            command_timeout: opts.command_timeout,
        })
    }

    async fn cluster_slots(&mut self) -> Result<super::parse::RawTopology, TopologyError> {
        match self.command(&[b"CLUSTER", b"SLOTS"]).await? {
            OwnedFrame::Error(e) => Err(server_error(&self.addr, e)),
            reply => parse_cluster_slots(&reply)
                .map_err(|e| TopologyError::protocol(&self.addr, e.reason)),
        }
    }

    /// Sends one command and reads its reply, within the command budget.
    async fn command(&mut self, args: &[&[u8]]) -> Result<OwnedFrame, TopologyError> {
        let budget = self.command_timeout;
        match tokio::time::timeout(budget, self.round_trip(args)).await {
            Ok(result) => result,
            Err(_) => Err(TopologyError::Timeout {
                addr: self.addr.clone(),
                stage: "command",
                after: budget,
            }),
        }
    }

    async fn round_trip(&mut self, args: &[&[u8]]) -> Result<OwnedFrame, TopologyError> {
        let request = encode_command(args);
        let sent = match self.stream.write_all(&request).await {
            Ok(()) => self.stream.flush().await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| TopologyError::io(&self.addr, e))?;
        loop {
            // The decoder restarts from byte 0 on a partial frame; fine for a handful of KB a minute.
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.advance(used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(TopologyError::protocol(&self.addr, e.to_string())),
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(TopologyError::protocol(
                    &self.addr,
                    "reply larger than 64 MiB",
                ));
            }
            self.buf.reserve(16 * 1024);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| TopologyError::io(&self.addr, e))?;
            if n == 0 {
                let eof = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed mid-reply",
                );
                return Err(TopologyError::io(&self.addr, eof));
            }
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_encoding() {
        assert_eq!(
            encode_command(&[b"CLUSTER", b"SHARDS"]),
            b"*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n"
        );
        assert_eq!(encode_command(&[b""]), b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn fallback_trigger() {
        assert!(is_unknown_subcommand(
            "ERR Unknown subcommand or wrong number of arguments for 'SHARDS'. Try CLUSTER HELP."
        ));
        assert!(is_unknown_subcommand(
            "ERR unknown subcommand 'shards'. Try CLUSTER HELP."
        ));
        assert!(!is_unknown_subcommand(
            "ERR This instance has cluster support disabled"
        ));
    }

    #[tokio::test]
    async fn connect_refused_is_retryable() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = call(
            &format!("127.0.0.1:{port}"),
            &[b"PING"],
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, TopologyError::Connect { .. }), "{err}");
        assert!(err.is_retryable());
    }
}
