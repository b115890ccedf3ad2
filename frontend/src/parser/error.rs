//! Errors of the low-level parser, each located at a line (and column where known).

/// What went wrong while reading the Dockerfile text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("dockerfile line greater than max allowed size of {max}")]
    LineTooLong { max: usize },
    #[error("the Dockerfile is not valid UTF-8 (first bad byte at column {column})")]
    InvalidUtf8 { column: usize },
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    #[error("{0} must have two arguments")]
    MissingValue(String),
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("unterminated heredoc {0:?}: no line holds only the terminator")]
    UnterminatedHeredoc(String),
    #[error("invalid heredoc {word:?}: {reason}")]
    InvalidHeredoc { word: String, reason: String },
}

/// A parse error and where it happened (1-based lines; column 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub start_line: usize,
    pub end_line: usize,
    pub column: usize,
}

impl ParseError {
    pub fn at(kind: ParseErrorKind, start_line: usize, end_line: usize) -> Self {
        ParseError {
            kind,
            start_line,
            end_line: end_line.max(start_line),
            column: 0,
        }
    }
}
