//! Connections from the proxy to Redis nodes: multiplexed, pipelined connections that carry
//! many clients' requests, matched to replies by a FIFO of reply slots, and a per-node pool;
//! and bounded pools of dedicated connections that one client session pins.

mod conn;
mod dedicated;
mod durable;
mod pool;

pub use conn::{BackendConn, ConnSettings};
pub use dedicated::{Budget, Budgets, DedicatedConn, DedicatedError, DedicatedPool};
pub use durable::DurableWait;
pub use pool::{Backends, NodePool};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::ReplyKind;

impl From<&crate::config::BackendConfig> for Budgets {
    /// The per-node caps of dedicated connections the `[backend]` settings give, by kind.
    fn from(b: &crate::config::BackendConfig) -> Self {
        Self {
            blocking: b.max_dedicated_per_node,
            transaction: b.max_transaction_per_node,
            subscriber: b.max_subscriber_per_node,
        }
    }
}

/// Deepest reply nesting accepted from a node.
pub const MAX_REPLY_DEPTH: usize = 64;

/// Identifies which of a session's requests (and which part of it) a reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The session's sequence number of the client request.
    pub seq: u64,
    /// The part of a split request (0 for an unsplit one), or [`Tag::GROUP`] plus the index
    /// of a group of parts sent to one node together.
    pub part: u32,
}

impl Tag {
    /// Set in `part` when the request carries several parts of a split request at once.
    pub const GROUP: u32 = 1 << 31;

    /// The group index, when this tag names a group of parts.
    pub fn group(self) -> Option<u32> {
        (self.part & Self::GROUP != 0).then_some(self.part & !Self::GROUP)
    }
}

/// Where a backend delivers the outcome of one request.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    /// The owning session's completion channel.
    pub tx: mpsc::UnboundedSender<Completion>,
    /// Which request this is.
    pub tag: Tag,
}

/// One request for a node, in wire form.
#[derive(Debug)]
pub struct BackendRequest {
    /// The RESP bytes of the command, sent as they are.
    pub raw: Bytes,
    /// Precede the command with `ASKING` (one-off redirect during a slot migration).
    pub asking: bool,
    /// Follow the command with the connection's `WAIT` and acknowledge only once enough
    /// replicas confirmed (durable-write mode).
    pub durable: bool,
    /// Commands in `raw`, each answered by one reply: 1, or more for parts of a split request
    /// sent to one node together, or a `MULTI … EXEC`, whose replies are delivered as one
    /// frame run. A request of several commands never needs `ASKING`; a durable one (a
    /// transaction) has its run replaced by the durability error when not confirmed.
    pub replies: u32,
    /// Where the reply goes.
    pub reply: ReplyTo,
}

/// What became of a request sent to a backend.
#[derive(Debug)]
pub enum Outcome {
    /// The node answered with this complete RESP frame.
    Reply(Bytes, ReplyKind),
    /// The node did not answer.
    Failed(BackendError),
}

/// A request's outcome, delivered to the session that sent it.
#[derive(Debug)]
pub struct Completion {
    /// Which request.
    pub tag: Tag,
    /// The request's bytes, handed back so a redirect or retry need not keep a copy.
    pub raw: Bytes,
    /// The outcome.
    pub outcome: Outcome,
}

/// Why a backend could not answer a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The node could not be reached; the request was never written, so a retry is safe.
    #[error("cannot connect to {0}")]
    Unreachable(String),
    /// The connection broke before the request was written; a retry is safe.
    #[error("connection to {0} lost before the command was sent")]
    NotSent(String),
    /// The connection broke (or timed out) after the request was written: its effect is unknown.
    #[error(
        "connection to {0} lost after the command was sent; it may or may not have been applied"
    )]
    Lost(String),
    /// The node sent something that is not RESP, or a reply larger than allowed.
    #[error("protocol error from {0}")]
    Protocol(String),
}

impl BackendError {
    /// True when the request certainly did not reach the node, so sending it again is safe.
    pub fn retry_safe(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::NotSent(_))
    }
}
