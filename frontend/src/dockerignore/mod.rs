//! `.dockerignore` files and moby/patternmatcher semantics.
//!
//! BuildKit decides which context files a build can see with moby/patternmatcher, so any
//! difference here silently changes what `COPY .` copies. Everything is a from-scratch
//! reimplementation of upstream's observable behaviour, including its quirks:
//!
//! - [`filepath_match`]: Go's `filepath.Match`, used to validate patterns;
//! - [`Pattern`] / [`PatternMatcher`]: compiled rules, last match wins, `!` re-includes,
//!   a rule matching a directory matches everything under it;
//! - [`read_ignore_file`] / [`ignore_file_candidates`]: reading the file and choosing it.

mod clean;
mod filepath_match;
mod goregex;
mod ignorefile;
mod matcher;
mod pattern;

pub use clean::{clean, dir};
pub use filepath_match::{filepath_match, BadPattern};
pub use goregex::GoRegexError;
pub use ignorefile::{
    ignore_file_candidates, read_ignore_file, IgnoreFileError, IgnoreRule, MAX_LINE_BYTES,
};
#[allow(deprecated)]
pub use matcher::matches;
pub use matcher::{matches_or_parent_matches, Decision, MatchInfo, PatternError, PatternMatcher};
pub use pattern::{to_go_regexp, MatchType, Pattern};
