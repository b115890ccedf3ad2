//! `--cache-from`: each source's cache graph read up front (a manifest and a small config
//! blob), its layers fetched one by one when a build needs them. A source that cannot be read
//! — missing, corrupt, another format version — is a warning and the build goes on without it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use rbuild_cache::cache_graph::{self, CacheGraph, CacheRecord, Parsed};
use rbuild_cache::db::RecordedLayer;
use rbuild_cache::image::{media_types, Blob, Descriptor, ImageConfig, Index, Manifest};
use rbuild_cache::Digest;
use rbuild_frontend::platform::Platform;

use super::{local_layout, CacheSource};
use crate::bases::StoreBases;
use crate::images::human_size;
use crate::solve::progress;
use crate::state::State;

/// A layer a cache hit promised that cannot be had (its blob missing or corrupt at the
/// source, or not unpacking): the build solves again without the hits that named it.
#[derive(Debug, thiserror::Error)]
#[error("layer {blob} cannot be used: {cause}")]
pub struct UnusableLayer {
    pub blob: Digest,
    pub cause: String,
}

/// Every imported record, and where each blob they name can be fetched.
#[derive(Default)]
pub struct ImportedCache {
    sources: Vec<CacheSource>,
    records: BTreeMap<Digest, Option<RecordedLayer>>,
    configs: BTreeMap<Digest, String>,
    /// Cache mount contents by id: the layer's diffID and blob.
    mounts: BTreeMap<String, (Digest, Descriptor)>,
    /// By blob digest: the sources that have it, in the order given.
    blobs: BTreeMap<Digest, Vec<usize>>,
    /// By blob digest: the diffID its records give it, checked when it is fetched.
    diff_ids: BTreeMap<Digest, Digest>,
    /// One fetch per blob at a time: steps that need the same layer wait for one download.
    fetching: Mutex<BTreeMap<Digest, Arc<Mutex<()>>>>,
    downloaded: AtomicU64,
    fetched: AtomicU64,
}

impl ImportedCache {
    /// Reads every source's graph; the first source that has a key wins it (sources are tried
    /// in the order given).
    pub fn load(
        state: &State,
        bases: &StoreBases,
        sources: &[CacheSource],
        platforms: &[Platform],
    ) -> ImportedCache {
        let mut cache = ImportedCache::default();
        for source in sources {
            let index = cache.sources.len();
            cache.sources.push(source.clone());
            let graphs = match read_source(state, bases, source, platforms) {
                Ok(graphs) => graphs,
                Err(e) => {
                    progress(format_args!(
                        "WARNING: cache from {}: {e:#}; building without it",
                        describe(source)
                    ));
                    continue;
                }
            };
            let before = cache.records.len();
            for graph in graphs {
                cache.add(graph, index);
            }
            progress(format_args!(
                "importing cache from {}: {} steps",
                describe(source),
                cache.records.len() - before
            ));
        }
        cache
    }

    fn add(&mut self, graph: ImportedGraph, source: usize) {
        for record in graph.records {
            let layer = record.layer.map(|(diff_id, blob)| {
                self.note_blob(&blob, diff_id, source);
                RecordedLayer {
                    diff_id,
                    blob: blob.digest,
                    media_type: blob.media_type,
                    size: blob.size,
                }
            });
            self.records.entry(record.key).or_insert(layer);
        }
        for config in graph.configs {
            self.configs.entry(config.key).or_insert(config.config);
        }
        for (id, diff_id, blob) in graph.mounts {
            self.note_blob(&blob, diff_id, source);
            self.mounts.entry(id).or_insert((diff_id, blob));
        }
    }

    fn note_blob(&mut self, blob: &Descriptor, diff_id: Digest, source: usize) {
        let sources = self.blobs.entry(blob.digest).or_default();
        if !sources.contains(&source) {
            sources.push(source);
        }
        self.diff_ids.entry(blob.digest).or_insert(diff_id);
    }

    /// What an imported cache holds for the cache mount `id`: its layer's diffID and blob.
    pub fn cache_mount(&self, id: &str) -> Option<(Digest, Descriptor)> {
        self.mounts.get(id).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.configs.is_empty()
    }

    /// What `key` made, per the imported caches: `Some(None)` a step that made no layer.
    pub fn record(&self, key: &Digest) -> Option<Option<RecordedLayer>> {
        self.records.get(key).cloned()
    }

    /// An image config the exporting build made, by its time-free key.
    pub fn config(&self, key: &Digest) -> Option<&str> {
        self.configs.get(key).map(String::as_str)
    }

    /// Whether an imported source has `blob` (so a record naming it may be used without it in
    /// the store).
    pub fn has_blob(&self, blob: &Digest) -> bool {
        self.blobs.contains_key(blob)
    }

