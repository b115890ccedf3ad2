//! Shell glob patterns for `${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}`.
//!
//! BuildKit converts the glob to a Go RE2 regex and lets the regex engine do the matching; the
//! conversion is reproduced string for string (the conformance data pins the exact regex text),
//! and every string it produces is also valid for the Rust `regex` crate, whose leftmost-first
//! semantics equal RE2's.
//!
//! A regex finds the leftmost match, never the shortest *rightmost* one, so suffix removal
//! reverses both the value and the pattern (keeping escapes in front of what they escape) and
//! removes a prefix instead.

use regex::Regex;

use super::error::ShellError;

/// Go's `text/scanner` drops one byte-order mark at the start of its input, and BuildKit scans
/// patterns with it, so a leading BOM is not part of the pattern.
fn without_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

/// Converts a glob (`*` any string, `?` one character, `\` escaping `*`, `?` or `\`) to regex
/// text. `greedy` picks `.*` over `.*?`; `anchored` prefixes `^`.
///
/// `\}` and `\/` lose their backslash: inside `${…}` those escapes only stop the lexer from
/// ending the expression there, they are not part of the pattern. Bracket expressions are not
/// supported, as in BuildKit, so `[` and `]` are literals.
pub fn convert_shell_pattern_to_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<String, ShellError> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = without_bom(pattern).chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' if matches!(chars.peek(), Some('}' | '/')) => {}
            '\\' => match chars.next() {
                Some(esc @ ('*' | '?' | '\\')) => {
                    out.push('\\');
                    out.push(esc);
                }
                // Go formats end of input with `%c` of -1, which prints U+FFFD.
                other => return Err(ShellError::InvalidEscape(other.unwrap_or('\u{fffd}'))),
            },
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(tok);
            }
            _ => out.push(tok),
        }
    }
    Ok(out)
}

/// Compiles a glob, wrapping failures the way BuildKit reports them for the substitution.
fn compile(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, ShellError> {
    let wrap = |cause: ShellError| ShellError::InvalidPattern {
        pattern: pattern.to_string(),
        cause: Box::new(cause),
    };
    let text = convert_shell_pattern_to_regex(pattern, greedy, anchored).map_err(wrap)?;
    Regex::new(&text).map_err(|e| wrap(ShellError::Regex(e.to_string())))
}

/// Reverses a glob character by character but keeps each `\` in front of the character it
/// escapes, so `a\*c` becomes `c\*a` and still means a literal star.
pub fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        // A trailing lone `\` is a unit of its own (it cannot come from `${v%p}`, which
        // would have consumed it, but the function must still be total).
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|u| u.iter()).collect()
}

/// Reverses a string by Unicode scalar values, as Go's `[]rune` reversal does.
pub fn reverse_string(s: &str) -> String {
    s.chars().rev().collect()
}

/// `${v#p}` / `${v##p}`: removes the shortest (or, when `greedy`, longest) prefix of `value`
/// matching `pattern`; no match leaves `value` as it is.
pub fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellError> {
    let re = compile(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${v%p}` / `${v%%p}`: removes the shortest (or longest) matching suffix, by removing a
/// prefix from the reversed value with the reversed pattern.
pub fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellError> {
    let reversed = trim_prefix(&reverse_pattern(pattern), &reverse_string(value), greedy)?;
    Ok(reverse_string(&reversed))
}

/// `${v/p/r}` and `${v//p/r}`: replaces the first (or every) longest match of `pattern`.
///
/// The single replacement is literal, but the replace-all form goes through Go's
/// `ReplaceAllString`, which expands `$0`, `${name}` and `$$` in the replacement; that is
/// reproduced, since a Dockerfile may depend on it.
pub fn replace(
    value: &str,
    pattern: &str,
    replacement: &str,
    all: bool,
) -> Result<String, ShellError> {
    let re = compile(pattern, true, false)?;
    if all {
        return Ok(replace_all(&re, value, replacement));
    }
    Ok(match re.find(value) {
        Some(m) => format!("{}{replacement}{}", &value[..m.start()], &value[m.end()..]),
        None => value.to_string(),
    })
}

/// Go's `Regexp.ReplaceAllString` loop: an empty match right after a previous match is not
/// replaced, and the search always advances by at least one character.
fn replace_all(re: &Regex, src: &str, template: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let (mut last_end, mut search) = (0usize, 0usize);
    while search <= src.len() {
        let Some(m) = re.find_at(src, search) else {
            break;
        };
        out.push_str(&src[last_end..m.start()]);
        if m.end() > last_end || m.start() == 0 {
            expand_template(&mut out, template, m.as_str());
        }
        last_end = m.end();
        let width = src[search..].chars().next().map_or(1, char::len_utf8);
        search = if search + width > m.end() {
            search + width
        } else {
            m.end()
        };
    }
    out.push_str(src.get(last_end..).unwrap_or(""));
    out
}

/// Go's `Regexp.Expand` for a regex without groups: `$$` is `$`, `$0` / `${0}` the whole
/// match, any other well-formed reference empty, and a malformed one a literal `$`.
fn expand_template(out: &mut String, template: &str, whole: &str) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_ref(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(whole);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Parses the reference after a `$` (`name` or `{name}`), as Go's `extract` does: the name
/// is letters, digits and `_`; returns it with the remaining template.
fn template_ref(s: &str) -> Option<(&str, &str)> {
    use super::unicode::{is_go_digit, is_go_letter};
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(is_go_letter(c) || is_go_digit(c) || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let (name, after) = body.split_at(end);
    if !braced {
        return Some((name, after));
    }
    after.strip_prefix('}').map(|after| (name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_greedy_and_unanchored_forms() {
        assert_eq!(
            convert_shell_pattern_to_regex("a*b?", false, false).unwrap(),
            "a.*?b."
        );
        assert_eq!(
            convert_shell_pattern_to_regex("\\}\\/", true, false).unwrap(),
            "\\}/"
        );
        assert_eq!(
            convert_shell_pattern_to_regex("\u{feff}x", true, false).unwrap(),
            "x"
        );
    }

    #[test]
    fn invalid_escape_message() {
        let err = convert_shell_pattern_to_regex("\\", true, true).unwrap_err();
        assert_eq!(err, ShellError::InvalidEscape('\u{fffd}'));
        let err = trim_prefix("\\x", "v", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pattern (\\x) in substitution: invalid escape '\\x'"
        );
    }

    #[test]
    fn trims_shortest_and_longest() {
        assert_eq!(trim_prefix("*/", "a/b/c", false).unwrap(), "b/c");
        assert_eq!(trim_prefix("*/", "a/b/c", true).unwrap(), "c");
        assert_eq!(trim_suffix("/*", "a/b/c", false).unwrap(), "a/b");
        assert_eq!(trim_suffix("/*", "a/b/c", true).unwrap(), "a");
        assert_eq!(trim_suffix("ü?", "größü!", false).unwrap(), "größ");
    }

    #[test]
    fn replace_all_follows_go() {
        assert_eq!(replace("baaab", "a", "x", true).unwrap(), "bxxxb");
        // Empty matches: Go gives "-b-c-" for ReplaceAllString("bc", "", "-").
        assert_eq!(replace("bc", "", "-", true).unwrap(), "-b-c-");
        assert_eq!(
            replace("ab", "a", "<$0$$${0}$x$>", true).unwrap(),
            "<a$a$>b"
        );
        assert_eq!(replace("ab", "a", "<$0>", false).unwrap(), "<$0>b");
        assert_eq!(replace("日本", "", ".", true).unwrap(), ".日.本.");
    }
}
