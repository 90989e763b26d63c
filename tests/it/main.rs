//! The integration tests, one module per area, in one test binary: the shared harness
//! (`common`) is compiled once and only this binary links the library, instead of one binary
//! per file. Tests that need a process of their own stay separate targets (`tests/alloc.rs`,
//! `tests/bounded_caches.rs`: each installs a counting global allocator).
//!
//! Cluster tests serialise themselves through the harness lock; run the suite with
//! `cargo test --locked --tests -- --test-threads=1` (tests/run.sh does), or one area with
//! `cargo test --test it -- proxy_basic:: --test-threads=1`.

// Test and benchmark code times itself with std::time::Instant and shares state through
// std::sync::Mutex outside any runtime; the one-clock and non-poisoning rules of clippy.toml are
// for the proxy's own code.
#![allow(clippy::disallowed_types)]

mod common;

mod auth_policy;
mod blocking;
mod cli_config;
mod cluster_emulation;
mod command_reference;
mod command_table;
mod commands_cluster_wide;
mod commands_multikey;
mod config_keys;
mod differential;
mod drain;
mod failover;
mod hardening;
mod idle_clients;
mod layering;
mod local_cli;
mod local_cluster;
mod net_dial;
mod observability;
mod proxy_basic;
mod pubsub;
mod pubsub_introspect;
mod read_policy_durable;
mod resharding;
mod resp3;
mod resp3_built;
mod script_acl;
mod session_state;
mod tls;
mod topology;
mod topology_changes;
mod transactions;
mod trust_redirects;
mod tx_trust;
