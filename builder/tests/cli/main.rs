//! Integration tests of the `rbuild` binary: the real executable on fixtures under
//! `testdata/cli/`, with insta snapshots of exit code, stdout and stderr.

mod arm64;
mod build;
mod cache;
mod cases;
mod crash;
mod debug;
mod emulation;
mod fault_proxy;
mod fault_proxy_selftest;
mod images;
mod multiplatform;
mod registry;
mod registry_auth;
mod registry_fixture;
mod registry_harness;
mod registry_more;
mod run;
mod run_mounts;
mod shared_cache;
mod token_server;
mod util;
