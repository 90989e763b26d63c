//! Dedicated backend connections: one connection (TCP, or TLS) to one node, owned by a single
//! client session while it is pinned (a transaction, a blocking command, a subscription).
//!
//! Unlike the multiplexed connections, a dedicated connection may sit blocked for as long as
//! the command it carries wants (BLPOP 0), so it is never shared. Each node has a bounded
//! number of them per [`Budget`] — blocking commands, transactions, subscriptions — so that
//! clients parked in `BLPOP … 0` can use up only the blocking budget and never stop another
//! client from subscribing or running EXEC. A session that asks for one more than its kind's
//! budget gets a clear error instead of exhausting the node's client table. Connections handed
//! back clean are kept idle for reuse by any kind; anything else is closed by dropping it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ConnSettings, MAX_REPLY_DEPTH};
use crate::net::{dial, DialError, NodeAddr};
use crate::protocol::{encode, ReplyKind, ResponseScanner};
use crate::sync::Mutex;
use crate::tls::UpstreamStream;

/// Read chunk reserved when the read buffer runs low.
const READ_CHUNK: usize = 16 << 10;
/// Idle connections kept per node; more are closed when handed back.
const MAX_IDLE_PER_NODE: usize = 16;

/// Why a dedicated connection could not be had or used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DedicatedError {
    /// Every dedicated connection of one budget allowed to the node is in use.
    #[error("no dedicated connection left to {addr} ({setting} = {max} in use)")]
    Exhausted {
        /// The node.
        addr: SocketAddr,
        /// The configured cap.
        max: usize,
        /// The setting naming the cap.
        setting: &'static str,
    },
    /// Connecting or the handshake failed; nothing was sent.
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// The connection broke or timed out after a command was sent.
    #[error("connection to {0} lost: {1}")]
    Lost(SocketAddr, String),
}

/// What a dedicated connection is for; each kind has its own per-node cap, so one kind
/// running out never blocks the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Blocking commands (`BLPOP`, `XREAD … BLOCK` …), which may hold it indefinitely.
    Blocking,
    /// Exchanges that end on their own: `WATCH` … `EXEC`, scripts for RESP3 clients.
    Transaction,
    /// Pub/Sub subscriptions.
    Subscriber,
}

impl Budget {
    const ALL: [Budget; 3] = [Budget::Blocking, Budget::Transaction, Budget::Subscriber];

    fn index(self) -> usize {
        self as usize
    }

    /// The setting that caps this kind.
    pub fn setting(self) -> &'static str {
        match self {
            Budget::Blocking => "backend.max_dedicated_per_node",
            Budget::Transaction => "backend.max_transaction_per_node",
            Budget::Subscriber => "backend.max_subscriber_per_node",
        }
    }
}

/// Per-node caps of each [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Blocking commands (`backend.max_dedicated_per_node`).
    pub blocking: usize,
    /// Transactions and RESP3 scripts (`backend.max_transaction_per_node`).
    pub transaction: usize,
    /// Subscriptions (`backend.max_subscriber_per_node`).
    pub subscriber: usize,
}

impl Budgets {
    /// The same cap for every kind.
    pub fn uniform(max: usize) -> Self {
        Self {
            blocking: max,
            transaction: max,
            subscriber: max,
        }
    }

    fn get(&self, b: Budget) -> usize {
        match b {
            Budget::Blocking => self.blocking,
            Budget::Transaction => self.transaction,
            Budget::Subscriber => self.subscriber,
        }
        .max(1)
    }
}

/// The per-node bookkeeping: one cap per budget, and the idle connections.
#[derive(Debug)]
struct Node {
    permits: [Arc<Semaphore>; 3],
    idle: Mutex<Vec<DedicatedConn>>,
}

/// Bounded per-node pools of dedicated connections.
#[derive(Debug)]
pub struct DedicatedPool {
    template: ConnSettings,
    budgets: Budgets,
    nodes: DashMap<SocketAddr, Arc<Node>>,
}

impl DedicatedPool {
    /// A pool whose connections use `template` (address ignored), capped per node by `budgets`.
    pub fn new(template: ConnSettings, budgets: Budgets) -> Self {
        Self {
            template,
            budgets,
            nodes: DashMap::new(),
        }
    }

