//! The shared build cache (`--cache-from`, `--cache-to`): build farms without a shared disk
//! share step results through a registry or a directory, in the format of
//! [`rbuild_cache::cache_graph`].
//!
//! Import is lazy: a build reads each source's manifest and cache graph, and a layer's blob is
//! fetched only when a step needs its files or the result carries it
//! ([`ImportedCache::fetch`]). Export writes the records of this build's steps (those of the
//! final image, or of every stage with `mode=max`) with their layers compressed as the
//! exporter asks, the same blobs an image push sends.

mod export;
mod import;
mod local_layout;

use std::path::PathBuf;

use anyhow::bail;
use rbuild_cache::image::ImageName;
use rbuild_cache::layer::Compression;

pub use export::{export, final_chain, inline_graph, ExportInputs, StepRecord};
pub use import::{ImportedCache, UnusableLayer};

/// Where a `--cache-from` reads.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheSource {
    /// A cache manifest, or an image with an inline cache, at a registry reference.
    Registry(ImageName),
    /// An OCI layout directory, at the manifest its index names `tag`.
    Local { dir: PathBuf, tag: String },
}

/// Where a `--cache-to` writes.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheTarget {
    Registry(ImageName),
    Local {
        dir: PathBuf,
        tag: String,
    },
    /// Into the image config (the final image's steps only).
    Inline,
}

/// Which steps an export carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExportMode {
    /// The steps whose layers make the final image.
    Min,
    /// Every step of every stage the build ran.
    Max,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CacheExport {
    pub target: CacheTarget,
    pub mode: ExportMode,
    pub compression: Compression,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
    /// `cache-mounts=true`: the contents of the build's `RUN --mount=type=cache` go too.
    pub cache_mounts: bool,
}

/// The tag an OCI layout cache goes under when `tag=` is not given (BuildKit's too).
const DEFAULT_LOCAL_TAG: &str = "latest";

/// Parses a `--cache-from` value: `type=registry,ref=REF`, `type=local,src=DIR[,tag=T]`, or a
/// bare reference (BuildKit's shorthand for type=registry).
pub fn parse_source(spec: &str) -> anyhow::Result<CacheSource> {
    let fail = |why: String| anyhow::anyhow!("--cache-from {spec}: {why}");
    if !spec.contains('=') {
        return Ok(CacheSource::Registry(reference(spec).map_err(fail)?));
    }
    let mut attrs = crate::output::attributes(spec).map_err(fail)?;
    let kind = attrs.remove("type").unwrap_or_else(|| "registry".into());
    let source = match kind.as_str() {
        "registry" => CacheSource::Registry(
            reference(&required(&mut attrs, "ref").map_err(fail)?).map_err(fail)?,
        ),
        "local" => CacheSource::Local {
            dir: PathBuf::from(required(&mut attrs, "src").map_err(fail)?),
            tag: attrs
                .remove("tag")
                .unwrap_or_else(|| DEFAULT_LOCAL_TAG.into()),
        },
        "inline" => bail!(
            "--cache-from {spec}: an inline cache is read from its image: \
             type=registry,ref=IMAGE"
        ),
        other => {
            return Err(fail(format!(
                "unknown cache type {other:?} (expected registry or local)"
            )))
        }
    };
    no_more(&attrs, &kind).map_err(fail)?;
    Ok(source)
}

