//! Reading a Dockerfile from disk or stdin, parsing it with the frontend, and turning parse
//! errors into located diagnostics that name the file as the user wrote it.

use std::fmt;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use rbuild_frontend::diagnostic;
use rbuild_frontend::graph::{self, BuildGraph, LowerOptions, NoBaseImages};
use rbuild_frontend::parser::{self, Dockerfile};

/// How a Dockerfile read from stdin is named in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// A Dockerfile's bytes and the name messages show for it.
pub struct Source {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Source {
    /// Reads `path` (`-` = stdin). Messages name the file exactly as `path` is written.
    pub fn read(path: &str) -> anyhow::Result<Source> {
        if path == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the Dockerfile from stdin")?;
            return Ok(Source {
                name: STDIN_NAME.to_string(),
                bytes,
            });
        }
        let bytes = std::fs::read(Path::new(path))
            .with_context(|| format!("cannot read the Dockerfile {path:?}"))?;
        Ok(Source {
            name: path.to_string(),
            bytes,
        })
    }

    /// Parses the Dockerfile. Parser warnings go to stderr as `NAME:LINE: warning: MESSAGE`;
    /// a parse error becomes a [`Reported`] diagnostic with the offending line and a caret.
    pub fn parse(&self) -> anyhow::Result<Dockerfile> {
        let dockerfile = parser::parse(&self.bytes).map_err(|err| {
            let message = err.kind.to_string();
            let text = diagnostic::render(
                &self.name,
                &self.bytes,
                err.start_line,
                err.column,
                &message,
            );
            Reported(text)
        })?;
        for warning in &dockerfile.warnings {
            eprintln!(
                "{}:{}: warning: {}",
                self.name, warning.line, warning.message
            );
        }
        Ok(dockerfile)
    }
}

impl Source {
    /// Types, checks and lowers the Dockerfile. Lint warnings go to stderr as
    /// `NAME:LINE: warning: Rule: message`; an error becomes a located diagnostic.
    pub fn lower(
        &self,
        dockerfile: &Dockerfile,
        options: &LowerOptions,
    ) -> anyhow::Result<BuildGraph> {
        self.lower_with(dockerfile, options, &NoBaseImages)
    }

    /// Lowers with base image configs from `bases` (the builder's image sources).
    pub fn lower_with(
        &self,
        dockerfile: &Dockerfile,
        options: &LowerOptions,
        bases: &dyn graph::BaseImages,
    ) -> anyhow::Result<BuildGraph> {
        let graph = self.lower_quietly(dockerfile, options, bases)?;
        for warning in &graph.warnings {
            eprintln!("{}", warning.render(&self.name));
        }
        Ok(graph)
    }

    /// [`Source::lower_with`] without printing the lint warnings (another lowering of the same
    /// Dockerfile, for another platform, printed them).
    pub fn lower_quietly(
        &self,
        dockerfile: &Dockerfile,
        options: &LowerOptions,
        bases: &dyn graph::BaseImages,
    ) -> anyhow::Result<BuildGraph> {
        graph::lower(dockerfile, options, bases).map_err(|err| {
            let (line, column) = err.location();
            Reported(diagnostic::render(
                &self.name,
                &self.bytes,
                line,
                column,
                &err.to_string(),
            ))
            .into()
        })
    }
}

/// An error already rendered for the user (a located diagnostic): printed as it is, without
/// an `error:` prefix.
#[derive(Debug)]
pub struct Reported(pub String);

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Reported {}
