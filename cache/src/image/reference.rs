//! Image names as Docker normalizes them (`app:1.0` = `docker.io/library/app:1.0`).
//!
//! Only what the layout and archive formats need: split, normalize, and print in full or in
//! Docker's short ("familiar") form. Registry access has its own reference type.

use std::fmt;
use std::str::FromStr;

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

    fn from_str(s: &str) -> Result<Self, ImageError> {
        let bad = |reason: &str| ImageError::BadReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse().map_err(|e| bad(&format!("{e}")))?)),
            None => (s, None),
        };
        let (rest, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag.to_string())),
            _ => (rest, None),
        };
        let (domain, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        check_parts(&path, tag.as_deref()).map_err(bad)?;
        Ok(ImageName {
            domain,
            path,
            tag,
            digest,
        })
    }
}

fn check_parts(path: &str, tag: Option<&str>) -> Result<(), &'static str> {
    let path_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if path.is_empty() || path.split('/').any(str::is_empty) || !path.chars().all(path_ok) {
        return Err("repository must be lowercase letters, digits, '.', '_', '-' and '/'");
    }
    let tag_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    match tag {
        Some(t) if t.is_empty() || t.len() > 128 || !t.chars().all(tag_ok) => {
            Err("tag must be 1-128 letters, digits, '.', '_' or '-'")
        }
        _ => Ok(()),
    }
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
        assert!("app:".parse::<ImageName>().is_err());
        let d = Digest::of(b"x");
        let n: ImageName = format!("app@{d}").parse().unwrap();
        assert_eq!(n.tag_or_latest(), None);
        assert_eq!(n.full(), format!("docker.io/library/app@{d}"));
    }
}
