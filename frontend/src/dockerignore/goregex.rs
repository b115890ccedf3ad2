//! Compiles Go RE2 syntax with the `regex` crate.
//!
//! Upstream turns each wildcard pattern into a Go regexp string and we keep that exact
//! string (it is observable in upstream's tests). But the two engines read some syntax
//! differently, and user text flows into the string almost verbatim, so compiling it as-is
//! would change behaviour for odd patterns:
//!
//! - inside `[...]`, Go takes `[`, `&&`, `--` and `~~` literally; Rust nests or combines sets
//!   (`[a*]` becomes Go's `[a[^/]*]`, a class followed by `*` and a literal `]`);
//! - `\d`, `\s`, `\w`, `\b` are ASCII in Go but Unicode in Rust;
//! - Go has octal escapes and `\Q...\E`, while Rust reads `\<` and `\>` as word boundaries.
//!
//! So we parse the Go string with Go's rules and emit an equivalent Rust regex in which
//! every literal character is written as `\x{..}`. Only the syntax the pattern compiler can
//! produce is handled: the `{`, `}`, `(`, `)`, `|` and `$` that user text supplies arrive
//! already escaped, so repetition braces and groups only ever come from the compiler itself.

use regex::Regex;
use thiserror::Error;

/// Why a generated Go regexp does not compile. Upstream maps every such failure to
/// `filepath.ErrBadPattern` at match time; the detail is kept for debugging.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GoRegexError {
    #[error("missing closing ]")]
    MissingBracket,
    #[error("invalid escape sequence")]
    InvalidEscape,
    #[error("trailing backslash at end of expression")]
    TrailingBackslash,
    #[error("invalid character class range")]
    InvalidCharRange,
    #[error("regex crate rejected the translation: {0}")]
    Rust(String),
}

type Parsed<'a> = Result<&'a str, GoRegexError>;

/// Compiles `go_re` (Go RE2 syntax, as produced by the pattern compiler) into a [`Regex`]
/// with the same meaning.
pub fn compile(go_re: &str) -> Result<Regex, GoRegexError> {
    let rust = translate(go_re)?;
    Regex::new(&rust).map_err(|e| GoRegexError::Rust(e.to_string()))
}

/// Rewrites Go syntax into regex-crate syntax (see the module docs for what differs).
pub fn translate(go_re: &str) -> Result<String, GoRegexError> {
    let mut out = String::with_capacity(go_re.len() * 2);
    let mut rest = go_re;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        rest = match c {
            '\\' => top_escape(rest, &mut out)?,
            '[' => class(rest, &mut out)?,
            ']' => {
                push_literal(&mut out, ']');
                rest
            }
            _ => {
                out.push(c);
                rest
            }
        };
    }
    Ok(out)
}

/// Writes `c` as a literal that means the same inside and outside a class.
fn push_literal(out: &mut String, c: char) {
    out.push_str(&format!("\\x{{{:X}}}", c as u32));
}

/// Splits off the first char of `s`.
fn next_char(s: &str) -> Option<(char, &str)> {
    let c = s.chars().next()?;
    Some((c, &s[c.len_utf8()..]))
}

/// An escape outside a class (`s` starts after the `\`): assertions, `\Q...\E`, Unicode
/// and Perl classes, then the escapes that stand for one character.
fn top_escape<'a>(s: &'a str, out: &mut String) -> Parsed<'a> {
    let (c, after) = next_char(s).ok_or(GoRegexError::TrailingBackslash)?;
    match c {
        'A' | 'z' => {
            out.push('\\');
            out.push(c);
            Ok(after)
        }
        // Go's word boundary is ASCII-only.
        'b' | 'B' => {
            out.push_str(if c == 'b' { "(?-u:\\b)" } else { "(?-u:\\B)" });
            Ok(after)
        }
        'Q' => {
            let (lit, rest) = after.split_once("\\E").unwrap_or((after, ""));
            lit.chars().for_each(|c| push_literal(out, c));
            Ok(rest)
        }
        'p' | 'P' => unicode_class(c, after, out),
        _ if perl_class(c).is_some() => {
            out.push_str(perl_class(c).unwrap_or_default());
            Ok(after)
        }
        _ => {
            let (ch, rest) = char_escape(s)?;
            push_literal(out, ch);
            Ok(rest)
        }
    }
}

/// Go's ASCII-only Perl classes, spelled out so Rust does not widen them to Unicode.
fn perl_class(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        's' => "[\\t\\n\\x0C\\r ]",
        'S' => "[^\\t\\n\\x0C\\r ]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        _ => return None,
    })
}

/// `\pX` (after the `p`/`P`): a one-letter Unicode class. The braced form cannot reach us,
/// because the pattern compiler escapes `{`, and Go then rejects `\p\` as Rust does.
fn unicode_class<'a>(p: char, s: &'a str, out: &mut String) -> Parsed<'a> {
    match next_char(s) {
        Some((name, rest)) if name.is_ascii_alphabetic() => {
            out.push('\\');
            out.push(p);
            out.push(name);
            Ok(rest)
        }
        _ => Err(GoRegexError::InvalidCharRange),
    }
}

/// Go's `parseEscape` (`s` starts after the `\`): an escape that stands for one character.
fn char_escape(s: &str) -> Result<(char, &str), GoRegexError> {
    let (c, rest) = next_char(s).ok_or(GoRegexError::TrailingBackslash)?;
    let simple = match c {
        _ if c.is_ascii() && !c.is_ascii_alphanumeric() => Some(c),
        'a' => Some('\u{7}'),
        'f' => Some('\u{C}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{B}'),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, rest));
    }
    match c {
        '0'..='7' => octal_escape(s),
        'x' => hex_escape(rest),
        _ => Err(GoRegexError::InvalidEscape),
    }
}

