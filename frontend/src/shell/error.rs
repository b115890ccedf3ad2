//! The one error type of the shell lexer.
//!
//! Messages follow BuildKit's word for word, because users compare our build errors with
//! `docker build`'s, and lint or lowering code may match on them.

use super::unicode::is_go_print;

/// Everything that can go wrong while expanding a word.
///
/// The public entry points return [`ShellError::Process`], wrapping the cause the way BuildKit's
/// `errors.Wrapf(err, "failed to process %q", source)` does; [`ShellError::cause`] gives the
/// innermost error when the wrapper is not wanted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ShellError {
    /// `${` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${{…`, `${:…`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${v/pattern` with no second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// An operator BuildKit does not implement, such as `${v:=w}` or `${v:#p}`; holds the
    /// operator text as written (`:=`), with U+FFFD standing for end of input as in Go.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// A nested word that ran out before its stop character.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    /// `'…` without the closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"…` without the closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// `${v?msg}` or `${v:?msg}` fired; `message` is the user's text or BuildKit's default.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// A `\` in a glob pattern before something other than `*`, `?` or `\`.
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
    /// The glob converted to a regex the regex engine refused (should not happen, since every
    /// meta character is escaped, but size limits exist).
    #[error("{0}")]
    Regex(String),
    /// `${…}` nested deeper than the lexer allows (an rbuild limit; BuildKit has none).
    #[error("substitutions nested more than {0} deep")]
    TooDeep(usize),
    /// A pattern operator whose glob could not be converted.
    #[error("invalid pattern ({pattern}) in substitution: {cause}")]
    InvalidPattern {
        pattern: String,
        cause: Box<ShellError>,
    },
    /// The wrapper every public entry point puts around the cause, naming the input.
    #[error("failed to process {}: {cause}", go_quote(.input))]
    Process {
        input: String,
        cause: Box<ShellError>,
    },
}

impl ShellError {
    /// The innermost error, without the `failed to process` and `invalid pattern` wrappers.
    pub fn cause(&self) -> &ShellError {
        match self {
            ShellError::Process { cause, .. } | ShellError::InvalidPattern { cause, .. } => {
                cause.cause()
            }
            other => other,
        }
    }
}

/// Quotes `s` as Go's `strconv.Quote` does, so wrapped messages read like BuildKit's.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            _ if is_go_print(ch) => out.push(ch),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            _ if ch < ' ' || ch == '\u{7f}' => out.push_str(&format!("\\x{:02x}", ch as u32)),
            _ if (ch as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", ch as u32)),
            _ => out.push_str(&format!("\\U{:08x}", ch as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\u{1}\u{7f}"), r#""\t\x01\x7f""#);
        assert_eq!(go_quote("♥ 한\u{a0}"), "\"♥ 한\\u00a0\"");
    }

    #[test]
    fn wrapped_messages_read_like_buildkit() {
        let err = ShellError::Process {
            input: "he${}".into(),
            cause: Box::new(ShellError::BadSubstitution),
        };
        assert_eq!(
            err.to_string(),
            "failed to process \"he${}\": syntax error: bad substitution"
        );
        assert_eq!(err.cause(), &ShellError::BadSubstitution);
        assert_eq!(
            ShellError::MissingSlash.to_string(),
            "syntax error: missing '/' in ${}"
        );
        assert_eq!(
            ShellError::InvalidEscape('x').to_string(),
            "invalid escape '\\x'"
        );
    }
}
