//! A build for several platforms (`--platform linux/amd64,linux/arm64`): the Dockerfile is
//! lowered once per target platform (each gets its own TARGET* ARGs and base image) and the
//! lowerings are merged, so what does not depend on the target platform is built once.

use anyhow::{ensure, Context};
use rbuild_frontend::graph::{self, BuildGraph};
use rbuild_frontend::parser::Dockerfile;
use rbuild_frontend::platform::Platform;

use crate::bases::StoreBases;
use crate::cli::BuildArgs;
use crate::source::Source;

/// The `--platform` values, normalized and without repeats, in the order given; one `None`
/// (the build platform) when none is given.
pub fn target_platforms(specs: &[String]) -> anyhow::Result<Vec<Option<Platform>>> {
    let mut platforms: Vec<Option<Platform>> = Vec::new();
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let platform = Platform::parse(spec).with_context(|| format!("--platform {spec}"))?;
        if !platforms.contains(&Some(platform.clone())) {
            platforms.push(Some(platform));
        }
    }
    if platforms.is_empty() {
        platforms.push(None);
    }
    Ok(platforms)
}

/// One build graph per platform, in the order of `platforms`, all sharing one merged graph.
/// Lint warnings are printed once each, whichever platforms' lowerings gave them.
pub fn lower(
    source: &Source,
    dockerfile: &Dockerfile,
    args: &BuildArgs,
    platforms: &[Option<Platform>],
    bases: &StoreBases,
) -> anyhow::Result<Vec<BuildGraph>> {
    ensure!(!platforms.is_empty(), "a build needs a platform");
    let mut builds = Vec::new();
    for platform in platforms {
        let mut options =
            crate::debug::lower_options(args.target.as_deref(), &args.build_args, None)?;
        options.target_platform = platform.clone();
        options.platform_in_names = platforms.len() > 1;
        builds.push(source.lower_quietly(dockerfile, &options, bases)?);
    }
    let mut printed = std::collections::BTreeSet::new();
    for warning in builds.iter().flat_map(|b| &b.warnings) {
        let text = warning.render(&source.name);
        if printed.insert(text.clone()) {
            eprintln!("{text}");
        }
    }
    Ok(graph::merge(builds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_normalized_and_repeats_dropped() {
        let specs = ["linux/amd64", "linux/arm64", "linux/x86_64", " arm64 "].map(String::from);
        let got: Vec<String> = target_platforms(&specs)
            .unwrap()
            .into_iter()
            .map(|p| p.unwrap().to_string())
            .collect();
        assert_eq!(got, ["linux/amd64", "linux/arm64"]);
        assert_eq!(target_platforms(&[]).unwrap(), vec![None]);
        let err = target_platforms(&["linux/nope".to_string()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("--platform linux/nope"),
            "{err:#}"
        );
    }
}
