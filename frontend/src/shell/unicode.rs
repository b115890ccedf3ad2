//! Go's `unicode` character classes, which decide where a variable name ends and where word
//! splitting happens.
//!
//! Rust's `char::is_alphabetic` and `char::is_numeric` are wider than Go's `unicode.IsLetter`
//! (category L) and `unicode.IsDigit` (category Nd), and a name like `$x²` must stop where
//! BuildKit stops it. The `regex` crate already carries the Unicode category tables, so the
//! non-ASCII cases ask it instead of shipping tables of our own.

use std::sync::OnceLock;

use regex::Regex;

/// One compiled single-character class, built on first use.
fn class(cell: &'static OnceLock<Option<Regex>>, pattern: &str, ch: char) -> bool {
    let re = cell.get_or_init(|| Regex::new(pattern).ok());
    let mut buf = [0u8; 4];
    re.as_ref()
        .is_some_and(|re| re.is_match(ch.encode_utf8(&mut buf)))
}

/// Go's `unicode.IsLetter`: category L.
pub(crate) fn is_go_letter(ch: char) -> bool {
    static CELL: OnceLock<Option<Regex>> = OnceLock::new();
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    class(&CELL, r"^\p{L}$", ch)
}

/// Go's `unicode.IsDigit`: category Nd (so `²` and `Ⅻ` are not digits).
pub(crate) fn is_go_digit(ch: char) -> bool {
    static CELL: OnceLock<Option<Regex>> = OnceLock::new();
    if ch.is_ascii() {
        return ch.is_ascii_digit();
    }
    class(&CELL, r"^\p{Nd}$", ch)
}

/// Go's `unicode.IsSpace`. Both languages use the Unicode `White_Space` property (which
/// includes U+0085 and U+00A0), so the standard library's test is exact.
pub(crate) fn is_go_space(ch: char) -> bool {
    ch.is_whitespace()
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
pub(crate) fn is_go_print(ch: char) -> bool {
    static CELL: OnceLock<Option<Regex>> = OnceLock::new();
    if ch.is_ascii() {
        return (' '..='~').contains(&ch);
    }
    class(&CELL, r"^[\p{L}\p{M}\p{N}\p{P}\p{S}]$", ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_go() {
        assert!(is_go_letter('한') && is_go_letter('é') && !is_go_letter('_'));
        assert!(
            !is_go_letter('Ⅻ'),
            "Nl is alphabetic in Rust but not a Go letter"
        );
        assert!(is_go_digit('٣') && !is_go_digit('²') && !is_go_digit('a'));
        assert!(is_go_space('\u{85}') && is_go_space('\u{a0}') && !is_go_space('\u{200b}'));
        assert!(is_go_print('♥') && !is_go_print('\u{a0}') && !is_go_print('\u{ad}'));
    }
}
