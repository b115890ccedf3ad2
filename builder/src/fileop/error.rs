//! What a COPY, ADD or WORKDIR mkdir can fail with. Each error names the instruction's own
//! path (as written in the Dockerfile, or the destination) and the cause.

use std::io;

use rbuild_cache::layer::safe_path::PathError;

use crate::users::UserError;

#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    /// A named source that does not exist (BuildKit: `"/missing.txt": not found`).
    #[error("{path:?}: not found")]
    NotFound { path: String },
    /// A named source that `.dockerignore` excludes, with the rule that did it.
    #[error("{path:?} is excluded by {file} line {line} ({pattern:?})")]
    Ignored {
        path: String,
        file: String,
        line: usize,
        pattern: String,
    },
    #[error("When using {keyword} with more than one source file, the destination must be a directory and end with a /")]
    NeedsDirectory { keyword: &'static str },
    /// A source or destination path that climbs out of its root or is otherwise unusable.
    #[error("{path:?}: {cause}")]
    BadPath { path: String, cause: String },
    #[error("invalid pattern {pattern:?}: {cause}")]
    BadPattern { pattern: String, cause: String },
    #[error("invalid chmod parameter {0:?}: use octal (0755) or symbolic (u+x) form")]
    BadChmod(String),
    #[error("--chown={spec}: {cause}")]
    Chown { spec: String, cause: UserError },
    #[error("user {spec:?}: {cause}")]
    User { spec: String, cause: UserError },
    #[error("cannot replace directory {0:?} with a file")]
    ReplaceDirWithFile(String),
    #[error("cannot copy to non-directory: {0:?}")]
    NotADirectory(String),
    #[error("{path:?}: {op}: {cause}")]
    Io {
        path: String,
        op: &'static str,
        cause: io::Error,
    },
    #[error("destination {path:?}: {cause}")]
    Dest { path: String, cause: PathError },
    #[error("extracting archive {source_path:?}: entry {entry:?}: {cause}")]
    Archive {
        source_path: String,
        entry: String,
        cause: String,
    },
    #[error("downloading {url}: {cause}")]
    Download { url: String, cause: String },
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("invalid checksum {0:?}: expected sha256:<64 hex digits>")]
    BadChecksum(String),
    #[error("{0}")]
    Unsupported(String),
}

impl FileOpError {
    pub(crate) fn io(path: impl AsRef<str>, op: &'static str, cause: impl Into<io::Error>) -> Self {
        FileOpError::Io {
            path: path.as_ref().to_string(),
            op,
            cause: cause.into(),
        }
    }
}
