//! `rbuild`: build OCI images from Dockerfiles, without a daemon.
//!
//! Exit codes: 0 success, 1 any error (a located diagnostic or `error: …` on stderr), 2 a
//! command-line usage error (clap's convention).

mod build;
mod cli;
mod debug;
mod source;

use std::process::ExitCode;

use cli::{Cli, Command};
use source::Reported;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let result = match &cli.command {
        Command::Build(args) => build::run(args),
        Command::Debug(command) => debug::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match err.downcast_ref::<Reported>() {
                Some(reported) => eprintln!("{reported}"),
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
