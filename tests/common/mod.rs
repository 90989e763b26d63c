//! Shared helpers for the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod dynamics;
pub mod load;
pub mod proxy;
pub mod raw;
pub mod resp;
pub mod standalone;
pub mod tls;
