//! Base images for `FROM`: the local store by name, or an OCI layout on disk
//! (`oci-layout://PATH[:TAG|@DIGEST]`). Registries arrive with issue #5.

use std::cell::RefCell;
use std::collections::BTreeMap;

use anyhow::{bail, Context};
use rbuild_cache::image::oci_layout::{parse_layout_ref, OciDir};
use rbuild_cache::image::{
    children, config, media_types, Blob, Descriptor, ImageConfig, ImageName, Index, Manifest,
};
use rbuild_frontend::graph::{BaseImages, ImageConfig as StageConfig};
use rbuild_frontend::platform::Platform;

use crate::state::State;

/// A base image for one platform, its blobs in the content store.
#[derive(Clone)]
pub struct BaseImage {
    pub manifest: Blob<Manifest>,
    pub config: Blob<ImageConfig>,
}

/// Resolves bases while the frontend lowers, remembering each answer (or why there is none)
/// for the build that follows.
pub struct StoreBases<'s> {
    state: &'s State,
    resolved: RefCell<BTreeMap<(String, String), Result<BaseImage, String>>>,
}

impl<'s> StoreBases<'s> {
    pub fn new(state: &'s State) -> Self {
        StoreBases {
            state,
            resolved: RefCell::new(BTreeMap::new()),
        }
    }

    /// The base image `reference` for `platform`, or the reason it is not available.
    pub fn get(&self, reference: &str, platform: &Platform) -> anyhow::Result<BaseImage> {
        let key = (reference.to_string(), platform_string(platform));
        if let Some(found) = self.resolved.borrow().get(&key) {
            return found.clone().map_err(anyhow::Error::msg);
        }
        let found = self
            .resolve(reference, platform)
            .map_err(|e| format!("base image {reference}: {e:#}"));
        self.resolved.borrow_mut().insert(key, found.clone());
        found.map_err(anyhow::Error::msg)
    }

    fn resolve(&self, reference: &str, platform: &Platform) -> anyhow::Result<BaseImage> {
        let top = if reference.starts_with("oci-layout://") {
            self.import_layout(reference)?
        } else {
            let name: ImageName = reference.parse()?;
            let full = name.full();
            let record = match name.digest {
                Some(digest) if self.state.content.contains(&digest) => {
                    let media_type = sniff_media_type(&self.state.content.read(&digest)?)?;
                    rbuild_cache::db::ImageRecord {
                        digest,
                        media_type,
                        size: self.state.content.size(&digest)?,
                        created_at: 0,
                    }
                }
                Some(_) => {
                    bail!("not in the local store (pulling from registries arrives with issue #5)")
                }
                None => self.state.db.image(&full)?.with_context(|| {
                    format!(
                        "{full} is not in the local store (load it with `rbuild load`; pulling \
                         from registries arrives with issue #5)"
                    )
                })?,
            };
            Descriptor::new(record.media_type, record.digest, record.size)
        };
        self.for_platform(&top, platform)
    }

    /// Copies an OCI layout's image into the content store (verified) and returns its root.
    fn import_layout(&self, reference: &str) -> anyhow::Result<Descriptor> {
        let (path, selector) = parse_layout_ref(reference)?;
        let dir = OciDir::open(&path)?;
        let image = dir.layout().select(&selector)?;
        let mut stack = vec![image.descriptor.clone()];
        while let Some(d) = stack.pop() {
            if !self.state.content.contains(&d.digest) {
                let file = std::fs::File::open(dir.blob_path(&d.digest))
                    .with_context(|| format!("{}: blob {} is missing", path.display(), d.digest))?;
                self.state
                    .content
                    .put_verified(&d.digest, Some(d.size), file)?;
            }
            if media_types::is_manifest(&d.media_type) || media_types::is_index(&d.media_type) {
                let bytes = self.state.content.read(&d.digest)?;
                stack.extend(children(&d.media_type, &d.digest, &bytes)?);
            }
        }
        Ok(image.descriptor)
    }

    /// The manifest for `platform`: an index is searched; a lone manifest must match.
    fn for_platform(&self, top: &Descriptor, platform: &Platform) -> anyhow::Result<BaseImage> {
        let content = &self.state.content;
        let manifest_descriptor = if media_types::is_index(&top.media_type) {
            let index: Blob<Index> = Blob::parse(content.read(&top.digest)?)?;
            let wanted = platform_string(platform);
            let available: Vec<String> = index
                .value()
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                .collect();
            index
                .value()
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| p.to_string() == wanted))
                .cloned()
                .with_context(|| {
                    format!(
                        "no image for {wanted}; the index has {}",
                        available.join(", ")
                    )
                })?
        } else {
            top.clone()
        };
        let manifest: Blob<Manifest> = Blob::parse(content.read(&manifest_descriptor.digest)?)?;
        let config: Blob<ImageConfig> =
            Blob::parse(content.read(&manifest.value().config.digest)?)?;
        config::validate(&manifest, &config)?;
        let has = config.value().platform().to_string();
        if !media_types::is_index(&top.media_type) && has != platform_string(platform) {
            bail!(
                "the image is for {has}, the build for {}",
                platform_string(platform)
            );
        }
        Ok(BaseImage { manifest, config })
    }
}

impl BaseImages for StoreBases<'_> {
    fn config(&self, reference: &str, platform: &Platform) -> Option<StageConfig> {
        let base = self.get(reference, platform).ok()?;
        let container = base.config.value().config.clone()?;
        let value = serde_json::to_value(container).ok()?;
        let mut config: StageConfig = serde_json::from_value(value).ok()?;
        config.author = base.config.value().author.clone().unwrap_or_default();
        Some(config)
    }
}

/// `os/arch[/variant]`, the form index platforms print as.
pub fn platform_string(p: &Platform) -> String {
    if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    }
}

/// A blob named only by digest: an index has `manifests`, a manifest has `config`.
fn sniff_media_type(bytes: &[u8]) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    if let Some(mt) = value.get("mediaType").and_then(|m| m.as_str()) {
        return Ok(mt.to_string());
    }
    Ok(if value.get("manifests").is_some() {
        media_types::OCI_INDEX
    } else {
        media_types::OCI_MANIFEST
    }
    .to_string())
}
