//! rbuild's builder: the command line, the solver, snapshots, the executor, file operations
//! and the exporters. `main.rs` is a thin shell over this library, so each module can be
//! tested on its own and the integration tests can reach what the binary uses.

pub mod bases;
pub mod build;
pub mod build_secrets;
pub mod cache_mounts;
pub mod cachekey;
pub mod cli;
pub mod debug;
pub mod emulation;
pub mod executor;
pub mod export;
pub mod fileop;
pub mod images;
pub mod interrupt;
pub mod multiplatform;
pub mod output;
pub mod platforms;
pub mod progress;
pub mod registry;
pub mod shared_cache;
pub mod snapshot;
pub mod solve;
pub mod source;
pub mod state;
pub mod timestamp;
pub mod users;
