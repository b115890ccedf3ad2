//! Base images for `FROM`: an image built or loaded into the local store, an OCI layout on
//! disk (`oci-layout://PATH[:TAG|@DIGEST]`), or a registry. A name that came from a registry
//! is re-resolved there by every build (one HEAD request); its blobs are fetched only once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context};
use rbuild_cache::image::oci_layout::{parse_layout_ref, OciDir};
use rbuild_cache::image::{
    children, config, media_types, Blob, Descriptor, ImageConfig, ImageName, Index, Manifest,
};
use rbuild_frontend::graph::{BaseImages, ImageConfig as StageConfig};
use rbuild_frontend::platform::Platform;

use crate::platforms::{platform_string, select};
use crate::registry::{Registry, RegistryOptions};
use crate::solve::progress;
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
    resolved: Memo<(String, String), Result<BaseImage, String>>,
    /// What each tag resolved to in this build: asked once, whatever the platforms.
    tags: Memo<String, rbuild_cache::Digest>,
    options: RegistryOptions,
    /// `--pull`: ask the registry even for names the store has, and never fall back to them.
    pull: bool,
    /// Started on first use: builds from local images never touch the network.
    registry: OnceLock<Registry>,
}

impl<'s> StoreBases<'s> {
    pub fn new(state: &'s State, options: RegistryOptions, pull: bool) -> Self {
        StoreBases {
            state,
            resolved: Memo::default(),
            tags: Memo::default(),
            options,
            pull,
            registry: OnceLock::new(),
        }
    }

    /// The registry client, for pushing the result too.
    pub fn registry(&self) -> anyhow::Result<&Registry> {
        if let Some(registry) = self.registry.get() {
            return Ok(registry);
        }
        let registry = Registry::new(self.options.clone())?;
        Ok(self.registry.get_or_init(|| registry))
    }

    /// The base image `reference` for `platform`, or the reason it is not available.
    pub fn get(&self, reference: &str, platform: &Platform) -> anyhow::Result<BaseImage> {
        let key = (reference.to_string(), platform_string(platform));
        // Two stages on one base pull it once; stages on other bases pull theirs meanwhile.
        let found = self.resolved.get_or_try(key, || {
            Ok::<_, std::convert::Infallible>(self.resolve(reference, platform).map_err(|e| {
                // A registry error about the name as written names it already.
                let target = e
                    .downcast_ref::<crate::registry::RegistryError>()
                    .and_then(|e| e.target());
                match target == Some(reference) {
                    true => format!("base image {e:#}"),
                    false => format!("base image {reference}: {e:#}"),
                }
            }))
        });
        let Ok(found) = found;
        found.map_err(anyhow::Error::msg)
    }

    fn resolve(&self, reference: &str, platform: &Platform) -> anyhow::Result<BaseImage> {
        let top = if reference.starts_with("oci-layout://") {
            self.import_layout(reference)?
        } else {
            let name: ImageName = reference.parse()?;
            if let Some(record) = self.local(&name)? {
                let top = Descriptor::new(record.media_type, record.digest, record.size);
                match self.for_platform(&top, platform) {
                    Ok(base) => return Ok(base),
                    // A digest the store holds only in part (another platform was pulled, or
                    // a pull was cut short) is completed from its registry.
                    Err(_) if name.digest.is_some() => {}
                    Err(e) => return Err(e),
                }
            }
            self.pull(&name, platform)?
        };
        self.for_platform(&top, platform)
    }

    /// The store's image for `name` when it needs no registry: one built or loaded here (not
    /// pulled), or one named by a digest the store has. `--pull` always asks the registry.
    fn local(&self, name: &ImageName) -> anyhow::Result<Option<rbuild_cache::db::ImageRecord>> {
        if self.pull {
            return Ok(None);
        }
        if let Some(digest) = name.digest {
            if !self.state.content.contains(&digest) {
                return Ok(None);
            }
            let bytes = self.state.content.read(&digest)?;
            return Ok(Some(rbuild_cache::db::ImageRecord {
                media_type: media_types::sniff(&bytes)?,
                digest,
                size: bytes.len() as u64,
                created_at: 0,
            }));
        }
        let full = name.full();
        let Some(record) = self.state.db.image(&full)? else {
            return Ok(None);
        };
        let pulled = self.state.db.pulled(&full)? == Some(record.digest);
        Ok((!pulled).then_some(record))
    }

    /// Resolves `name` in its registry and fetches what the store lacks. When the registry
    /// cannot be reached, a name pulled before is used as it was, with a warning (not with
    /// `--pull`).
    fn pull(&self, name: &ImageName, platform: &Platform) -> anyhow::Result<Descriptor> {
        let registry = self.registry()?;
        let pulled = self
            .resolve_tag(registry, name)
            .and_then(|digest| registry.pull_resolved(self.state, name, digest, platform));
        match pulled {
            Ok(top) => Ok(top),
            Err(e) if e.is_transient() && !self.pull => {
                let Some(record) = self.state.db.image(&name.full())? else {
                    return Err(e.into());
                };
                progress(format_args!(
                    "WARNING: {e}; using {} as pulled before ({})",
                    name.familiar(),
                    record.digest
                ));
                Ok(Descriptor::new(
                    record.media_type,
                    record.digest,
                    record.size,
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What `name`'s tag names now, asked of its registry once per build.
    fn resolve_tag(
        &self,
        registry: &Registry,
        name: &ImageName,
    ) -> Result<rbuild_cache::Digest, crate::registry::RegistryError> {
        self.tags.get_or_try(name.full(), || registry.resolve(name))
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
            select(index.value(), platform)?
        } else {
            top.clone()
        };
        if !content.contains(&manifest_descriptor.digest) {
            bail!(
                "its {} image is not in the store (only other platforms of this index were \
                 pulled or loaded)",
                platform_string(platform)
            );
        }
        let manifest: Blob<Manifest> = Blob::parse(content.read(&manifest_descriptor.digest)?)?;
        let config: Blob<ImageConfig> =
            Blob::parse(content.read(&manifest.value().config.digest)?)?;
        config::validate(&manifest, &config)?;
        if let Some(layer) = manifest
            .value()
            .layers
            .iter()
            .find(|l| !content.contains(&l.digest))
        {
            bail!("layer {} is missing from the store", layer.digest);
        }
        let has = config.value().platform();
        if !media_types::is_index(&top.media_type) && !crate::platforms::matches(platform, &has) {
            // BuildKit's InvalidBaseImagePlatform: said, not refused.
            progress(format_args!(
                "WARNING: the base image is for {has}, the build for {}",
                platform_string(platform)
            ));
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

/// Answers remembered by key: each key is worked out once (later askers wait for it), while
/// other keys are worked out at the same time. A failed attempt is not remembered.
struct Memo<K, V> {
    cells: Mutex<BTreeMap<K, Arc<Mutex<Option<V>>>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            cells: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Ord, V: Clone> Memo<K, V> {
    fn get_or_try<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(cells.entry(key).or_default())
        };
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = &*slot {
            return Ok(value.clone());
        }
        let value = make()?;
        *slot = Some(value.clone());
        Ok(value)
    }
}
