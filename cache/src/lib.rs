//! Content store, layers, cache keys and OCI formats for rbuild.

pub mod cache_graph;
pub mod checksum;
pub mod db;
pub mod digest;
pub mod image;
pub mod layer;
pub mod lock;
pub mod store;

pub use digest::Digest;
