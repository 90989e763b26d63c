//! The upstream side: TLS on every connection to a node, and [`UpstreamStream`], the socket
//! every connection to a node uses (made by `crate::net::dial`).
//!
//! A node's certificate is checked against `upstream_tls.ca_file` and against the node's name:
//! `upstream_tls.server_name` when set, else the host the topology announces for that address
//! (a DNS name, or an IP address matched against the certificate's IP SANs), else the IP.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::sync::Mutex;

/// TLS settings for the connections to the nodes, shared by every connection.
#[derive(Debug)]
pub struct UpstreamTls {
    pub(crate) config: Arc<ArcSwap<ClientConfig>>,
    /// `upstream_tls.server_name`: the name every node's certificate must carry.
    server_name: Option<ServerName<'static>>,
    /// Node address → the name it is announced under, from the latest topology.
    names: Mutex<HashMap<SocketAddr, ServerName<'static>>>,
}

impl UpstreamTls {
    pub(crate) fn new(config: Arc<ArcSwap<ClientConfig>>, server_name: &str) -> Self {
        Self {
            config,
            server_name: ServerName::try_from(server_name.to_owned()).ok(),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers the name each node is announced under (its address and the host of the
    /// latest topology), for checking its certificate when connecting by address. Replaces
    /// what was learned before.
    pub fn learn<'a>(&self, nodes: impl IntoIterator<Item = (SocketAddr, &'a str)>) {
        let names = nodes
            .into_iter()
            .filter_map(|(addr, name)| Some((addr, ServerName::try_from(name.to_owned()).ok()?)))
            .collect();
        *self.names.lock() = names;
    }

    /// The name the certificate of the node at `addr` must carry.
    fn name_for(&self, addr: SocketAddr) -> ServerName<'static> {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        let names = self.names.lock();
        names
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    /// The name for a connection to `host` (a seed or a node address as written) at `peer`.
    fn name_for_host(&self, host: &str, peer: SocketAddr) -> io::Result<ServerName<'static>> {
        if host.parse::<std::net::IpAddr>().is_ok() {
            // A node asked by address (command learning, /cluster) is checked like the data
            // connections to it: by its announced name when the topology gave one.
            return Ok(self.name_for(peer));
        }
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} cannot be checked against a certificate: {e}"),
            )
        })
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
        budget: Duration,
    ) -> io::Result<UpstreamStream> {
        let shown = name.to_str().into_owned();
        let connector = tokio_rustls::TlsConnector::from(self.config.load_full());
        let result = tokio::time::timeout(budget, connector.connect(name, tcp)).await;
        let err = match result {
            Ok(Ok(stream)) => return Ok(UpstreamStream::Tls(Box::new(stream))),
            Ok(Err(e)) => io::Error::new(e.kind(), format!("TLS handshake with {shown}: {e}")),
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {shown} timed out"),
            ),
        };
        super::count_handshake_failure("upstream");
        Err(err)
    }
}

/// Turns a connected socket to the node at `addr` into the connection to use: TLS when `tls`
/// is set (the handshake within `budget`), else the socket itself.
pub async fn upstream(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    budget: Duration,
) -> io::Result<UpstreamStream> {
    match tls {
        None => Ok(UpstreamStream::Plain(tcp)),
        Some(tls) => tls.handshake(tcp, tls.name_for(addr), budget).await,
    }
}

/// Like [`upstream`] for a connection made to `host` (as configured or announced), whose
/// certificate is checked against that name.
pub async fn upstream_to_host(
    tcp: TcpStream,
    host: &str,
    tls: Option<&UpstreamTls>,
    budget: Duration,
) -> io::Result<UpstreamStream> {
    match tls {
        None => Ok(UpstreamStream::Plain(tcp)),
        Some(tls) => {
            let name = tls.name_for_host(host, tcp.peer_addr()?)?;
            tls.handshake(tcp, name, budget).await
        }
    }
}

/// A connection to a node, plaintext or TLS.
#[derive(Debug)]
pub enum UpstreamStream {
    /// A plain TCP connection.
    Plain(TcpStream),
    /// A TLS connection whose handshake has completed.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of an [`UpstreamStream`].
#[derive(Debug)]
pub enum UpstreamRead {
    /// Plain TCP: the socket's own half, no lock.
    Plain(OwnedReadHalf),
    /// TLS: reads and writes share one rustls state.
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of an [`UpstreamStream`].
#[derive(Debug)]
pub enum UpstreamWrite {
    /// Plain TCP: the socket's own half, no lock.
    Plain(OwnedWriteHalf),
    /// TLS: reads and writes share one rustls state.
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Splits into halves a reader task and a writer task can own.
    pub fn into_split(self) -> (UpstreamRead, UpstreamWrite) {
        match self {
            Self::Plain(s) => {
                let (r, w) = s.into_split();
                (UpstreamRead::Plain(r), UpstreamWrite::Plain(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (UpstreamRead::Tls(r), UpstreamWrite::Tls(w))
            }
        }
    }

    /// False when the node has closed the connection or sent something unasked; never waits.
    pub fn is_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        if let Self::Plain(s) = self {
            return matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut buf = ReadBuf::new(&mut probe);
        let waker = Waker::from(Arc::new(NoWake));
        let mut cx = Context::from_waker(&waker);
        // Pending: nothing to read and not closed. TLS records that carry no data (session
        // tickets) are consumed by the poll and also end as Pending.
        Pin::new(self).poll_read(&mut cx, &mut buf).is_pending()
    }
}

/// A waker for a one-off poll whose wake-up nobody waits for.
struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// Forwards the `AsyncRead`/`AsyncWrite` calls of a two-variant enum to the variant in use.
macro_rules! forward_io {
    ($ty:ident, read) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
    ($ty:ident, write) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_flush(cx),
                    $ty::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_io!(UpstreamStream, read);
forward_io!(UpstreamStream, write);
forward_io!(UpstreamRead, read);
forward_io!(UpstreamWrite, write);

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(server_name: &str) -> UpstreamTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        UpstreamTls::new(Arc::new(ArcSwap::from_pointee(config)), server_name)
    }

    fn shown(name: ServerName<'_>) -> String {
        name.to_str().into_owned()
    }

    #[test]
    fn nodes_are_checked_by_announced_name_else_by_ip() {
        let tls = upstream("");
        let a: SocketAddr = "10.0.0.1:6379".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:6379".parse().unwrap();
        tls.learn([(a, "redis-0.redis.svc"), (b, "10.0.0.2")]);
        let unknown: SocketAddr = "10.0.0.3:6379".parse().unwrap();
        assert_eq!(shown(tls.name_for(a)), "redis-0.redis.svc");
        assert!(matches!(tls.name_for(b), ServerName::IpAddress(_)));
        assert_eq!(shown(tls.name_for(unknown)), "10.0.0.3");
        // Asked by address: the learned name; by name: that name.
        assert_eq!(
            shown(tls.name_for_host("10.0.0.1", a).unwrap()),
            "redis-0.redis.svc"
        );
        assert_eq!(
            shown(tls.name_for_host("seed.example", unknown).unwrap()),
            "seed.example"
        );
    }

    #[test]
    fn an_override_wins_for_every_node() {
        let tls = upstream("redis.internal");
        let a: SocketAddr = "10.0.0.1:6379".parse().unwrap();
        assert_eq!(shown(tls.name_for(a)), "redis.internal");
        assert_eq!(
            shown(tls.name_for_host("seed.example", a).unwrap()),
            "redis.internal"
        );
        assert_eq!(
            shown(tls.name_for_host("10.0.0.1", a).unwrap()),
            "redis.internal"
        );
    }
}
