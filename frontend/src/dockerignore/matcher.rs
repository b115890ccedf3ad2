//! moby/patternmatcher's `PatternMatcher`: an ordered rule list where the last matching
//! rule wins, `!` rules re-include, and a rule matching a parent directory matches
//! everything below it.

use thiserror::Error;

use super::clean::{clean, dir};
use super::filepath_match::{filepath_match, BadPattern};
use super::ignorefile::IgnoreRule;
use super::pattern::Pattern;

/// Why patterns could not be built or evaluated. Messages are upstream's, since they end
/// up in build errors users compare with Docker's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    #[error(transparent)]
    BadPattern(#[from] BadPattern),
    #[error("wrong number of values in parentMatched")]
    WrongParentCount,
}

/// One compiled rule plus where it came from, so a decision can be traced to its line.
#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    index: usize,
    line: Option<usize>,
}

/// Which rule settled whether a path is ignored; see [`PatternMatcher::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Position of the rule in the list given to the constructor (blank entries count).
    pub index: usize,
    /// 1-based line in the ignore file, when built with [`PatternMatcher::from_rules`].
    pub line: Option<usize>,
    /// The cleaned rule, with its leading `!` when it is an exception.
    pub pattern: String,
    /// `true` when the path ends up ignored, `false` when a `!` rule re-included it.
    pub excluded: bool,
}

/// Per-rule results for a directory, handed to its children by a walker so that rules
/// already known to match the parent are not re-evaluated (upstream's `MatchInfo`).
/// The default value means "no information about the parent".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of `.dockerignore` rules.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    rules: Vec<Rule>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles `patterns` in order. Blank entries are skipped; each is trimmed and
    /// cleaned; a lone `!` and patterns `filepath.Match` rejects are errors.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let entries = patterns.iter().enumerate();
        Self::build(entries.map(|(i, p)| (i, None, p.as_ref())))
    }

    /// Like [`new`](Self::new) for rules read from an ignore file, remembering each rule's
    /// line so [`decide`](Self::decide) can name it.
    pub fn from_rules(rules: &[IgnoreRule]) -> Result<Self, PatternError> {
        let entries = rules.iter().enumerate();
        Self::build(entries.map(|(i, r)| (i, Some(r.line), r.pattern.as_str())))
    }

    fn build<'a>(
        entries: impl Iterator<Item = (usize, Option<usize>, &'a str)>,
    ) -> Result<Self, PatternError> {
        let mut pm = PatternMatcher::default();
        for (index, line, raw) in entries {
            let Some(pattern) = parse_pattern(raw)? else {
                continue;
            };
            pm.exclusions |= pattern.is_exclusion();
            pm.rules.push(Rule {
                pattern,
                index,
                line,
            });
        }
        Ok(pm)
    }

    /// Whether any rule is a `!` exception (a walker cannot skip excluded directories then).
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The compiled rules, in order.
    pub fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.rules.iter().map(|r| &r.pattern)
    }

    /// Whether `file` (slash-separated, relative to the context) is ignored, checking each
    /// rule against the file and, failing that, against each of its parent directories.
    pub fn matches_or_parent_matches(&self, file: &str) -> Result<bool, PatternError> {
        Ok(self.decide(file)?.is_some_and(|d| d.excluded))
    }

    /// Like [`matches_or_parent_matches`](Self::matches_or_parent_matches), but says which
    /// rule decided: the last rule that was evaluated and matched. `None` means no rule
    /// matched at all (the path is kept).
    pub fn decide(&self, file: &str) -> Result<Option<Decision>, PatternError> {
        let parent = dir(file);
        let mut matched = false;
        let mut decider = None;
        for rule in &self.rules {
            let p = &rule.pattern;
            // An inclusion cannot change an already-ignored path, nor an exception a kept one.
            if p.is_exclusion() != matched {
                continue;
            }
            if p.matches(file)? || parent_matches(p, &parent) {
                matched = !p.is_exclusion();
                decider = Some(rule);
            }
        }
        Ok(decider.map(|rule| decision(rule, matched)))
    }

    /// Only tests `file` itself, no parent directories (upstream's `MatchesExact`).
    pub fn matches_exact(&self, file: &str) -> Result<bool, PatternError> {
        self.fold(false, |p| p.matches(file))
    }

    /// Walker API: `parent` is the [`MatchInfo`] returned for `file`'s directory (or the
    /// default for a top-level entry, or when unknown). Rules that matched the parent are
    /// taken as matching without re-evaluation; with no parent information the parent
    /// directories are checked as in [`matches_or_parent_matches`](Self::matches_or_parent_matches).
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let known = &parent.parent_matched;
        if !known.is_empty() && known.len() != self.rules.len() {
            return Err(PatternError::WrongParentCount);
        }
        let parent_dir = dir(file);
        let mut matched = false;
        let mut info = vec![false; self.rules.len()];
        for (i, rule) in self.rules.iter().enumerate() {
            let p = &rule.pattern;
            let mut m = known.get(i).copied().unwrap_or(false);
            if !m {
                if p.is_exclusion() != matched {
                    continue;
                }
                m = p.matches(file)? || known.is_empty() && parent_matches(p, &parent_dir);
            }
            info[i] = m;
            if m {
                matched = !p.is_exclusion();
            }
        }
        Ok((
            matched,
            MatchInfo {
                parent_matched: info,
            },
        ))
    }

    /// Upstream's `MatchesUsingParentResult`: the caller passes whether the parent
    /// directory was ignored. Wrong when a later `!` rule names the directory itself
    /// (docker/buildx#850); kept for parity.
    #[deprecated(note = "use matches_using_parent_results")]
    pub fn matches_using_parent_result(
        &self,
        file: &str,
        parent_matched: bool,
    ) -> Result<bool, PatternError> {
        self.fold(parent_matched, |p| p.matches(file))
    }

    /// Upstream's deprecated `Matches`: checks the file, then only the one ancestor with as
    /// many path parts as the pattern. Kept because the package-level [`matches`] uses it.
    #[deprecated(note = "use matches_or_parent_matches")]
    pub fn matches(&self, file: &str) -> Result<bool, PatternError> {
        let parent = dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        self.fold(false, |p| {
            if p.matches(file)? {
                return Ok(true);
            }
            let n = p.dir_count();
            // As upstream, an error on the ancestor counts as no match.
            let ancestor = || parent_dirs[..n].join("/");
            Ok(parent != "." && n <= parent_dirs.len() && p.matches(&ancestor()).unwrap_or(false))
        })
    }

    /// The shared last-match-wins loop: `test` is only run for rules that could change
    /// the current outcome.
    fn fold(
        &self,
        mut matched: bool,
        mut test: impl FnMut(&Pattern) -> Result<bool, BadPattern>,
    ) -> Result<bool, PatternError> {
        for p in self.patterns() {
            if p.is_exclusion() == matched && test(p)? {
                matched = !p.is_exclusion();
            }
        }
        Ok(matched)
    }
}

