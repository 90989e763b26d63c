//! slotway: a Redis Cluster proxy.
//!
//! Clients speak plain RESP to one endpoint; slotway finds each command's keys,
//! hashes them onto the cluster's 16384 slots and forwards the request to the
//! node that owns the slot, returning replies in request order.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod command;
pub mod config;
pub(crate) mod hotkeys;
pub mod local;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod proxy;
pub mod reference;
pub mod security;
pub(crate) mod slowlog;
pub mod status;
pub(crate) mod sync;
pub mod tls;
