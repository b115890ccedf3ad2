//! `rbuild build`: for now it reads and checks the Dockerfile; the solver, executor and
//! exporters arrive with later issues.

use std::path::Path;

use anyhow::{bail, ensure};

use crate::cli::BuildArgs;
use crate::source::Source;

pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let dockerfile_path = dockerfile_path(args)?;
    let source = Source::read(&dockerfile_path)?;
    let dockerfile = source.parse()?;
    // One platform at a time until multi-platform builds arrive (issue #7).
    let platform = args.platforms.first().map(String::as_str);
    let options = crate::debug::lower_options(args.target.as_deref(), &args.build_args, platform)?;
    let _graph = source.lower(&dockerfile, &options)?;
    // solving and exporting plug in here.
    bail!(
        "building images is not implemented yet (the executor and exporters arrive with issues \
         #3 and #4)"
    )
}

/// Where the Dockerfile comes from, as the user would write it: `-f` as given (relative to the
/// working directory, as buildx reads it), `-` for stdin, else `PATH/Dockerfile`. A context
/// of `-` means "the Dockerfile on stdin, no context".
fn dockerfile_path(args: &BuildArgs) -> anyhow::Result<String> {
    if args.context == "-" {
        ensure!(
            args.file.as_deref().is_none_or(|f| f == "-"),
            "PATH `-` reads the Dockerfile from stdin, so `--file` cannot name another one"
        );
        return Ok("-".to_string());
    }
    let context = Path::new(&args.context);
    if !context.exists() {
        bail!(
            "unable to prepare context: path {:?} not found",
            args.context
        );
    }
    if !context.is_dir() {
        bail!(
            "unable to prepare context: {:?} is not a directory",
            args.context
        );
    }
    if let Some(file) = &args.file {
        return Ok(file.clone());
    }
    let joined = context.join("Dockerfile");
    let joined = joined.strip_prefix(".").unwrap_or(&joined);
    Ok(joined.to_string_lossy().into_owned())
}
