//! One `.dockerignore` pattern, compiled the way moby/patternmatcher compiles it.
//!
//! Upstream classifies each pattern so the common shapes avoid regexps: a plain path is
//! compared exactly, `dir/**` is a prefix test, `**/name` a suffix test, and everything else
//! becomes a regexp. The classification is observable (`**foo` matches `a/xfoo` through the
//! suffix test, while the regexp for `**f*` needs `f` to start a path segment), so it is
//! reproduced exactly.

use regex::Regex;

use super::filepath_match::BadPattern;
use super::goregex;

/// How a pattern is tested against a path; mirrors upstream's `matchType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// The path must equal the pattern.
    Exact,
    /// A trailing `**` on a wildcard-free pattern: the path must start with the rest.
    Prefix,
    /// A leading `**`: the path must end with the rest (or be it, minus the `/`).
    Suffix,
    /// Anything else, through the generated regexp.
    Regexp,
}

/// The path separator a pattern is compiled for: upstream's `compile(sl)` parameter.
/// Builds always use `/`; `\` is upstream's Windows variant, which its TestCompile runs on
/// every OS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Separator {
    #[default]
    Slash,
    Backslash,
}

impl Separator {
    pub fn as_char(self) -> char {
        match self {
            Separator::Slash => '/',
            Separator::Backslash => '\\',
        }
    }

    /// The separator as regexp text (upstream's `escSL`).
    fn escaped(self) -> &'static str {
        match self {
            Separator::Slash => "/",
            Separator::Backslash => r"\\",
        }
    }
}

/// The compiled form of one cleaned pattern (without its `!`).
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    sep: Separator,
    match_type: MatchType,
    /// Upstream's regexp text, kept even when it does not compile (for diagnostics).
    regexp_str: Option<String>,
    /// `None` for a regexp pattern that failed to compile: upstream accepts such a
    /// pattern and reports `ErrBadPattern` each time it is evaluated.
    regexp: Option<Regex>,
}

impl Pattern {
    /// Compiles `cleaned` (already `Clean`ed, `!` removed) the way upstream does, for `/`.
    pub fn compile(cleaned: &str, exclusion: bool) -> Self {
        Self::compile_with_separator(cleaned, exclusion, Separator::Slash)
    }

    /// [`Pattern::compile`] for paths (and a pattern) separated by `sep`.
    pub fn compile_with_separator(cleaned: &str, exclusion: bool, sep: Separator) -> Self {
        let (match_type, go_re) = to_go_regexp_with_separator(cleaned, sep);
        let (regexp_str, regexp) = match match_type {
            MatchType::Regexp => (Some(go_re.clone()), goregex::compile(&go_re).ok()),
            _ => (None, None),
        };
        Pattern {
            cleaned: cleaned.to_string(),
            exclusion,
            sep,
            match_type,
            regexp_str,
            regexp,
        }
    }

    /// The cleaned pattern text, without the leading `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` rule that re-includes what earlier rules excluded.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    pub fn match_type(&self) -> MatchType {
        self.match_type
    }

    /// Upstream's regexp string (Go syntax), for regexp patterns only.
    pub fn regexp_str(&self) -> Option<&str> {
        self.regexp_str.as_deref()
    }

    /// Number of separator-separated parts; only the deprecated single-parent matcher uses it.
    pub(crate) fn dir_count(&self) -> usize {
        self.cleaned.split(self.sep.as_char()).count()
    }

    /// Tests a path (separated like the pattern) against this pattern alone (no parent logic).
    /// Compared bytewise, like Go, so no multi-byte boundary can split a `&str`.
    pub fn matches(&self, path: &str) -> Result<bool, BadPattern> {
        let (bytes, pat) = (path.as_bytes(), self.cleaned.as_bytes());
        Ok(match self.match_type {
            MatchType::Exact => bytes == pat,
            // Strip the trailing `**`.
            MatchType::Prefix => bytes.starts_with(&pat[..pat.len().saturating_sub(2)]),
            MatchType::Suffix => {
                let suffix = pat.get(2..).unwrap_or_default();
                // `**/foo` also matches `foo` itself.
                let sep = self.sep.as_char() as u8;
                bytes.ends_with(suffix) || suffix.first() == Some(&sep) && bytes == &suffix[1..]
            }
            MatchType::Regexp => match &self.regexp {
                Some(re) => re.is_match(path),
                None => return Err(BadPattern),
            },
        })
    }
}

/// Characters that mean something to a regexp but nothing to `filepath.Match`, so they
/// are escaped to stay literal. `[`, `]`, `*`, `?` and `\` are wildcard syntax instead.
fn is_regex_only_meta(c: char) -> bool {
    ".+()|{}$".contains(c)
}

/// Upstream's `compile` on a `/`-separated pattern: the match type and the regexp text
/// (the latter meaningful only for [`MatchType::Regexp`]).
pub fn to_go_regexp(cleaned: &str) -> (MatchType, String) {
    to_go_regexp_with_separator(cleaned, Separator::Slash)
}