/// Trim, clean, strip `!`, and validate one raw pattern. `None` for a blank line.
fn parse_pattern(raw: &str) -> Result<Option<Pattern>, PatternError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let cleaned = clean(trimmed);
    let (exclusion, body) = match cleaned.strip_prefix('!') {
        Some("") => return Err(PatternError::IllegalExclusion),
        Some(rest) => (true, rest),
        None => (false, cleaned.as_str()),
    };
    // Upstream validates with filepath.Match rather than re-implementing its rules.
    filepath_match(body, ".")?;
    Ok(Some(Pattern::compile(body, exclusion)))
}

/// Whether `p` matches any ancestor of a file whose directory is `parent` ("a", "a/b", ...).
/// Evaluation errors count as "no match", as upstream ignores them here.
fn parent_matches(p: &Pattern, parent: &str) -> bool {
    if parent == "." {
        return false;
    }
    let prefixes = parent.match_indices('/').map(|(i, _)| &parent[..i]);
    prefixes
        .chain([parent])
        .any(|prefix| p.matches(prefix).unwrap_or(false))
}

fn decision(rule: &Rule, excluded: bool) -> Decision {
    let bang = if rule.pattern.is_exclusion() { "!" } else { "" };
    Decision {
        index: rule.index,
        line: rule.line,
        pattern: format!("{bang}{}", rule.pattern.as_str()),
        excluded,
    }
}

/// Upstream's deprecated package-level `Matches(file, patterns)`: builds a matcher, cleans
/// `file`, never ignores the context root `.`, and uses the single-parent check.
#[deprecated(note = "use PatternMatcher::matches_or_parent_matches")]
pub fn matches<S: AsRef<str>>(file: &str, patterns: &[S]) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    #[allow(deprecated)]
    Ok(file != "." && pm.matches(&file)?)
}

