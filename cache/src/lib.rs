//! Content store, layers, cache keys and OCI formats for rbuild.

pub mod digest;
