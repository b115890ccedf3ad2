//! `rbuild`: build OCI images from Dockerfiles, without a daemon.
//!
//! Exit codes: 0 success, 1 any error (a located diagnostic or `error: …` on stderr), 2 a
//! command-line usage error (clap's convention).

use std::process::ExitCode;

use rbuild::cli::{Cli, Command};
use rbuild::emulation::setup::setup_binfmt;
use rbuild::source::Reported;
use rbuild::state::{Access, State};
use rbuild::{build, debug, images};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    rbuild::interrupt::install();
    let result = run(&cli);
    // Interrupted: the build unwound (containers stopped, mounts undone); say so by the code.
    if rbuild::interrupt::interrupted() {
        return ExitCode::from(130);
    }
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

fn run(cli: &Cli) -> anyhow::Result<()> {
    let root = cli.root.as_deref();
    let open = |access| State::open(root, access);
    match &cli.command {
        Command::Build(args) => build::run(root, args),
        Command::Images(args) => images::images(&open(Access::Shared)?, args),
        Command::Rmi(args) => images::rmi(&open(Access::Shared)?, args),
        Command::Load(args) => images::load(&open(Access::Shared)?, args),
        Command::Save(args) => images::save(&open(Access::Shared)?, args),
        Command::Du(args) => images::du(&open(Access::Shared)?, args),
        // Exclusive: waits for running builds, and keeps new ones out until it is done.
        Command::Prune(args) => images::prune(&open(Access::Exclusive)?, args),
        Command::Push(args) => images::push(&open(Access::Shared)?, args),
        Command::Pull(args) => images::pull(&open(Access::Shared)?, args),
        Command::Login(args) => images::login(args),
        Command::Logout(args) => images::logout(args),
        Command::SetupBinfmt(args) => Ok(setup_binfmt(&args.platforms)?),
        Command::Debug(command) => debug::run(command),
    }
}
