//! `rbuild debug …`: what the frontend makes of a Dockerfile.

use std::io::Write;

use anyhow::bail;
use rbuild_frontend::parser::Dockerfile;

use crate::cli::{BuildArg, DebugAstArgs, DebugCommand, DebugGraphArgs};
use crate::source::Source;

pub fn run(command: &DebugCommand) -> anyhow::Result<()> {
    match command {
        DebugCommand::Ast(args) => ast(args),
        DebugCommand::Graph(args) => graph(args),
    }
}

fn ast(args: &DebugAstArgs) -> anyhow::Result<()> {
    let dockerfile = Source::read(&args.file)?.parse()?;
    print_stdout(&dockerfile.dump())
}

fn graph(args: &DebugGraphArgs) -> anyhow::Result<()> {
    let dockerfile = Source::read(&args.file)?.parse()?;
    let options = GraphOptions {
        target: args.target.as_deref(),
        build_args: &args.build_args,
        platform: args.platform.as_deref(),
    };
    let text = debug_graph(&dockerfile, &options)?;
    print_stdout(&text)
}

/// What `debug graph` lowers with.
pub struct GraphOptions<'a> {
    pub target: Option<&'a str>,
    /// `value: None` = a bare `KEY` not set in the environment (buildx drops those).
    pub build_args: &'a [BuildArg],
    pub platform: Option<&'a str>,
}

/// Lowers the parsed Dockerfile to a build graph and returns its text dump.
// lowering: wire to the graph module's lowering API here.
fn debug_graph(dockerfile: &Dockerfile, options: &GraphOptions) -> anyhow::Result<String> {
    let _ = (
        dockerfile,
        options.target,
        options.build_args,
        options.platform,
    );
    bail!("debug graph is not available yet")
}

/// Writes to stdout; a reader that went away (`rbuild debug ast | head -1`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}
