//! Errors of the cluster control plane: fetching, parsing and refreshing the topology.

use std::io;
use std::sync::Arc;
use std::time::Duration;

/// A reply (or a snapshot built by hand) that does not describe a valid topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidTopology {
    /// What was wrong, for the log.
    pub reason: String,
}

impl InvalidTopology {
    /// Builds an error from anything that reads as a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        InvalidTopology {
            reason: reason.into(),
        }
    }
}

/// Why a topology fetch or refresh failed.
///
/// Every fetch is read-only, so re-sending one is always harmless; [`TopologyError::is_retryable`]
/// says whether a later attempt (or another node) can be expected to do better.
/// I/O errors sit behind an `Arc` so one failed refresh can be handed to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopologyError {
    /// The configured address is not `host:port` (operator's fault).
    #[error("invalid node address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A host name did not resolve (DNS down, pod gone).
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        /// The name that failed.
        host: String,
        /// The resolver's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node asked.
        addr: String,
        /// The socket error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The connection broke while talking to the node.
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        /// The node asked.
        addr: String,
        /// The socket error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A step took longer than its budget.
    #[error("{stage} with {addr} timed out after {after:?}")]
    Timeout {
        /// The node asked.
        addr: String,
        /// Which step: "resolve", "connect", "command".
        stage: &'static str,
        /// The budget that ran out.
        after: Duration,
    },
    /// The node answered something that is not a valid reply (a bug on one side, or not Redis).
    #[error("protocol error from {addr}: {reason}")]
    Protocol {
        /// The node asked.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The node answered with an error reply.
    #[error("{addr} replied with an error: {message}")]
    Server {
        /// The node asked.
        addr: String,
        /// The error line, without the leading `-`.
        message: String,
    },
    /// AUTH was refused: the configured credentials are wrong (operator's fault).
    #[error("authentication to {addr} failed: {message}")]
    Auth {
        /// The node asked.
        addr: String,
        /// The error line.
        message: String,
    },
    /// Every source of a refresh round failed, or their answers were rejected.
    #[error("no topology source usable ({tried} tried); last error: {last}")]
    NoSourceReachable {
        /// How many sources were tried.
        tried: usize,
        /// The last failure seen.
        last: Box<TopologyError>,
    },
    /// A source answered with fewer slots than the current snapshot and the other sources did not confirm it.
    #[error("{addr} reports {covered} assigned slots, fewer than the {current} we know; not confirmed by other nodes")]
    Unconfirmed {
        /// The node whose answer was set aside.
        addr: String,
        /// Slots it assigns.
        covered: usize,
        /// Slots the current snapshot assigns.
        current: usize,
    },
    /// The refresher task has stopped (shutdown).
    #[error("topology refresher stopped")]
    Stopped,
}

/// Server error prefixes that describe a passing state of the cluster.
const TRANSIENT_SERVER_ERRORS: &[&str] =
    &["CLUSTERDOWN", "LOADING", "MASTERDOWN", "TRYAGAIN", "BUSY"];

impl From<crate::net::DialError> for TopologyError {
    /// Keeps the fetch's own taxonomy (and so [`TopologyError::is_retryable`]) for dial failures.
    fn from(e: crate::net::DialError) -> Self {
        use crate::net::{AddrError, DialError as D};
        match e {
            D::Resolve(AddrError::Resolve { host, reason }) => TopologyError::Resolve {
                host,
                source: Arc::new(io::Error::new(io::ErrorKind::NotFound, reason)),
            },
            D::Resolve(e) => TopologyError::BadAddress {
                addr: String::new(),
                reason: e.to_string(),
            },
            D::Connect { addr, source } => TopologyError::Connect {
                addr: addr.to_string(),
                source,
            },
            D::ConnectTimeout { addr, after } => TopologyError::Timeout {
                addr: addr.to_string(),
                stage: "connect",
                after,
            },
            D::HandshakeTimeout { addr, after } => TopologyError::Timeout {
                addr: addr.to_string(),
                stage: "command",
                after,
            },
            D::Tls { addr, source } | D::Lost { addr, source } => TopologyError::Io {
                addr: addr.to_string(),
                source,
            },
            D::AuthRefused { addr, message } => TopologyError::Auth {
                addr: addr.to_string(),
                message,
            },
            D::HelloRefused { addr, message } | D::Refused { addr, message, .. } => {
                TopologyError::Server {
                    addr: addr.to_string(),
                    message,
                }
            }
            D::Protocol { addr, reason } => TopologyError::Protocol {
                addr: addr.to_string(),
                reason,
            },
        }
    }
}

impl TopologyError {
    /// True when trying again later (or on another node) may succeed; false for configuration faults,
    /// bad credentials, malformed replies and shutdown.
    pub fn is_retryable(&self) -> bool {
        match self {
            TopologyError::Resolve { .. }
            | TopologyError::Connect { .. }
            | TopologyError::Io { .. }
            | TopologyError::Timeout { .. }
            | TopologyError::Unconfirmed { .. } => true,
            TopologyError::Server { message, .. } => TRANSIENT_SERVER_ERRORS
                .iter()
                .any(|p| message.starts_with(p)),
            TopologyError::NoSourceReachable { last, .. } => last.is_retryable(),
            TopologyError::BadAddress { .. }
            | TopologyError::Protocol { .. }
            | TopologyError::Auth { .. }
            | TopologyError::Stopped => false,
        }
    }

    pub(crate) fn io(addr: &str, source: io::Error) -> Self {
        TopologyError::Io {
            addr: addr.to_owned(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn protocol(addr: &str, reason: impl Into<String>) -> Self {
        TopologyError::Protocol {
            addr: addr.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_follows_who_is_at_fault() {
        let server = |m: &str| TopologyError::Server {
            addr: "a:1".into(),
            message: m.into(),
        };
        assert!(server("CLUSTERDOWN The cluster is down").is_retryable());
        assert!(server("LOADING Redis is loading").is_retryable());
        assert!(!server("ERR This instance has cluster support disabled").is_retryable());
        assert!(TopologyError::io("a:1", io::ErrorKind::ConnectionReset.into()).is_retryable());
        assert!(!TopologyError::protocol("a:1", "bad").is_retryable());
        assert!(!TopologyError::Stopped.is_retryable());
        let wrapped = TopologyError::NoSourceReachable {
            tried: 2,
            last: Box::new(TopologyError::Auth {
                addr: "a:1".into(),
                message: "WRONGPASS".into(),
            }),
        };
        assert!(!wrapped.is_retryable());
    }
}
