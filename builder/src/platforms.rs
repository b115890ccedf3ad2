//! Choosing one image of an index for a build platform, as containerd's platform matcher does:
//! architecture aliases and default variants are normalised before comparing, so an index entry
//! `linux/arm64` serves `--platform linux/arm64/v8` and `linux/arm` serves `linux/arm/v7`.

use anyhow::Context;
use rbuild_cache::image::{Descriptor, Index, Platform as ImagePlatform};
use rbuild_frontend::platform::Platform;

/// `os/arch[/variant]`, the form index platforms print as.
pub fn platform_string(p: &Platform) -> String {
    if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    }
}

/// `(os, architecture, variant)` with aliases resolved and default variants filled in.
fn normalize(os: &str, architecture: &str, variant: &str) -> (String, String, String) {
    let (architecture, variant) = match (architecture, variant) {
        ("x86_64" | "x86-64" | "amd64", "" | "v1") => ("amd64", ""),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("i386" | "386", _) => ("386", ""),
        ("aarch64" | "arm64", "" | "8" | "v8") => ("arm64", "v8"),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "" | "7") => ("arm", "v7"),
        ("arm", "5") => ("arm", "v5"),
        ("arm", "6") => ("arm", "v6"),
        ("arm", "8") => ("arm", "v8"),
        (a, v) => (a, v),
    };
    (
        os.to_lowercase(),
        architecture.to_string(),
        variant.to_string(),
    )
}

/// Whether an image built for `have` runs as `want`.
pub fn matches(want: &Platform, have: &ImagePlatform) -> bool {
    normalize(&want.os, &want.architecture, &want.variant)
        == normalize(
            &have.os,
            &have.architecture,
            have.variant.as_deref().unwrap_or(""),
        )
}

/// The index entry for `want`; the error lists the platforms the index has.
pub fn select(index: &Index, want: &Platform) -> anyhow::Result<Descriptor> {
    index
        .manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| matches(want, p)))
        .cloned()
        .with_context(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                .collect();
            format!(
                "no image for {}; the index has {}",
                platform_string(want),
                if available.is_empty() {
                    "no platforms".to_string()
                } else {
                    available.join(", ")
                }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn have(arch: &str, variant: Option<&str>) -> ImagePlatform {
        serde_json::from_value(serde_json::json!({
            "os": "linux", "architecture": arch, "variant": variant,
        }))
        .unwrap()
    }

    #[test]
    fn default_variants_and_aliases_match() {
        assert!(matches(&want("linux/arm64"), &have("arm64", Some("v8"))));
        assert!(matches(&want("linux/arm64/v8"), &have("arm64", None)));
        assert!(matches(&want("linux/arm/v7"), &have("arm", None)));
        assert!(matches(&want("linux/arm"), &have("arm", Some("v7"))));
        assert!(matches(&want("linux/amd64"), &have("amd64", None)));
    }

    #[test]
    fn different_platforms_do_not_match() {
        assert!(!matches(&want("linux/arm/v6"), &have("arm", Some("v7"))));
        assert!(!matches(&want("linux/arm64"), &have("amd64", None)));
        assert!(!matches(&want("linux/amd64"), &have("arm64", None)));
    }
}
