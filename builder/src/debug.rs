//! `rbuild debug …`: what the frontend makes of a Dockerfile.

use std::io::Write;

use anyhow::Context;
use rbuild_frontend::graph::LowerOptions;
use rbuild_frontend::platform::Platform;

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
    let source = Source::read(&args.file)?;
    let dockerfile = source.parse()?;
    let options = lower_options(
        args.target.as_deref(),
        &args.build_args,
        args.platform.as_deref(),
    )?;
    let graph = source.lower(&dockerfile, &options)?;
    let mut text = serde_json::to_string_pretty(&graph.to_json())?;
    text.push('\n');
    print_stdout(&text)
}

/// `--target`, `--build-arg` and `--platform` as the frontend takes them. A bare `KEY`
/// not set in the environment is dropped, as buildx drops it.
pub fn lower_options(
    target: Option<&str>,
    build_args: &[BuildArg],
    platform: Option<&str>,
) -> anyhow::Result<LowerOptions> {
    let target_platform = platform
        .map(Platform::parse)
        .transpose()
        .context("--platform")?;
    Ok(LowerOptions {
        target: target.map(str::to_string),
        build_args: build_args
            .iter()
            .filter_map(|a| Some((a.key.clone(), a.value.clone()?)))
            .collect(),
        target_platform,
        ..LowerOptions::default()
    })
}

/// Writes to stdout; a reader that went away (`rbuild debug ast | head -1`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}
