//! Platforms (`linux/amd64`, `linux/arm/v7`…) normalized as containerd's `platforms` package
//! does, and the predefined BUILD*/TARGET* ARGs they give.

use std::fmt;

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    Format(String),
    #[error("unknown operating system or architecture {part:?} in platform {spec:?}")]
    Unknown { spec: String, part: String },
}

const KNOWN_OS: [&str; 8] = [
    "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
];

impl Platform {
    /// The platform this process runs on, as a build platform.
    pub fn host() -> Self {
        let arch = normalize_arch(std::env::consts::ARCH, "");
        Platform {
            os: "linux".into(),
            architecture: arch.0,
            variant: arch.1,
        }
    }

    /// Parses `os/arch[/variant]`, `arch` alone (Linux assumed) or `local` (the host).
    pub fn parse(spec: &str) -> Result<Self, PlatformError> {
        let lower = spec.trim().to_ascii_lowercase();
        if lower == "local" {
            return Ok(Self::host());
        }
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(PlatformError::Format(spec.to_string()));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] if KNOWN_OS.contains(one) => (*one, std::env::consts::ARCH, ""),
            [one] => ("linux", *one, ""),
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => return Err(PlatformError::Format(spec.to_string())),
        };
        if !KNOWN_OS.contains(&os) {
            return Err(PlatformError::Unknown {
                spec: spec.into(),
                part: os.into(),
            });
        }
        let (architecture, variant) = normalize_arch(arch, variant);
        if !KNOWN_ARCH.contains(&architecture.as_str()) {
            return Err(PlatformError::Unknown {
                spec: spec.into(),
                part: arch.into(),
            });
        }
        Ok(Platform {
            os: os.into(),
            architecture,
            variant,
        })
    }

    /// The predefined ARGs for this platform with the given prefix (`TARGET` or `BUILD`).
    pub fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.architecture.clone()),
            (format!("{prefix}VARIANT"), self.variant.clone()),
        ]
    }
}

const KNOWN_ARCH: [&str; 12] = [
    "amd64", "386", "arm", "arm64", "riscv64", "ppc64le", "s390x", "mips64le", "mips64", "loong64",
    "ppc64", "wasm",
];

/// containerd's normalization: `x86_64`→`amd64`, `aarch64`→`arm64` (variant v8 dropped),
/// `arm` defaults to v7, `armhf`→arm/v7, `armel`→arm/v6, `i386`→`386`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match (arch, variant) {
        ("i386" | "x86", _) => ("386", ""),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("aarch64" | "arm64", "8" | "v8") => ("arm64", ""),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "") => ("arm", "v7"),
        ("arm", "5" | "6" | "7" | "8") => return ("arm".into(), format!("v{variant}")),
        (a, v) => (a, v),
    };
    (a.to_string(), v.to_string())
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/aarch64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("LINUX/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("plan9/amd64").is_err());
        assert!(Platform::parse("linux/amd64/v3/x").is_err());
    }

    #[test]
    fn predefined_args() {
        let p = Platform::parse("linux/arm/v6").unwrap();
        let args = p.args("TARGET");
        assert!(args.contains(&("TARGETVARIANT".into(), "v6".into())));
        assert!(args.contains(&("TARGETPLATFORM".into(), "linux/arm/v6".into())));
    }
}
