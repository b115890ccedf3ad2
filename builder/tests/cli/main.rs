//! Integration tests of the `rbuild` binary: the real executable on fixtures under
//! `testdata/cli/`, with insta snapshots of exit code, stdout and stderr.

mod build;
mod cases;
mod crash;
mod debug;
mod images;
mod run;
mod util;
