//! What went wrong talking to a registry, said with the registry, the repository, the operation
//! and the HTTP status, and sorted into failures a retry may cure and failures it cannot.

use std::path::PathBuf;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use rbuild_cache::db::DbError;
use rbuild_cache::digest::Digest;
use rbuild_cache::store::StoreError;

use super::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `target` is `registry/repository[:tag]`, `op` what rbuild was doing (`push blob sha256:…`).
    #[error("{target}: {op}: {failure}{}", hint(.failure, .target, .op))]
    Failed {
        target: String,
        op: String,
        failure: Failure,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// The HTTP client could not be made (runtime, TLS setup).
    #[error("registry client: {0}")]
    Setup(String),
    #[error("--registry-ca {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    /// The image to push lacks content in the store.
    #[error(
        "{image} is not complete in the store: {media_type} {digest} is missing (an index \
         pulled for one platform cannot be pushed whole)"
    )]
    Incomplete {
        image: String,
        media_type: String,
        digest: Digest,
    },
    /// A stored manifest or index rbuild cannot read.
    #[error("{image}: manifest {digest}: {message}")]
    BadManifest {
        image: String,
        digest: Digest,
        message: String,
    },
}

impl RegistryError {
    /// The `registry/repository[:tag]` a failed request was about, which its message starts with.
    pub fn target(&self) -> Option<&str> {
        match self {
            RegistryError::Failed { target, .. } => Some(target),
            _ => None,
        }
    }

    /// True when the registry was unreachable or failing (connection errors, 5xx, 429) even
    /// after retries: what a build may ride out with an image pulled before.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Failed { failure, .. } => {
                matches!(failure, Failure::Transport(_)) || failure.retryable()
            }
            _ => false,
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The registry answered with this HTTP status (and maybe a message).
    Status(u16, String),
    /// No usable answer: refused or dropped connection, timeout, TLS failure.
    Transport(String),
    /// Content arrived but does not hash to its digest (or has the wrong size).
    Corrupt(String),
    /// Anything a retry cannot change: a malformed manifest, an unsupported feature.
    Invalid(String),
    /// HTTP 429 from a request rbuild made itself, which sees the answer's `Retry-After`.
    RateLimited {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
}

impl Failure {
    /// Connection trouble, server errors, rate limits and corrupted transfers may pass.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Status(status, _) => *status >= 500 || *status == 429 || *status == 408,
            // A name that does not resolve, or a certificate nobody vouches for, stays so for
            // longer than retries last.
            Failure::Transport(cause) => {
                !cause.contains("dns error") && !cause.contains("certificate")
            }
            Failure::Corrupt(_) => true,
            Failure::Invalid(_) => false,
            Failure::RateLimited { .. } => true,
        }
    }

    pub fn is_rate_limit(&self) -> bool {
        matches!(self, Failure::Status(429, _) | Failure::RateLimited { .. })
    }

    /// How long the registry asked to wait (a 429's `Retry-After`), when it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Failure::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status(status, _) => Some(*status),
            Failure::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(status, message) => {
                let reason = http::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "HTTP {status} {reason}")?;
                let message = message.trim();
                if !message.is_empty() {
                    write!(f, ": {}", one_line(message))?;
                }
                Ok(())
            }
            Failure::Transport(cause) => write!(f, "{cause}"),
            Failure::Corrupt(cause) => write!(f, "{cause}; the content was not stored"),
            Failure::Invalid(cause) => write!(f, "{cause}"),
            Failure::RateLimited {
                message,
                retry_after,
            } => {
                write!(f, "HTTP 429 Too Many Requests")?;
                if let Some(after) = retry_after {
                    write!(f, " (Retry-After: {}s)", after.as_secs())?;
                }
                let message = message.trim();
                if !message.is_empty() {
                    write!(f, ": {}", one_line(message))?;
                }
                Ok(())
            }
        }
    }
}

/// What to do about a refusal, for the statuses users meet most.
fn hint(failure: &Failure, target: &str, op: &str) -> String {
    let registry = target.split('/').next().unwrap_or(target);
    match failure.status() {
        Some(401) if op == super::client::LOGIN_OP => {
            " (the registry refused this username and password)".to_string()
        }
        Some(401) => {
            format!(" (wrong or missing credentials; log in with `rbuild login {registry}`)")
        }
        Some(403) => " (the credentials lack permission for this repository)".to_string(),
        None if matches!(failure, Failure::Transport(c) if c.contains("invalid peer certificate")) =>
        {
            format!(
                " (trust the registry's CA with --registry-ca FILE, or skip the check with \
                 --insecure-registry {registry})"
            )
        }
        _ => String::new(),
    }
}

/// Registries send JSON error envelopes and HTML pages; keep error lines short.
fn one_line(message: &str) -> String {
    let line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

impl From<OciDistributionError> for Failure {
    fn from(e: OciDistributionError) -> Failure {
        use OciDistributionError as E;
        match e {
            E::ServerError { code, message, .. } => Failure::Status(code, message),
            E::UnauthorizedError { .. } => Failure::Status(401, String::new()),
            E::AuthenticationFailure(reason) => Failure::Status(401, reason),
            E::RegistryError { envelope, .. } => {
                let status = envelope
                    .errors
                    .first()
                    .map_or(400, |first| status_of(&first.code));
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                Failure::Status(status, message)
            }
            E::ImageManifestNotFoundError(message) => Failure::Status(404, message),
            E::RequestError(e) => match e.status() {
                Some(status) => Failure::Status(status.as_u16(), String::new()),
                None => Failure::Transport(transport_cause(&e)),
            },
            E::IoError(e) => Failure::Transport(e.to_string()),
            E::DigestError(e) => Failure::Corrupt(e.to_string()),
            other => Failure::Invalid(other.to_string()),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::DigestMismatch { .. }
            | StoreError::SizeMismatch { .. }
            | StoreError::TooLong { .. } => Failure::Corrupt(e.to_string()),
            other => Failure::Invalid(other.to_string()),
        }
    }
}

/// reqwest's Display stops at "error sending request"; the useful part is in the sources.
pub(super) fn transport_cause(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The HTTP status the distribution spec pairs with each error code.
fn status_of(code: &OciErrorCode) -> u16 {
    match code {
        OciErrorCode::Unauthorized => 401,
        OciErrorCode::Denied => 403,
        OciErrorCode::BlobUnknown
        | OciErrorCode::ManifestUnknown
        | OciErrorCode::NameUnknown
        | OciErrorCode::NotFound => 404,
        OciErrorCode::Toomanyrequests => 429,
        OciErrorCode::Unsupported => 405,
        _ => 400,
    }
}