/// Upstream's `compile(sl)` on a pattern separated by `sep`. With `\` a backslash is the
/// separator, never an escape (Windows `filepath.Match` has no escapes).
pub fn to_go_regexp_with_separator(cleaned: &str, sep: Separator) -> (MatchType, String) {
    let (sl, esc) = (sep.as_char(), sep.escaped());
    let mut re = String::from("^");
    let mut kind = MatchType::Exact;
    // Go's text/scanner silently drops a byte-order mark at the very start.
    let body = cleaned.strip_prefix('\u{FEFF}').unwrap_or(cleaned);
    let mut chars = body.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is treated as `**`.
                chars.next_if_eq(&sl);
                kind = double_star(&mut re, kind, chars.peek().is_none(), esc);
                if first {
                    kind = MatchType::Suffix;
                }
            }
            '*' => push_wild(&mut re, &mut kind, &format!("[^{esc}]*")),
            '?' => push_wild(&mut re, &mut kind, &format!("[^{esc}]")),
            '[' | ']' => push_wild(&mut re, &mut kind, &c.to_string()),
            // The separator itself, literal; it does not make a regexp.
            '\\' if sep == Separator::Backslash => re.push_str(esc),
            '\\' => match chars.next() {
                Some(next) => push_wild(&mut re, &mut kind, &format!("\\{next}")),
                // A trailing backslash stays (escaped) and does not make a regexp.
                None => re.push('\\'),
            },
            _ if is_regex_only_meta(c) => {
                re.push('\\');
                re.push(c);
            }
            _ => re.push(c),
        }
        first = false;
    }
    if kind == MatchType::Regexp {
        re.push('$');
    }
    (kind, re)
}

fn push_wild(re: &mut String, kind: &mut MatchType, text: &str) {
    re.push_str(text);
    *kind = MatchType::Regexp;
}

/// `**`: at the end of an otherwise literal pattern it is a prefix test, at the end of a
/// wildcard pattern `.*`, and elsewhere any number of whole directories, including none.
fn double_star(re: &mut String, kind: MatchType, at_end: bool, esc: &str) -> MatchType {
    match (at_end, kind) {
        (true, MatchType::Exact) => MatchType::Prefix,
        (true, _) => {
            re.push_str(".*");
            MatchType::Regexp
        }
        (false, _) => {
            re.push_str("(.*");
            re.push_str(esc);
            re.push_str(")?");
            MatchType::Regexp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_at_start_is_skipped_by_the_compiler_only() {
        let (kind, re) = to_go_regexp("\u{FEFF}a*");
        assert_eq!((kind, re.as_str()), (MatchType::Regexp, "^a[^/]*$"));
        // Exact compare still uses the cleaned text, BOM included.
        let p = Pattern::compile("\u{FEFF}ab", false);
        assert_eq!(p.matches("ab"), Ok(false));
        // Byte slicing inside the BOM must not panic.
        let p = Pattern::compile("\u{FEFF}**", false);
        assert_eq!(p.match_type(), MatchType::Suffix);
        assert!(p.matches("x").is_ok());
    }

    #[test]
    fn uncompilable_regexp_fails_at_match_time() {
        // Valid for filepath.Match (a reversed range), rejected by RE2.
        let p = Pattern::compile("[Local-Only]", false);
        assert_eq!(p.regexp_str(), Some("^[Local-Only]$"));
        assert_eq!(p.matches("x"), Err(BadPattern));
        assert_eq!(p.matches("x"), Err(BadPattern));
    }

    #[test]
    fn backslash_separator() {
        let sep = Separator::Backslash;
        let re = |p| to_go_regexp_with_separator(p, sep);
        assert_eq!(re(r"a*\b"), (MatchType::Regexp, r"^a[^\\]*\\b$".into()));
        assert_eq!(re(r"**\x?"), (MatchType::Regexp, r"^(.*\\)?x[^\\]$".into()));
        // A backslash is the separator, never an escape: `a\b` stays an exact match.
        assert_eq!(re(r"a\b").0, MatchType::Exact);
        let p = Pattern::compile_with_separator(r"**\a*", false, sep);
        assert_eq!(p.matches(r"x\ab"), Ok(true));
        assert_eq!(p.matches(r"x/ab"), Ok(false));
        let p = Pattern::compile_with_separator(r"**\foo", false, sep);
        assert_eq!((p.matches("foo"), p.dir_count()), (Ok(true), 2));
    }

    #[test]
    fn suffix_versus_regexp() {
        assert_eq!(Pattern::compile("**foo", false).matches("a/xfoo"), Ok(true));
        assert_eq!(Pattern::compile("**f*", false).matches("a/xfoo"), Ok(false));
    }

    #[test]
    fn class_with_star_inside_matches_like_go_regexp() {
        // Upstream's regexp is `^[a[^/]*]$`.
        let p = Pattern::compile("[a*]", false);
        assert_eq!(p.regexp_str(), Some("^[a[^/]*]$"));
        assert_eq!(p.matches("a]"), Ok(true));
        assert_eq!(p.matches("a"), Ok(false));
    }
}
