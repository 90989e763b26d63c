//! The cluster control plane: slot hashing, the topology snapshot, and how it is fetched and kept fresh.
//!
//! - [`slot`]: key → hash slot.
//! - [`topology`]: the immutable [`Topology`] snapshot the data path reads.
//! - [`parse`] and [`resolve`]: `CLUSTER SHARDS` / `CLUSTER SLOTS` replies into a snapshot.
//! - [`fetch`]: control-plane connections to one node.
//! - [`refresh`] and [`round`]: the single-flight refresher publishing snapshots through `ArcSwap`.
//! - `suspect`: primaries suspected down, which make the refresher poll quickly.
//! - [`diff`]: what changed between two snapshots, for the log.

pub mod diff;
pub mod error;
pub mod fetch;
pub mod parse;
pub mod refresh;
pub mod resolve;
pub mod round;
pub mod slot;
mod suspect;
pub mod topology;

pub use error::{InvalidTopology, TopologyError};
pub use fetch::{call, fetch_topology, fetch_topology_via, FetchMethod, FetchOptions};
pub use refresh::{
    spawn_refresher, NoObserver, RefreshConfig, RefreshObserver, RefreshStats, TopologyHandle,
    UpdateHook,
};
pub use topology::{Health, Node, Role, Shard, Topology};