    fn node(&self, addr: SocketAddr) -> Arc<Node> {
        self.nodes
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Node {
                    permits: Budget::ALL.map(|b| Arc::new(Semaphore::new(self.budgets.get(b)))),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// A connection to `addr` speaking protocol `proto` (2 or 3), counted against `budget`:
    /// an idle one that is still open, else a new one. When the node's cap for `budget` is
    /// reached it waits up to the connect timeout for one to be handed back (a session
    /// releasing its connection a moment after answering), then fails.
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        proto: u8,
        budget: Budget,
    ) -> Result<DedicatedConn, DedicatedError> {
        let node = self.node(addr);
        let exhausted = || DedicatedError::Exhausted {
            addr,
            max: self.budgets.get(budget),
            setting: budget.setting(),
        };
        let permits = &node.permits[budget.index()];
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::time::timeout(
                self.template.connect_timeout,
                permits.clone().acquire_owned(),
            )
            .await
            .map_err(|_| exhausted())?
            .map_err(|_| exhausted())?,
        };
        let mut permit = Some(permit);
        loop {
            let popped = node.idle.lock().pop();
            let Some(mut conn) = popped else { break };
            if !conn.is_open() {
                continue;
            }
            conn.node = Some(node.clone());
            conn.permit = permit.take();
            if conn.proto == proto || conn.switch_proto(proto).await.is_ok() {
                return Ok(conn);
            }
            permit = conn.permit.take();
        }
        let mut settings = self.template.clone();
        settings.addr = addr;
        let stream = connect(&settings, proto)
            .await
            .map_err(|e| DedicatedError::Connect(addr, e.to_string()))?;
        Ok(DedicatedConn {
            stream,
            rbuf: BytesMut::new(),
            scanner: ResponseScanner::new(MAX_REPLY_DEPTH),
            addr,
            proto,
            reply_timeout: settings.command_timeout,
            max_reply_bytes: settings.max_reply_bytes,
            node: Some(node),
            permit,
        })
    }

    /// Dedicated connections of `budget` to `addr` currently checked out.
    pub fn open_count(&self, addr: SocketAddr, budget: Budget) -> usize {
        self.nodes.get(&addr).map_or(0, |n| {
            self.budgets.get(budget) - n.permits[budget.index()].available_permits()
        })
    }

    /// The configured caps per node.
    pub fn budgets(&self) -> Budgets {
        self.budgets
    }

    /// How long a node may take to answer on these connections (`backend.command_timeout_ms`).
    pub fn reply_timeout(&self) -> Duration {
        self.template.command_timeout
    }
}

/// One dedicated connection; closed when dropped unless handed back with [`DedicatedConn::release`].
#[derive(Debug)]
pub struct DedicatedConn {
    stream: UpstreamStream,
    rbuf: BytesMut,
    scanner: ResponseScanner,
    addr: SocketAddr,
    proto: u8,
    reply_timeout: Duration,
    max_reply_bytes: usize,
    node: Option<Arc<Node>>,
    /// Held while checked out; an idle connection holds none, so it never blocks a checkout.
    permit: Option<OwnedSemaphorePermit>,
}

impl DedicatedConn {
    /// The node this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The protocol the node speaks on this connection (2 or 3).
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The backend's command timeout, for callers that wait for a reply with a deadline.
    pub fn reply_timeout(&self) -> Duration {
        self.reply_timeout
    }

