//! Go's `filepath.Match` (Unix flavour: `/` separates, `\` escapes).
//!
//! The matcher only uses it to *validate* patterns (`Match(p, ".")`), and the deprecated
//! package-level API is specified in terms of it, so its error behaviour matters as much as
//! its matching: Go reports `ErrBadPattern` even when the name stops matching before the
//! malformed part of the pattern is reached, so a pattern is either always bad or never.
//!
//! Matching is byte-oriented like Go's: a `*` may skip single bytes, so the remaining name
//! can start in the middle of a UTF-8 sequence, where runes decode as U+FFFD.

use thiserror::Error;

/// Go's `filepath.ErrBadPattern`; the message is part of user-visible build errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

const SEPARATOR: u8 = b'/';
const RUNE_ERROR: u32 = 0xFFFD;

/// Reports whether all of `name` matches the shell pattern `pattern`, exactly as Go's
/// `filepath.Match` does on Unix.
pub fn filepath_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` takes the rest of the name unless it crosses a separator.
            return Ok(!name.contains(&SEPARATOR));
        }
        let at_end = pattern.is_empty();
        // Try the chunk at the current position; as the last chunk it must use up the name.
        match match_chunk(chunk, name)? {
            Some(t) if t.is_empty() || !at_end => {
                name = t;
                continue;
            }
            _ => {}
        }
        if star {
            if let Some(t) = match_after_star(chunk, name, at_end)? {
                name = t;
                continue 'chunks;
            }
        }
        return validate_rest(pattern).map(|()| false);
    }
    Ok(name.is_empty())
}

/// A star before `chunk` may swallow bytes of `name` up to the next separator; returns the
/// rest of the name after the first placement of `chunk` that works.
fn match_after_star<'n>(
    chunk: &[u8],
    name: &'n [u8],
    last_chunk: bool,
) -> Result<Option<&'n [u8]>, BadPattern> {
    let mut i = 0;
    while i < name.len() && name[i] != SEPARATOR {
        if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
            if !last_chunk || t.is_empty() {
                return Ok(Some(t));
            }
        }
        i += 1;
    }
    Ok(None)
}

/// Before saying "no match", Go checks that the unread part of the pattern is well formed.
fn validate_rest(mut pattern: &[u8]) -> Result<(), BadPattern> {
    while !pattern.is_empty() {
        let (_, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        match_chunk(chunk, b"")?;
    }
    Ok(())
}

/// Splits off the next chunk: leading stars, then everything up to the next `*` that is not
/// inside a `[...]` class (escapes skip a byte so `\*` stays in the chunk).
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = pattern.iter().take_while(|&&b| b == b'*').count();
    let pattern = &pattern[stars..];
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &pattern[..i], &pattern[i..])
}

/// Matches a star-free chunk against the start of `s`, returning what is left of `s`.
/// After a mismatch it keeps parsing the chunk (without reading `s`) so syntax errors
/// anywhere in the chunk are still reported.
fn match_chunk<'s>(mut chunk: &[u8], mut s: &'s [u8]) -> Result<Option<&'s [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        failed |= s.is_empty();
        match c {
            b'[' => {
                let r = if failed {
                    0
                } else {
                    let (r, n) = decode_rune(s);
                    s = &s[n..];
                    r
                };
                let (matched, rest) = match_class(&chunk[1..], r)?;
                chunk = rest;
                failed |= !matched;
            }
            b'?' => {
                if !failed {
                    failed = s[0] == SEPARATOR;
                    s = &s[decode_rune(s).1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    failed = chunk[0] != s[0];
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Parses a class body (after `[`) and reports whether rune `r` is in it, plus the chunk
/// after the closing `]`. Go requires at least one range, so `[]` and `[^]` never close early.
fn match_class(mut chunk: &[u8], r: u32) -> Result<(bool, &[u8]), BadPattern> {
    let negated = chunk.first() == Some(&b'^');
    if negated {
        chunk = &chunk[1..];
    }
    let mut matched = false;
    let mut nrange = 0;
    loop {
        if chunk.first() == Some(&b']') && nrange > 0 {
            return Ok((matched != negated, &chunk[1..]));
        }
        let (lo, rest) = get_esc(chunk)?;
        chunk = rest;
        let mut hi = lo;
        if chunk[0] == b'-' {
            (hi, chunk) = get_esc(&chunk[1..])?;
        }
        matched |= lo <= r && r <= hi;
        nrange += 1;
    }
}

/// Reads one possibly escaped class character. The remainder is never empty on success,
/// because a class must still be closed by `]`.
fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        _ => {}
    }
    let (r, n) = decode_rune(chunk);
    let rest = &chunk[n..];
    if (r == RUNE_ERROR && n == 1) || rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

/// Go's `utf8.DecodeRune`: the first scalar value and its width, or (U+FFFD, 1) for an
/// invalid or truncated sequence. Empty input gives (U+FFFD, 0).
pub(crate) fn decode_rune(s: &[u8]) -> (u32, usize) {
    let Some(&b0) = s.first() else {
        return (RUNE_ERROR, 0);
    };
    let width = match b0 {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match s.get(..width).map(std::str::from_utf8) {
        Some(Ok(text)) => text
            .chars()
            .next()
            .map_or((RUNE_ERROR, 1), |c| (c as u32, width)),
        _ => (RUNE_ERROR, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pattern_reported_after_early_mismatch() {
        // The name fails at the first byte, but the class later on is still malformed.
        assert_eq!(filepath_match("x[", "a"), Err(BadPattern));
        assert_eq!(filepath_match("x*[", "a"), Err(BadPattern));
        assert_eq!(filepath_match("a*[", "ab"), Err(BadPattern));
    }

    #[test]
    fn star_may_split_a_multibyte_rune() {
        // `*` skips bytes, so `?` sees U+FFFD-decoded bytes and still counts one "rune".
        assert_eq!(filepath_match("*b", "☺b"), Ok(true));
        assert_eq!(filepath_match("a*", "a☺/"), Ok(false));
    }

    #[test]
    fn reversed_range_is_valid_but_empty() {
        assert_eq!(filepath_match("[z-a]", "m"), Ok(false));
    }

    #[test]
    fn decode_rune_matches_go() {
        assert_eq!(decode_rune(b""), (RUNE_ERROR, 0));
        assert_eq!(decode_rune(b"a"), ('a' as u32, 1));
        assert_eq!(decode_rune("ζx".as_bytes()), ('ζ' as u32, 2));
        assert_eq!(decode_rune(&"ζ".as_bytes()[1..]), (RUNE_ERROR, 1));
        assert_eq!(decode_rune(&"☺".as_bytes()[..2]), (RUNE_ERROR, 1));
    }
}
