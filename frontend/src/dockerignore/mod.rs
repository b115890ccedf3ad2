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
pub use pattern::{to_go_regexp, to_go_regexp_with_separator, MatchType, Pattern, Separator};

#[cfg(test)]
mod no_panic {
    //! Patterns come straight from user files, so no input may panic.
    use super::*;
    use proptest::prelude::*;

    const SPICY: &str = "[a-b/*?\\[\\]^\\-\\\\!.{}()|$ :é☺\u{FEFF}#\r\n\t<>&~0-9xdpQE]{0,12}";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matching_never_panics(pats in prop::collection::vec(SPICY, 0..4), path in SPICY) {
            let _ = filepath_match(&pats.concat(), &path);
            let _ = to_go_regexp(&pats.concat());
            let _ = to_go_regexp_with_separator(&pats.concat(), Separator::Backslash);
            if let Ok(pm) = PatternMatcher::new(&pats) {
                let _ = pm.decide(&path);
                let _ = pm.matches_exact(&path);
                let (_, info) = pm
                    .matches_using_parent_results("p", &MatchInfo::default())
                    .unwrap_or_default();
                let _ = pm.matches_using_parent_results(&path, &info);
            }
        }

        #[test]
        fn reading_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = read_ignore_file(&bytes);
        }
    }
}