/// Upstream's package-level `MatchesOrParentMatches(file, patterns)`.
pub fn matches_or_parent_matches<S: AsRef<str>>(
    file: &str,
    patterns: &[S],
) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    Ok(file != "." && pm.matches_or_parent_matches(&file)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerignore::read_ignore_file;

    fn from_file(text: &str) -> PatternMatcher {
        let rules = read_ignore_file(text.as_bytes()).expect("readable");
        PatternMatcher::from_rules(&rules).expect("valid patterns")
    }

    #[test]
    fn decide_names_the_line_that_won() {
        let pm = from_file("# logs\n\n*.log\n!keep.log\nbuild\n");
        let d = pm.decide("x.log").unwrap().expect("decided");
        assert_eq!(
            (d.line, d.index, d.pattern.as_str(), d.excluded),
            (Some(3), 0, "*.log", true)
        );
        let d = pm.decide("keep.log").unwrap().expect("decided");
        assert_eq!(
            (d.line, d.pattern.as_str(), d.excluded),
            (Some(4), "!keep.log", false)
        );
        // A parent directory match is reported too.
        let d = pm.decide("build/out/a.o").unwrap().expect("decided");
        assert_eq!((d.line, d.excluded), (Some(5), true));
        assert_eq!(pm.decide("src/main.rs").unwrap(), None);
    }

    #[test]
    fn decide_indexes_count_blank_entries_without_file() {
        let pm = PatternMatcher::new(&["", "a", "  "]).unwrap();
        let d = pm.decide("a").unwrap().expect("decided");
        assert_eq!((d.index, d.line), (1, None));
    }

    #[test]
    fn walker_reuses_parent_results() {
        let pm = PatternMatcher::new(&["docs", "!docs/keep"]).unwrap();
        let (m, docs) = pm
            .matches_using_parent_results("docs", &MatchInfo::default())
            .unwrap();
        assert!(m);
        assert_eq!(docs.parent_matched, vec![true, false]);
        // The child inherits rule 0 without re-testing it; rule 1 re-includes.
        let (m, _) = pm.matches_using_parent_results("docs/keep", &docs).unwrap();
        assert!(!m);
        let (m, child) = pm
            .matches_using_parent_results("docs/other", &docs)
            .unwrap();
        assert!(m);
        assert_eq!(child.parent_matched, vec![true, false]);
    }

    #[test]
    fn walker_rejects_foreign_match_info() {
        let one = PatternMatcher::new(&["a"]).unwrap();
        let two = PatternMatcher::new(&["a", "b"]).unwrap();
        let (_, info) = one
            .matches_using_parent_results("a", &MatchInfo::default())
            .unwrap();
        let err = two.matches_using_parent_results("a/x", &info).unwrap_err();
        assert_eq!(err.to_string(), "wrong number of values in parentMatched");
    }

    #[test]
    fn deprecated_flag_walker_misses_reincluded_dir() {
        // docker/buildx#850: the flag cannot tell that `!a/b` re-included the directory.
        let pm = PatternMatcher::new(&["a", "!a/b"]).unwrap();
        #[allow(deprecated)]
        let child = pm.matches_using_parent_result("a/b/c", true).unwrap();
        assert!(child);
        assert!(!pm.matches_or_parent_matches("a/b/c").unwrap());
    }

    #[test]
    fn constructor_errors_use_upstream_messages() {
        let lone = PatternMatcher::new(&[" ! "]).unwrap_err();
        assert_eq!(lone.to_string(), "illegal exclusion pattern: \"!\"");
        let bad = PatternMatcher::new(&["a/[b"]).unwrap_err();
        assert_eq!(bad.to_string(), "syntax error in pattern");
    }

    #[test]
    fn bad_regexp_errors_only_when_evaluated() {
        // Upstream regression moby/moby#52203: accepted by New, fails on every evaluation.
        let pm = PatternMatcher::new(&["[Local-Only]/"]).unwrap();
        assert_eq!(
            pm.matches_or_parent_matches("x"),
            Err(PatternError::BadPattern(BadPattern))
        );
        assert_eq!(
            pm.matches_or_parent_matches("x"),
            Err(PatternError::BadPattern(BadPattern))
        );
        // Never evaluated: an inclusion after everything already matched.
        let pm = PatternMatcher::new(&["*", "[z-a]"]).unwrap();
        assert_eq!(pm.matches_or_parent_matches("x/y"), Ok(true));
    }

    #[test]
    fn package_matches_never_ignores_the_root() {
        #[allow(deprecated)]
        let root = matches("./", &["*"]);
        assert_eq!(root, Ok(false));
        assert_eq!(matches_or_parent_matches("a/./b", &["a/b"]), Ok(true));
    }
}