    /// Brings `blob` into the content store from the source that has it, verified.
    pub fn fetch(
        &self,
        state: &State,
        bases: &StoreBases,
        blob: &Descriptor,
    ) -> Result<(), UnusableLayer> {
        let unusable = |cause: String| UnusableLayer {
            blob: blob.digest,
            cause,
        };
        let Some(sources) = self.blobs.get(&blob.digest) else {
            return Err(unusable(
                "it is not in the store, and no imported cache has it".into(),
            ));
        };
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(blob.digest).or_default().clone()
        };
        let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
        if state.content.contains(&blob.digest) {
            return Ok(());
        }
        // Each source that has it, in turn; the last failure is the one reported.
        let mut failure = String::new();
        for &source in sources {
            let result = match &self.sources[source] {
                CacheSource::Registry(name) => bases
                    .registry()
                    .and_then(|r| Ok(r.fetch_blobs_of(state, name, std::slice::from_ref(blob))?)),
                CacheSource::Local { dir, .. } => local_layout::fetch_blob(state, dir, blob),
            };
            match result.and_then(|()| self.check_diff_id(state, blob)) {
                Ok(()) => {
                    self.downloaded.fetch_add(blob.size, Ordering::Relaxed);
                    self.fetched.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => failure = format!("{e:#}"),
            }
        }
        Err(unusable(failure))
    }

    /// A fetched layer must be what its records say (its diffID): a cache whose record is
    /// wrong would otherwise put a wrong layer in an image no step unpacks. A mismatch is
    /// removed from the store.
    fn check_diff_id(&self, state: &State, blob: &Descriptor) -> anyhow::Result<()> {
        let Some(want) = self.diff_ids.get(&blob.digest) else {
            return Ok(());
        };
        let file = std::io::BufReader::new(state.content.open_blob(&blob.digest)?);
        let mut tar = rbuild_cache::image::blobs::decompress_auto(file)?;
        let mut hashing = rbuild_cache::digest::HashingWriter::new(std::io::sink());
        std::io::copy(&mut tar, &mut hashing)?;
        let (_, got, _) = hashing.finish();
        if got != *want {
            let _ = state.content.remove(&blob.digest);
            bail!("it unpacks to {got}, not the diffID {want} the cache gives it");
        }
        Ok(())
    }

    /// `fetched N layers (SIZE) from the imported cache`, when any were.
    pub fn report(&self) {
        let fetched = self.fetched.load(Ordering::Relaxed);
        if fetched > 0 {
            progress(format_args!(
                "fetched {fetched} {} ({}) from the imported cache",
                if fetched == 1 { "layer" } else { "layers" },
                human_size(self.downloaded.load(Ordering::Relaxed))
            ));
        }
    }
}

/// A graph's records with each layer's blob known.
struct ImportedGraph {
    records: Vec<ImportedRecord>,
    configs: Vec<cache_graph::CachedConfig>,
    mounts: Vec<(String, Digest, Descriptor)>,
}

struct ImportedRecord {
    key: Digest,
    layer: Option<(Digest, Descriptor)>,
}

pub(super) fn describe(source: &CacheSource) -> String {
    match source {
        CacheSource::Registry(name) => name.familiar(),
        CacheSource::Local { dir, tag } => format!("{} (tag {tag})", dir.display()),
    }
}

fn read_source(
    state: &State,
    bases: &StoreBases,
    source: &CacheSource,
    platforms: &[Platform],
) -> anyhow::Result<Vec<ImportedGraph>> {
    match source {
        CacheSource::Registry(name) => {
            let registry = bases.registry()?;
            let Some(top) = registry.fetch_top(state, name)? else {
                bail!("no such tag in the registry yet")
            };
            let mut graphs = Vec::new();
            for manifest in manifests_of(
                state,
                &top,
                |top, platform| Ok(registry.fetch_platform_manifest(state, name, top, platform)?),
                platforms,
            )? {
                let config = &manifest.value().config;
                registry.fetch_blobs_of(state, name, std::slice::from_ref(config))?;
                graphs.extend(graph_of(state, &manifest)?);
            }
            // Pushes to this registry may now find these blobs here, or mount them from here.
            for graph in &graphs {
                for record in &graph.records {
                    if let Some((_, blob)) = &record.layer {
                        state
                            .db
                            .add_blob_source(&blob.digest, &name.domain, &name.path)?;
                    }
                }
            }
            Ok(graphs)
        }
        CacheSource::Local { dir, tag } => {
            let top = local_layout::tagged(dir, tag)?;
            local_layout::fetch_blob(state, dir, &top)?;
            let mut graphs = Vec::new();
            for manifest in manifests_of(
                state,
                &top,
                |top, platform| {
                    let index: Blob<Index> = Blob::parse(state.content.read(&top.digest)?)?;
                    let chosen = crate::platforms::select(index.value(), platform)?;
                    local_layout::fetch_blob(state, dir, &chosen)?;
                    Ok(chosen)
                },
                platforms,
            )? {
                local_layout::fetch_blob(state, dir, &manifest.value().config)?;
                graphs.extend(graph_of(state, &manifest)?);
            }
            Ok(graphs)
        }
    }
}