/// Parses a `--cache-to` value: `type=registry,ref=REF`, `type=local,dest=DIR[,tag=T]` or
/// `type=inline`, with `mode=min|max`, `compression=gzip|zstd|uncompressed`, `ignore-error`.
pub fn parse_export(spec: &str) -> anyhow::Result<CacheExport> {
    let fail = |why: String| anyhow::anyhow!("--cache-to {spec}: {why}");
    let mut attrs = crate::output::attributes(spec).map_err(fail)?;
    let kind = attrs
        .remove("type")
        .ok_or_else(|| fail("missing `type=` (registry, local or inline)".into()))?;
    let target = match kind.as_str() {
        "registry" => CacheTarget::Registry(
            reference(&required(&mut attrs, "ref").map_err(fail)?).map_err(fail)?,
        ),
        "local" => CacheTarget::Local {
            dir: PathBuf::from(required(&mut attrs, "dest").map_err(fail)?),
            tag: attrs
                .remove("tag")
                .unwrap_or_else(|| DEFAULT_LOCAL_TAG.into()),
        },
        "inline" => CacheTarget::Inline,
        other => {
            return Err(fail(format!(
                "unknown cache type {other:?} (expected registry, local or inline)"
            )))
        }
    };
    let mode = match attrs.remove("mode").as_deref() {
        None | Some("min") => ExportMode::Min,
        Some("max") if target == CacheTarget::Inline => {
            return Err(fail(
                "mode=max does not fit in an image config; inline caches are mode=min".into(),
            ))
        }
        Some("max") => ExportMode::Max,
        Some(other) => return Err(fail(format!("mode={other}: expected min or max"))),
    };
    let compression = match attrs.remove("compression") {
        None => Compression::Gzip,
        Some(c) => c.parse::<Compression>().map_err(fail)?,
    };
    let ignore_error = match attrs.remove("ignore-error") {
        None => false,
        Some(v) => crate::output::boolean("ignore-error", &v).map_err(fail)?,
    };
    let cache_mounts = match attrs.remove("cache-mounts") {
        None => false,
        Some(v) => crate::output::boolean("cache-mounts", &v).map_err(fail)?,
    };
    if cache_mounts && target == CacheTarget::Inline {
        return Err(fail(
            "cache mounts do not fit in an image config; export them to a registry or a \
             directory"
                .into(),
        ));
    }
    no_more(&attrs, &kind).map_err(fail)?;
    Ok(CacheExport {
        target,
        mode,
        compression,
        ignore_error,
        cache_mounts,
    })
}

fn reference(text: &str) -> Result<ImageName, String> {
    text.parse::<ImageName>()
        .map_err(|e| format!("ref {text:?}: {e}"))
}

fn required(
    attrs: &mut std::collections::BTreeMap<String, String>,
    key: &str,
) -> Result<String, String> {
    attrs
        .remove(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("missing `{key}=`"))
}

fn no_more(attrs: &std::collections::BTreeMap<String, String>, kind: &str) -> Result<(), String> {
    match attrs.keys().next() {
        Some(key) => Err(format!(
            "attribute {key:?} is not supported for type={kind}"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_targets_read_as_buildx_writes_them() {
        let source = parse_source("type=registry,ref=127.0.0.1:5000/app:cache").unwrap();
        assert_eq!(
            source,
            CacheSource::Registry("127.0.0.1:5000/app:cache".parse().unwrap())
        );
        assert_eq!(parse_source("127.0.0.1:5000/app:cache").unwrap(), source);
        assert_eq!(
            parse_source("type=local,src=/tmp/c").unwrap(),
            CacheSource::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        let to = parse_export("type=registry,ref=r.example/a:b,mode=max,compression=zstd").unwrap();
        assert_eq!(to.mode, ExportMode::Max);
        assert_eq!(to.compression, Compression::Zstd);
        assert!(!to.ignore_error);
        let inline = parse_export("type=inline").unwrap();
        assert_eq!(
            (inline.target, inline.mode),
            (CacheTarget::Inline, ExportMode::Min)
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_an_error_naming_it() {
        let err = |spec: &str| format!("{:#}", parse_export(spec).unwrap_err());
        assert!(err("type=local").contains("missing `dest=`"));
        assert!(err("type=registry,ref=a/b,mode=most").contains("mode=most"));
        assert!(err("type=inline,mode=max").contains("mode=min"));
        assert!(err("type=inline,cache-mounts=true").contains("do not fit"));
        assert!(
            parse_export("type=local,dest=d,cache-mounts=true")
                .unwrap()
                .cache_mounts
        );
        assert!(err("type=registry,ref=a/b,colour=blue").contains("\"colour\""));
        assert!(err("type=s3,bucket=x").contains("unknown cache type"));
        let from = format!("{:#}", parse_source("type=local").unwrap_err());
        assert!(from.contains("missing `src=`"), "{from}");
    }
}
