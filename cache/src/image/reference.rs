//! Image names as Docker normalizes them (`app:1.0` = `docker.io/library/app:1.0`).
//!
//! Only what the layout and archive formats need: split, normalize, and print in full or in
//! Docker's short ("familiar") form. Registry access has its own reference type.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use super::ImageError;
use crate::Digest;

const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    /// `docker.io`, `ghcr.io`, `localhost:5000`.
    pub domain: String,
    /// `library/app`, `org/app`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageName {
    /// The full name; a name with neither tag nor digest gets `:latest`, as Docker does.
    pub fn full(&self) -> String {
        format!("{}/{}{}", self.domain, self.path, self.suffix())
    }

    /// Docker's short form: `app:1.0`, `org/app:1.0`, `ghcr.io/org/app:1.0`.
    pub fn familiar(&self) -> String {
        format!("{}{}", self.familiar_repository(), self.suffix())
    }

    /// Docker's short form of the repository alone: `app`, `org/app`, `ghcr.io/org/app`.
    pub fn familiar_repository(&self) -> String {
        match (self.domain.as_str(), self.path.strip_prefix("library/")) {
            (DOCKER_HUB, Some(short)) if !short.contains('/') => short.to_string(),
            (DOCKER_HUB, _) => self.path.clone(),
            (domain, _) => format!("{domain}/{}", self.path),
        }
    }

    /// The repository without tag or digest: `docker.io/library/app`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, `latest` when the name has neither tag nor digest.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(tag) = self.tag_or_latest() {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl FromStr for ImageName {
    type Err = ImageError;

    /// distribution/reference's grammar and `ParseNormalizedNamed` defaults.
    fn from_str(s: &str) -> Result<Self, ImageError> {
        let bad = |reason: String| ImageError::BadReference {
            reference: s.to_string(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse().map_err(|e| bad(format!("{e}")))?)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/', so `host:5000/app` has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !TAG.is_match(tag) {
                return Err(bad(format!(
                    "tag {tag:?} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
                )));
            }
        }
        let (domain, path) = split_domain(name);
        check_name(&domain, &path).map_err(bad)?;
        Ok(ImageName {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

static PATH_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("valid"));
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    let label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    Regex::new(&format!(
        r"^(?:{label}(?:\.{label})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
    ))
    .expect("valid")
});
// ASCII word characters, as Go's `\w`: Rust's Unicode `\w` would accept `café` (and take
// milliseconds to compile with the `{0,127}` repetition).
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("valid"));

/// distribution/reference limits the name (domain and path) to 255 characters.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Docker's rule: the first component is a registry only if it has a `.` or a `:`, is
/// `localhost`, or has uppercase letters (which a repository path never has).
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let domain = match domain.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => domain,
    };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (domain, path)
}

fn check_name(domain: &str, path: &str) -> Result<(), String> {
    if path.to_lowercase() != path {
        return Err(format!("repository name ({path}) must be lowercase"));
    }
    if !DOMAIN.is_match(domain) {
        return Err(format!("{domain:?} is not a valid registry host"));
    }
    if !path.split('/').all(|c| PATH_COMPONENT.is_match(c)) {
        return Err(format!(
            "repository {path:?} must be '/'-separated components of lowercase letters and digits, joined by '.', '_', '__' or '-'"
        ));
    }
    if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err("the repository name is longer than 255 characters".to_string());
    }
    Ok(())
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("app", "docker.io/library/app:latest", "app:latest"),
            ("app:1.0", "docker.io/library/app:1.0", "app:1.0"),
            ("org/app:1", "docker.io/org/app:1", "org/app:1"),
            (
                "docker.io/library/app:1.0",
                "docker.io/library/app:1.0",
                "app:1.0",
            ),
            (
                "localhost:5000/app",
                "localhost:5000/app:latest",
                "localhost:5000/app:latest",
            ),
            ("ghcr.io/o/a:v", "ghcr.io/o/a:v", "ghcr.io/o/a:v"),
        ];
        for (input, full, familiar) in cases {
            let n: ImageName = input.parse().unwrap();
            assert_eq!((n.full().as_str(), n.familiar().as_str()), (full, familiar));
        }
        assert!("App:1".parse::<ImageName>().is_err());
        for bad in [
            "a:b:c",
            "app:-x",
            "a//b",
            "",
            "app@sha256:12",
            "up/X",
            "x:café",
        ] {
            assert!(bad.parse::<ImageName>().is_err(), "{bad} should be refused");
        }
        let n: ImageName = "index.docker.io/app".parse().unwrap();
        assert_eq!(n.full(), "docker.io/library/app:latest");
        let n: ImageName = "Host.io/app".parse().unwrap();
        assert_eq!(n.domain, "Host.io");
        let n: ImageName = "127.0.0.1:5000/a/b:v2".parse().unwrap();
        assert_eq!(
            (n.domain.as_str(), n.path.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        let long = format!("{}:1", "a".repeat(300));
        assert!(long.parse::<ImageName>().is_err());
        assert!("app:".parse::<ImageName>().is_err());
        let d = Digest::of(b"x");
        let n: ImageName = format!("app@{d}").parse().unwrap();
        assert_eq!(n.tag_or_latest(), None);
        assert_eq!(n.full(), format!("docker.io/library/app@{d}"));
    }
}