/// The manifests to read below `top`: itself, or an index's entry per build platform.
fn manifests_of(
    state: &State,
    top: &Descriptor,
    platform_manifest: impl Fn(&Descriptor, &Platform) -> anyhow::Result<Descriptor>,
    platforms: &[Platform],
) -> anyhow::Result<Vec<Blob<Manifest>>> {
    let mut chosen: Vec<Descriptor> = Vec::new();
    if media_types::is_index(&top.media_type) {
        for platform in platforms {
            match platform_manifest(top, platform) {
                Ok(d) if !chosen.iter().any(|c| c.digest == d.digest) => chosen.push(d),
                Ok(_) => {}
                // An image cache without this platform has nothing for its steps.
                Err(_) => continue,
            }
        }
    } else {
        chosen.push(top.clone());
    }
    chosen
        .iter()
        .map(|d| {
            Blob::parse(state.content.read(&d.digest)?)
                .with_context(|| format!("reading manifest {}", d.digest))
        })
        .collect()
}

/// The graph a manifest carries: a cache manifest's config, or an image config's inline
/// field. `None` for an image without one.
fn graph_of(state: &State, manifest: &Blob<Manifest>) -> anyhow::Result<Option<ImportedGraph>> {
    let manifest = manifest.value();
    let config_bytes = state.content.read(&manifest.config.digest)?;
    if manifest.config.media_type == cache_graph::CONFIG_MEDIA_TYPE {
        let Some(graph) = parse(CacheGraph::parse(&config_bytes))? else {
            return Ok(None);
        };
        graph.check_blobs(&manifest.layers)?;
        let records = graph
            .records
            .into_iter()
            .map(|r| imported(r, |blob| blob.map(|b| b.descriptor())))
            .collect::<anyhow::Result<_>>()?;
        let mounts = graph
            .mounts
            .into_iter()
            .filter_map(|m| {
                let blob = m.layer.blob.as_ref()?.descriptor();
                Some((m.id, m.layer.diff_id, blob))
            })
            .collect();
        return Ok(Some(ImportedGraph {
            records,
            configs: graph.configs,
            mounts,
        }));
    }
    let config: Blob<ImageConfig> = Blob::parse(config_bytes)?;
    let Some(inline) = config.value().extra.get(cache_graph::INLINE_CONFIG_FIELD) else {
        bail!(
            "{} is an image without an inline cache",
            manifest.config.digest
        );
    };
    let Some(graph) = parse(CacheGraph::from_value(inline.clone()))? else {
        return Ok(None);
    };
    // Inline records name layers by diffID: the image's own blob for each.
    let diff_ids = &config.value().rootfs.diff_ids;
    let blob_of = |diff_id: &Digest| {
        diff_ids
            .iter()
            .position(|d| d == diff_id)
            .and_then(|i| manifest.layers.get(i).cloned())
    };
    let records = graph
        .records
        .into_iter()
        .filter_map(|r| {
            let diff_id = r.layer.as_ref().map(|l| l.diff_id);
            match diff_id {
                None => Some(ImportedRecord {
                    key: r.key,
                    layer: None,
                }),
                Some(d) => blob_of(&d).map(|blob| ImportedRecord {
                    key: r.key,
                    layer: Some((d, blob)),
                }),
            }
        })
        .collect();
    Ok(Some(ImportedGraph {
        records,
        configs: Vec::new(),
        mounts: Vec::new(),
    }))
}

fn parse(
    parsed: Result<Parsed, cache_graph::CacheGraphError>,
) -> anyhow::Result<Option<CacheGraph>> {
    match parsed? {
        Parsed::Graph(graph) => Ok(Some(graph)),
        Parsed::UnknownVersion(version) => {
            progress(format_args!(
                "WARNING: a cache of format version {version} (this rbuild reads version {}) \
                 is ignored",
                cache_graph::VERSION
            ));
            Ok(None)
        }
    }
}

fn imported(
    record: CacheRecord,
    blob: impl Fn(Option<&cache_graph::BlobRef>) -> Option<Descriptor>,
) -> anyhow::Result<ImportedRecord> {
    let layer = match &record.layer {
        None => None,
        Some(layer) => match blob(layer.blob.as_ref()) {
            Some(descriptor) => Some((layer.diff_id, descriptor)),
            None => bail!("the record of {} names no blob for its layer", record.key),
        },
    };
    Ok(ImportedRecord {
        key: record.key,
        layer,
    })
}
