//! Cluster knowledge: how keys map onto the 16384 hash slots.

pub mod slot;