/// `\0`, `\0NN`, `\NNN`: up to three octal digits. A lone `\1`..`\7` would be a
/// backreference, which Go does not support.
fn octal_escape(s: &str) -> Result<(char, &str), GoRegexError> {
    let digits = s
        .bytes()
        .take(3)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .count();
    if digits == 1 && !s.starts_with('0') {
        return Err(GoRegexError::InvalidEscape);
    }
    let value = u32::from_str_radix(&s[..digits], 8).map_err(|_| GoRegexError::InvalidEscape)?;
    let ch = char::from_u32(value).ok_or(GoRegexError::InvalidEscape)?;
    Ok((ch, &s[digits..]))
}

/// `\xHH` (after the `x`): exactly two hex digits, since `\x{...}` cannot reach us.
fn hex_escape(s: &str) -> Result<(char, &str), GoRegexError> {
    let hex = s
        .get(..2)
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    let value = hex.and_then(|h| u32::from_str_radix(h, 16).ok());
    let ch = value
        .and_then(char::from_u32)
        .ok_or(GoRegexError::InvalidEscape)?;
    Ok((ch, &s[2..]))
}

/// A class body (`s` starts after `[`), read with Go's rules: `]` right after `[` or `[^`
/// is literal, `[` is literal unless it opens `[:name:]`, and `-` makes a range unless it
/// comes last.
fn class<'a>(mut s: &'a str, out: &mut String) -> Parsed<'a> {
    out.push('[');
    if let Some(rest) = s.strip_prefix('^') {
        out.push('^');
        s = rest;
    }
    let mut first = true;
    loop {
        match s.chars().next() {
            None => return Err(GoRegexError::MissingBracket),
            Some(']') if !first => {
                out.push(']');
                return Ok(&s[1..]);
            }
            _ => {}
        }
        first = false;
        s = class_item(s, out)?;
    }
}

/// One element of a class: a POSIX, Unicode or Perl class, a character, or a range.
fn class_item<'a>(s: &'a str, out: &mut String) -> Parsed<'a> {
    if let Some(rest) = named_class(s, out)? {
        return Ok(rest);
    }
    if let Some(after) = s.strip_prefix('\\') {
        match next_char(after) {
            Some((p @ ('p' | 'P'), rest)) => return unicode_class(p, rest, out),
            Some((c, rest)) if perl_class(c).is_some() => {
                out.push_str(perl_class(c).unwrap_or_default());
                return Ok(rest);
            }
            _ => {}
        }
    }
    let (lo, mut rest) = class_char(s)?;
    let mut hi = lo;
    if rest.len() >= 2 && rest.starts_with('-') && !rest[1..].starts_with(']') {
        (hi, rest) = class_char(&rest[1..])?;
        if hi < lo {
            return Err(GoRegexError::InvalidCharRange);
        }
    }
    push_literal(out, lo);
    if hi != lo {
        out.push('-');
        push_literal(out, hi);
    }
    Ok(rest)
}

/// `[:alpha:]` and friends; both engines know the same ASCII names. Returns `None` when `s`
/// does not start a `[:...:]` group, in which case the `[` is an ordinary character.
fn named_class<'a>(s: &'a str, out: &mut String) -> Result<Option<&'a str>, GoRegexError> {
    const NAMES: [&str; 14] = [
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
        "space", "upper", "word", "xdigit",
    ];
    let Some(body) = s.strip_prefix("[:") else {
        return Ok(None);
    };
    let Some(end) = body.find(":]") else {
        return Ok(None);
    };
    let name = &body[..end];
    if !NAMES.contains(&name.strip_prefix('^').unwrap_or(name)) {
        return Err(GoRegexError::InvalidCharRange);
    }
    out.push_str(&format!("[:{name}:]"));
    Ok(Some(&body[end + 2..]))
}

/// A single class character, possibly escaped.
fn class_char(s: &str) -> Result<(char, &str), GoRegexError> {
    match s.strip_prefix('\\') {
        Some(after) => char_escape(after),
        None => next_char(s).ok_or(GoRegexError::MissingBracket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(go_re: &str, text: &str) -> bool {
        compile(go_re)
            .unwrap_or_else(|e| panic!("{go_re}: {e}"))
            .is_match(text)
    }

    #[test]
    fn class_brackets_follow_go() {
        // `[a[^/]*]` is Go's class {a,[,^,/}, then `*`, then a literal `]`.
        assert!(is_match("^[a[^/]*]$", "a[]"));
        assert!(is_match("^[a[^/]*]$", "]"));
        assert!(!is_match("^[a[^/]*]$", "b]"));
        assert!(is_match("^[]a]$", "]"));
        assert!(is_match("^[a&&b]$", "&"));
        assert!(is_match("^[[:alpha:]]$", "q"));
    }

    #[test]
    fn escapes_follow_go() {
        assert!(is_match("^a\\<b$", "a<b"));
        assert!(is_match("^\\d$", "7"));
        assert!(!is_match("^\\d$", "٣")); // Arabic-Indic digit: not in Go's ASCII \d
        assert!(is_match("^\\101$", "A"));
        assert!(is_match("^\\x41$", "A"));
        assert!(is_match("^\\Q.*\\E$", ".*"));
        assert!(is_match("^\\pL$", "ζ"));
        // Go's \b is an ASCII word boundary: `é` is not a word character there.
        assert!(is_match("^a\\b$", "a"));
        assert!(!is_match("é\\b", "é"));
    }

    #[test]
    fn go_errors_are_errors() {
        for bad in [
            "^[z-a]$",
            "^\\1$",
            "^\\q$",
            "^[a$",
            "^\\",
            "^[[:nope:]]$",
            "^\\x4$",
        ] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }
}
