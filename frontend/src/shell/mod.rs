//! Shell-word expansion as BuildKit's lexer does it.
//!
//! Dockerfile instructions such as `ENV`, `ARG`, `COPY` and `WORKDIR` expand `$VAR` and
//! `${VAR…}` themselves, without a shell, using BuildKit's own small lexer
//! (`frontend/dockerfile/shell/lex.go`). Its behaviour differs from POSIX sh in many small
//! ways that existing Dockerfiles rely on, so this module reproduces it exactly rather than
//! aiming at sh: see the conformance suite under `testdata/conformance/buildkit/shell`.
//!
//! Variable lookups are case-sensitive (BuildKit's Linux behaviour).

mod dollar;
mod env;
mod error;
pub mod pattern;
mod unicode;
mod word;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use env::EnvGetter;
pub use error::go_quote;
pub use error::ShellError;

use word::{Scanned, ShellWord};

/// A configured lexer. Cheap to clone; holds no per-word state, so one lexer may be shared.
#[derive(Clone, Debug)]
pub struct Lexer {
    /// The escape character: `\` by default, `` ` `` under `# escape=``.
    pub escape: char,
    /// Keep quote characters in the output (used where a later stage re-parses the word).
    pub raw_quotes: bool,
    /// Keep escape characters in the output, for the same reason.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding them to empty, so
    /// a later expansion with more variables known can still fill them in.
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters (for words whose quotes belong to a later parser).
    pub skip_process_quotes: bool,
}

/// The outcome of [`Lexer::process_word_with_matches`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// Names that were looked up and found. Lint and build-cache code use this to know
    /// which build arguments a word depends on.
    pub matched: BTreeSet<String>,
    /// Names that were looked up but are unset (for "undefined variable" lint warnings).
    pub unmatched: BTreeSet<String>,
}

impl Lexer {
    /// A lexer with the given escape character and every option off.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word` into one string: quotes removed, escapes applied, variables replaced,
    /// white space kept as it is.
    pub fn process_word(&self, word: &str, env: &dyn EnvGetter) -> Result<String, ShellError> {
        Ok(self.run(word, env)?.0.text)
    }

    /// Expands `word` and then splits it on white space. Splitting happens after expansion, so
    /// an unquoted `$VAR` holding spaces gives several words, while quoted text and escaped
    /// spaces never split.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<Vec<String>, ShellError> {
        Ok(self.run(word, env)?.0.words)
    }

    /// Like [`Lexer::process_word`], also reporting which variable names were looked up.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<Expansion, ShellError> {
        let (scanned, matched, unmatched) = self.run(word, env)?;
        Ok(Expansion {
            result: scanned.text,
            matched,
            unmatched,
        })
    }

    /// Scans the whole word, wrapping any error with the input as BuildKit does.
    fn run(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<(Scanned, BTreeSet<String>, BTreeSet<String>), ShellError> {
        let mut sw = ShellWord::new(self, env, word);
        match sw.scan_until(None, self.raw_escapes) {
            Ok(scanned) => Ok((scanned, sw.matched, sw.unmatched)),
            Err(cause) => Err(ShellError::Process {
                input: word.to_string(),
                cause: Box::new(cause),
            }),
        }
    }
}
