//! Reaching a node: owns the node address type ([`NodeAddr`], the one `host:port` parser),
//! the credentials sent to nodes ([`Secret`], [`Credentials`]) and [`dial`] — TCP, optional
//! TLS and the AUTH/HELLO/READONLY/SETNAME handshake — used by every connection to a node.
//!
//! Imports only `protocol` (encoder, reply scanner) and `tls`.

mod addr;
mod dial;
mod secret;

pub use addr::{parse_port, AddrError, NodeAddr};
pub use dial::{dial, DialError, DialOptions, NodeStream};
pub use secret::{Credentials, Secret};