    /// Writes `data` completely.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DedicatedError> {
        let lost = |e: std::io::Error| DedicatedError::Lost(self.addr, e.to_string());
        self.stream.write_all(data).await.map_err(lost)?;
        self.stream.flush().await.map_err(lost)
    }

    /// Reads the next complete reply frame. Cancel-safe: a partly read frame stays buffered.
    pub async fn read_frame(&mut self) -> Result<(Bytes, ReplyKind), DedicatedError> {
        loop {
            match self.scanner.scan(&self.rbuf) {
                Ok(Some(r)) => return Ok((self.rbuf.split_to(r.len).freeze(), r.kind)),
                Ok(None) => {}
                Err(e) => return Err(DedicatedError::Lost(self.addr, e.to_string())),
            }
            if self.rbuf.len() > self.max_reply_bytes {
                return Err(DedicatedError::Lost(
                    self.addr,
                    "reply exceeds backend.max_reply_bytes".into(),
                ));
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    return Err(DedicatedError::Lost(
                        self.addr,
                        "node closed the connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(DedicatedError::Lost(self.addr, e.to_string())),
            }
        }
    }

    /// Reads a frame, failing when none arrives within `limit` (None: wait forever).
    pub async fn read_frame_within(
        &mut self,
        limit: Option<Duration>,
    ) -> Result<(Bytes, ReplyKind), DedicatedError> {
        match limit {
            None => self.read_frame().await,
            Some(d) => match tokio::time::timeout(d, self.read_frame()).await {
                Ok(r) => r,
                Err(_) => Err(DedicatedError::Lost(
                    self.addr,
                    format!("no reply within {} ms", d.as_millis()),
                )),
            },
        }
    }

    /// Hands the connection back for reuse; the caller guarantees it is clean (no MULTI,
    /// WATCH, subscription or unread reply).
    pub fn release(mut self) {
        if !self.rbuf.is_empty() {
            return;
        }
        let Some(node) = self.node.take() else { return };
        // An idle connection holds neither its node (no reference cycle) nor a permit.
        self.permit = None;
        let mut idle = node.idle.lock();
        if idle.len() < MAX_IDLE_PER_NODE {
            idle.push(self);
        }
    }

    /// False when the node has closed the connection (or sent something unasked).
    fn is_open(&mut self) -> bool {
        self.stream.is_open()
    }

    async fn switch_proto(&mut self, proto: u8) -> Result<(), DedicatedError> {
        let mut cmd = BytesMut::new();
        encode::command(&mut cmd, &[b"HELLO", proto.to_string().as_bytes()]);
        self.write(&cmd).await?;
        let (_, kind) = self.read_frame_within(Some(self.reply_timeout)).await?;
        if kind == ReplyKind::Error {
            return Err(DedicatedError::Lost(self.addr, "HELLO refused".into()));
        }
        self.proto = proto;
        Ok(())
    }
}

/// Dials the node with `AUTH` as configured and `HELLO 3` for a RESP3 client; no READONLY
/// (a dedicated connection carries exactly what the client sent).
async fn connect(s: &ConnSettings, proto: u8) -> Result<UpstreamStream, DialError> {
    let mut opts = s.dial_options((proto == 3).then_some(3), false);
    opts.readonly = false;
    Ok(dial(&NodeAddr::from_socket(s.addr), &opts).await?.stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn settings() -> ConnSettings {
        ConnSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            connect_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            queue_depth: 16,
            max_reply_bytes: 1 << 20,
            auth: None,
            readonly: false,
            metrics: false,
            wait: None,
            tls: None,
        }
    }

    /// A fake node answering `+PONG` to every request line it can find.
    async fn fake_node() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let _ = s.write_all(b"+PONG\r\n").await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn cap_is_enforced_and_released_connections_are_reused() {
        let addr = fake_node().await;
        let pool = DedicatedPool::new(settings(), Budgets::uniform(2));
        let b = Budget::Blocking;
        let mut a = pool.checkout(addr, 2, b).await.unwrap();
        let second = pool.checkout(addr, 2, b).await.unwrap();
        assert_eq!(pool.open_count(addr, b), 2);
        let err = pool.checkout(addr, 2, b).await.unwrap_err();
        assert!(matches!(err, DedicatedError::Exhausted { max: 2, .. }));
        assert!(err.to_string().contains("max_dedicated_per_node"));
        a.write(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let (frame, kind) = a.read_frame().await.unwrap();
        assert_eq!(&frame[..], b"+PONG\r\n");
        assert_eq!(kind, ReplyKind::Other);
        a.release();
        assert_eq!(pool.open_count(addr, b), 1);
        let mut c = pool.checkout(addr, 2, b).await.unwrap();
        assert_eq!(pool.open_count(addr, b), 2);
        c.write(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        assert_eq!(&c.read_frame().await.unwrap().0[..], b"+PONG\r\n");
        drop(second);
        assert_eq!(pool.open_count(addr, b), 1);
    }

    #[tokio::test]
    async fn an_exhausted_budget_leaves_the_others_available() {
        let addr = fake_node().await;
        let budgets = Budgets {
            blocking: 1,
            transaction: 1,
            subscriber: 1,
        };
        let pool = DedicatedPool::new(settings(), budgets);
        let _blocked = pool.checkout(addr, 2, Budget::Blocking).await.unwrap();
        let err = pool.checkout(addr, 2, Budget::Blocking).await.unwrap_err();
        assert!(err.to_string().contains("backend.max_dedicated_per_node"));
        let sub = pool.checkout(addr, 2, Budget::Subscriber).await.unwrap();
        let tx = pool.checkout(addr, 2, Budget::Transaction).await.unwrap();
        let err = pool
            .checkout(addr, 2, Budget::Subscriber)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("backend.max_subscriber_per_node"));
        let err = pool
            .checkout(addr, 2, Budget::Transaction)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("backend.max_transaction_per_node"));
        drop(sub);
        tx.release();
        assert_eq!(pool.open_count(addr, Budget::Transaction), 0);
        // An idle connection serves any kind.
        let again = pool.checkout(addr, 2, Budget::Subscriber).await.unwrap();
        assert_eq!(pool.open_count(addr, Budget::Subscriber), 1);
        drop(again);
    }

    #[tokio::test]
    async fn unreachable_node_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = DedicatedPool::new(settings(), Budgets::uniform(2));
        let err = pool.checkout(addr, 2, Budget::Blocking).await.unwrap_err();
        assert!(matches!(err, DedicatedError::Connect(..)));
        assert_eq!(pool.open_count(addr, Budget::Blocking), 0);
    }
}
