//! Image references as Docker reads them (distribution/reference's `ParseNormalizedNamed`):
//! `app` is `docker.io/library/app:latest`, `ghcr.io/o/app:1.0@sha256:…` keeps every part.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
/// distribution/reference limits the name (registry and path) to 255 characters.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalized image reference. Without a digest there is always a tag (`latest` by default).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: {0:?} is not a valid image name")]
    Invalid(String),
    #[error("invalid reference format: tag {0:?} is not valid (letters, digits, `_`, `.`, `-`; at most 128)")]
    BadTag(String),
    #[error("invalid reference format: digest {0:?} is not `sha256:` and 64 hex characters")]
    BadDigest(String),
    #[error("invalid reference format: repository name {0:?} is longer than 255 characters")]
    TooLong(String),
}

static PATH_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").unwrap());
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    let label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    Regex::new(&format!(
        r"^(?:{label}(?:\.{label})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
    ))
    .unwrap()
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w][\w.-]{0,127}$").unwrap());
static DIGEST: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^sha256:[a-f0-9]{64}$").unwrap());

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                if !DIGEST.is_match(digest) {
                    return Err(ReferenceError::BadDigest(digest.to_string()));
                }
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/', so `host:5000/app` has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !TAG.is_match(tag) {
                    return Err(ReferenceError::BadTag(tag.to_string()));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        let (registry, repository) = split_registry(name);
        validate_name(input, &registry, &repository)?;
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// Docker's rule: the first component names a registry only if it has a `.` or a `:`, or is
/// `localhost`, or has uppercase letters (which a repository path never has).
fn split_registry(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
        _ => registry,
    };
    let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (registry, path)
}

fn validate_name(input: &str, registry: &str, repository: &str) -> Result<(), ReferenceError> {
    if repository.to_lowercase() != repository {
        return Err(ReferenceError::Uppercase(repository.to_string()));
    }
    if !DOMAIN.is_match(registry) || !repository.split('/').all(|c| PATH_COMPONENT.is_match(c)) {
        return Err(ReferenceError::Invalid(input.to_string()));
    }
    if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::TooLong(input.to_string()));
    }
    Ok(())
}

impl Reference {
    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker shows: `app:1.0` for `docker.io/library/app:1.0`.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        let short = full
            .strip_prefix("docker.io/library/")
            .or_else(|| full.strip_prefix("docker.io/"))
            .unwrap_or(&full);
        short.to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn normalizes_as_docker_does() {
        assert_eq!(parse("app"), "docker.io/library/app:latest");
        assert_eq!(parse("app:1.0"), "docker.io/library/app:1.0");
        assert_eq!(parse("user/app"), "docker.io/user/app:latest");
        assert_eq!(parse("index.docker.io/app"), "docker.io/library/app:latest");
        assert_eq!(parse("localhost/app"), "localhost/app:latest");
        assert_eq!(
            parse("127.0.0.1:5000/a/b:v2"),
            "127.0.0.1:5000/a/b:v2"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse(&format!("app@{d}")), format!("docker.io/library/app@{d}"));
        assert_eq!(
            parse(&format!("ghcr.io/o/app:1@{d}")),
            format!("ghcr.io/o/app:1@{d}")
        );
    }

    #[test]
    fn familiar_form_drops_the_defaults() {
        let r: Reference = "app:1.0".parse().unwrap();
        assert_eq!(r.familiar(), "app:1.0");
        let r: Reference = "user/app".parse().unwrap();
        assert_eq!(r.familiar(), "user/app:latest");
        let r: Reference = "localhost:5000/app".parse().unwrap();
        assert_eq!(r.familiar(), "localhost:5000/app:latest");
    }

    #[test]
    fn rejects_what_docker_rejects() {
        assert!(matches!("App".parse::<Reference>(), Err(ReferenceError::Uppercase(_))));
        assert!(matches!("a:b:c".parse::<Reference>(), Err(ReferenceError::Invalid(_))));
        assert!(matches!("app:-x".parse::<Reference>(), Err(ReferenceError::BadTag(_))));
        assert!(matches!("app@sha256:12".parse::<Reference>(), Err(ReferenceError::BadDigest(_))));
        assert!(matches!("a//b".parse::<Reference>(), Err(ReferenceError::Invalid(_))));
        assert!(matches!("".parse::<Reference>(), Err(ReferenceError::Invalid(_))));
        let long = format!("{}:1", "a".repeat(300));
        assert!(matches!(long.parse::<Reference>(), Err(ReferenceError::TooLong(_))));
    }
}
