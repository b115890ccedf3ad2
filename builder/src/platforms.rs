//! Choosing one image of an index for a build platform, as containerd's `platforms.Only` does:
//! architecture aliases and default variants are normalised before comparing, so an index entry
//! `linux/arm64` serves `--platform linux/arm64/v8` and `linux/arm` serves `linux/arm/v7`; when
//! the exact platform is missing, older compatible ones are taken in order (arm/v7 runs v6 and
//! v5 images, arm64 runs arm ones, amd64/v3 runs v2 and v1, amd64 runs 386).

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

/// What `want` runs, best first: itself, then the older variants containerd accepts.
fn compatible(want: &Platform) -> Vec<(String, String, String)> {
    let (os, architecture, variant) = normalize(&want.os, &want.architecture, &want.variant);
    let version = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    let mut list = vec![(architecture.clone(), variant.clone())];
    match architecture.as_str() {
        "amd64" => {
            let from = version(&variant).unwrap_or(1);
            list.extend((2..from).rev().map(|n| ("amd64".into(), format!("v{n}"))));
            if from > 1 {
                list.push(("amd64".into(), String::new()));
            }
            list.push(("386".into(), String::new()));
        }
        "arm" | "arm64" => {
            let from = version(&variant).unwrap_or(7);
            if architecture == "arm64" {
                list.push(("arm".into(), format!("v{from}")));
            }
            list.extend((5..from).rev().map(|n| ("arm".into(), format!("v{n}"))));
        }
        _ => {}
    }
    list.into_iter().map(|(a, v)| (os.clone(), a, v)).collect()
}

fn normalized(p: &ImagePlatform) -> (String, String, String) {
    normalize(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
}

/// The index entry for `want` (or the best compatible one); the error lists the platforms the
/// index has.
pub fn select(index: &Index, want: &Platform) -> anyhow::Result<Descriptor> {
    compatible(want)
        .iter()
        .find_map(|candidate| {
            index.manifests.iter().find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| normalized(p) == *candidate)
            })
        })
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

    fn index(platforms: &[(&str, Option<&str>)]) -> Index {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (arch, variant))| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": rbuild_cache::digest::Digest::of(&[i as u8]).to_string(),
                    "size": 1,
                    "platform": {"os": "linux", "architecture": arch, "variant": variant},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    fn chosen(index: &Index, platform: &str) -> Option<String> {
        select(index, &want(platform))
            .ok()
            .and_then(|d| d.platform)
            .map(|p| p.to_string())
    }

    #[test]
    fn the_exact_platform_wins_then_older_compatible_ones() {
        let all = index(&[("arm", Some("v6")), ("arm", Some("v7")), ("arm64", None)]);
        assert_eq!(
            chosen(&all, "linux/arm/v7").as_deref(),
            Some("linux/arm/v7")
        );
        assert_eq!(chosen(&all, "linux/arm64").as_deref(), Some("linux/arm64"));
        let old = index(&[("arm", Some("v6")), ("386", None)]);
        assert_eq!(
            chosen(&old, "linux/arm/v7").as_deref(),
            Some("linux/arm/v6")
        );
        assert_eq!(chosen(&old, "linux/arm64").as_deref(), Some("linux/arm/v6"));
        assert_eq!(chosen(&old, "linux/amd64").as_deref(), Some("linux/386"));
        assert_eq!(chosen(&old, "linux/arm/v5"), None);
        let err = select(&old, &want("linux/s390x")).unwrap_err().to_string();
        assert!(
            err.contains("no image for linux/s390x")
                && err.contains("linux/arm/v6")
                && err.contains("linux/386"),
            "{err}"
        );
    }

    #[test]
    fn different_platforms_do_not_match() {
        assert!(!matches(&want("linux/arm/v6"), &have("arm", Some("v7"))));
        assert!(!matches(&want("linux/arm64"), &have("amd64", None)));
        assert!(!matches(&want("linux/amd64"), &have("arm64", None)));
    }
}
