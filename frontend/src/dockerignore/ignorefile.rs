//! Reading `.dockerignore` files (moby/patternmatcher/ignorefile `ReadAll`) and BuildKit's
//! rule for which file applies.
//!
//! The frontend never touches the filesystem: the builder reads the first existing
//! candidate from [`ignore_file_candidates`] and hands us the bytes.

use thiserror::Error;

use super::clean::clean;

/// Go's `bufio.Scanner` cannot hold a line this long; upstream then fails the whole read.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why an ignore file could not be read. The message follows upstream's wording.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IgnoreFileError {
    #[error("error reading .dockerignore: bufio.Scanner: token too long (line {line})")]
    LineTooLong { line: usize },
}

/// One pattern from an ignore file and the 1-based line it came from (counting comment
/// and blank lines), so errors can point at the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreRule {
    pub pattern: String,
    pub line: usize,
}

/// Parses an ignore file with upstream's `ReadAll` rules: strip a UTF-8 BOM, skip lines
/// starting with `#` (before trimming, so ` #x` is a pattern), trim, skip blanks, then
/// normalise the path part (clean, strip one leading `/`) and re-attach `!`. A lone `!` is
/// kept; the matcher rejects it. Invalid UTF-8 is replaced with U+FFFD, since paths are
/// matched as strings.
pub fn read_ignore_file(bytes: &[u8]) -> Result<Vec<IgnoreRule>, IgnoreFileError> {
    let mut rules = Vec::new();
    for (i, raw) in split_lines(bytes).enumerate() {
        let line = i + 1;
        // Go's scanner buffers the line with its `\r` and `\n` (and, on line 1, the BOM).
        if raw.len() >= MAX_LINE_BYTES {
            return Err(IgnoreFileError::LineTooLong { line });
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = match line {
            1 => raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw),
            _ => raw,
        };
        let text = String::from_utf8_lossy(raw);
        if text.starts_with('#') {
            continue;
        }
        if let Some(pattern) = normalise(text.trim()) {
            rules.push(IgnoreRule { pattern, line });
        }
    }
    Ok(rules)
}

/// `bufio.ScanLines` without the `\r` handling: split on `\n`, no empty final line.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let lines = (!bytes.is_empty()).then(|| body.split(|&b| b == b'\n'));
    lines.into_iter().flatten()
}

/// One trimmed, non-empty line to its pattern form, or `None` to skip it.
fn normalise(trimmed: &str) -> Option<String> {
    if trimmed.is_empty() {
        return None;
    }
    let (bang, path) = match trimmed.strip_prefix('!') {
        Some(rest) => ("!", rest.trim()),
        None => ("", trimmed),
    };
    if path.is_empty() {
        return Some(bang.to_string());
    }
    let cleaned = clean(path);
    let relative = match cleaned.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => &cleaned,
    };
    Some(format!("{bang}{relative}"))
}

/// The ignore files BuildKit consults for a Dockerfile, in priority order:
/// `<dockerfile>.dockerignore` (next to the Dockerfile, in the Dockerfile's context) wins
/// whenever it exists, even empty; otherwise `.dockerignore` at the root of the build
/// context. An empty Dockerfile path means BuildKit's default, `Dockerfile`.
pub fn ignore_file_candidates(dockerfile_path: &str) -> Vec<String> {
    let dockerfile = if dockerfile_path.is_empty() {
        "Dockerfile"
    } else {
        dockerfile_path
    };
    vec![
        format!("{dockerfile}.dockerignore"),
        ".dockerignore".to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(text: &str) -> Vec<(String, usize)> {
        let rules = read_ignore_file(text.as_bytes()).expect("readable");
        rules.into_iter().map(|r| (r.pattern, r.line)).collect()
    }

    #[test]
    fn lines_are_numbered_physically() {
        let got = patterns("# c\n\na\r\n  !  /b/../c/ \n #x\n");
        let want = [("a", 3), ("!c", 4), ("#x", 5)];
        let want: Vec<_> = want.iter().map(|(p, l)| (p.to_string(), *l)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bom_only_at_start_and_root_slash_kept() {
        assert_eq!(patterns("\u{FEFF}#c\n/\n"), vec![("/".to_string(), 2)]);
        assert_eq!(patterns(""), vec![]);
        assert_eq!(patterns("\n"), vec![]);
    }

    #[test]
    fn overlong_line_is_an_error() {
        let long = "a".repeat(MAX_LINE_BYTES);
        let err = read_ignore_file(format!("x\n{long}\n").as_bytes());
        assert_eq!(err, Err(IgnoreFileError::LineTooLong { line: 2 }));
        let fits = "a".repeat(MAX_LINE_BYTES - 1);
        assert!(read_ignore_file(fits.as_bytes()).is_ok());
    }

    #[test]
    fn candidates_follow_buildkit() {
        assert_eq!(
            ignore_file_candidates("Dockerfile"),
            ["Dockerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(
            ignore_file_candidates("app.Dockerfile"),
            ["app.Dockerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(ignore_file_candidates("")[0], "Dockerfile.dockerignore");
    }
}
