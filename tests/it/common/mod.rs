//! Shared helpers for the integration tests (the `it` binary; `tests/alloc.rs` and
//! `tests/bounded_caches.rs` include it by path).

pub mod cluster;
pub mod dynamics;
pub mod load;
pub mod ports;
pub mod proxy;
pub mod raw;
pub mod resp;
pub mod standalone;
pub mod tls;
