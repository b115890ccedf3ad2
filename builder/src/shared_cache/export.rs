//! `--cache-to`: this build's step records as a cache manifest, its layers compressed as asked
//! (each once per diffID, the blobs an image push of the same compression sends), written to a
//! registry or an OCI layout directory.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Context;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use rbuild_cache::cache_graph::{
    self, BlobRef, CacheGraph, CacheRecord, CachedConfig, CachedLayer, CachedMount,
};
use rbuild_cache::db::RecordedLayer;
use rbuild_cache::image::{media_types, Blob, Descriptor, Manifest};
use rbuild_cache::layer::Compression;
use rbuild_cache::Digest;
use rbuild_frontend::graph::{BuildGraph, Edge};
use rbuild_frontend::instructions::MountType;

use super::{CacheExport, CacheTarget, ExportMode, ImportedCache};
use crate::bases::StoreBases;
use crate::images::human_size;
use crate::solve::progress;
use crate::state::State;

/// What a step of this build recorded: its cache key and the layer it made (none: it changed
/// no file).
#[derive(Clone, Debug)]
pub struct StepRecord {
    pub vertex: NodeIndex,
    pub key: Digest,
    pub layer: Option<RecordedLayer>,
}

/// What an export draws on.
pub struct ExportInputs<'a> {
    pub graph: &'a BuildGraph,
    /// The final image's last vertex, per platform.
    pub heads: &'a [NodeIndex],
    pub steps: &'a [StepRecord],
    /// The image configs built: (time-free key, config digest).
    pub configs: &'a [(Digest, Digest)],
    /// Blobs the build found missing or corrupt where an imported cache said they were.
    pub unusable: &'a BTreeSet<Digest>,
}

/// The steps whose layers make the images: from each head down its root filesystems.
pub fn final_chain(graph: &BuildGraph, heads: &[NodeIndex]) -> BTreeSet<NodeIndex> {
    let mut chain = BTreeSet::new();
    for &head in heads {
        let mut at = Some(head);
        while let Some(v) = at {
            if !chain.insert(v) {
                break;
            }
            at = graph
                .graph
                .edges_directed(v, Direction::Incoming)
                .find(|e| matches!(e.weight(), Edge::Rootfs))
                .map(|e| e.source());
        }
    }
    chain
}

/// The records an export of `mode` carries, in key order.
fn selected<'s>(inputs: &'s ExportInputs, mode: ExportMode) -> Vec<&'s StepRecord> {
    let chain = final_chain(inputs.graph, inputs.heads);
    let mut steps: Vec<&StepRecord> = inputs
        .steps
        .iter()
        .filter(|s| mode == ExportMode::Max || chain.contains(&s.vertex))
        .collect();
    steps.sort_by_key(|s| s.key);
    steps.dedup_by_key(|s| s.key);
    steps
}

/// The inline cache of an image whose steps are `steps` (its own chain): records naming
/// layers by diffID, the image's manifest listing their blobs.
pub fn inline_graph(steps: &[StepRecord], chain: &BTreeSet<NodeIndex>) -> serde_json::Value {
    let records = steps
        .iter()
        .filter(|s| chain.contains(&s.vertex))
        .map(|s| CacheRecord {
            key: s.key,
            layer: s.layer.as_ref().map(|l| CachedLayer {
                diff_id: l.diff_id,
                blob: None,
            }),
        });
    serde_json::to_value(CacheGraph::new(records, [])).expect("a cache graph serializes")
}

/// Writes the export `spec` asks for. Inline exports are written with the image, not here.
pub fn export(
    state: &State,
    bases: &StoreBases,
    imported: &ImportedCache,
    spec: &CacheExport,
    inputs: &ExportInputs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let where_to = match &spec.target {
        CacheTarget::Inline => return Ok(()),
        CacheTarget::Registry(name) => name.familiar(),
        CacheTarget::Local { dir, tag } => format!("{} (tag {tag})", dir.display()),
    };
    let result = write_export(state, bases, imported, spec, inputs);
    match result {
        Ok((steps, layers, bytes)) => {
            progress(format_args!(
                "exported cache to {where_to}: {steps} steps, {layers} layers ({}) in {:.1}s",
                human_size(bytes),
                started.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Err(e) if spec.ignore_error => {
            progress(format_args!(
                "WARNING: exporting cache to {where_to}: {e:#} (ignore-error=true)"
            ));
            Ok(())
        }
        Err(e) => Err(e.context(format!("exporting cache to {where_to}"))),
    }
}

/// Returns how many steps and layers went out, and the layers' bytes.
fn write_export(
    state: &State,
    bases: &StoreBases,
    imported: &ImportedCache,
    spec: &CacheExport,
    inputs: &ExportInputs,
) -> anyhow::Result<(usize, usize, u64)> {
    // What the target has already: a registry's previous cache manifest lists it (less what
    // this build found missing or corrupt there), a directory holds it.
    let present = match &spec.target {
        CacheTarget::Registry(name) => previously_listed(state, bases, name)?
            .difference(inputs.unusable)
            .copied()
            .collect(),
        _ => BTreeSet::new(),
    };
    let steps = selected(inputs, spec.mode);
    let blobs = exported_blobs(state, bases, imported, &steps, spec.compression)?;
    let mut dropped = 0;
    let mut records = Vec::new();
    for (step, blob) in steps.iter().zip(blobs) {
        let layer = match (&step.layer, blob) {
            (None, _) => None,
            (Some(layer), Some(blob))
                if available(state, bases, imported, spec, &present, inputs, &blob) =>
            {
                Some(CachedLayer {
                    diff_id: layer.diff_id,
                    blob: Some(BlobRef::from(&blob)),
                })
            }
            // Its blob cannot be had (an imported record whose blob is gone): left out.
            (Some(_), _) => {
                dropped += 1;
                continue;
            }
        };
        records.push(CacheRecord {
            key: step.key,
            layer,
        });
    }
    if dropped > 0 {
        progress(format_args!(
            "WARNING: {dropped} steps left out of the cache export: their layers cannot be had"
        ));
    }
    let configs = inputs
        .configs
        .iter()
        .map(|(key, digest)| {
            let bytes = state.content.read(digest)?;
            let config = String::from_utf8(bytes).context("an image config is not UTF-8")?;
            Ok(CachedConfig { key: *key, config })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mounts = match spec.cache_mounts {
        true => exported_mounts(state, inputs, spec.compression)?,
        false => Vec::new(),
    };
    let graph = CacheGraph::new(records, configs).with_mounts(mounts);
    let layers = graph.layer_blobs();
    let config_bytes = graph.to_json();
    state.content.put(&config_bytes)?;
    let config = Descriptor::new(
        cache_graph::CONFIG_MEDIA_TYPE,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    let mut manifest = Manifest::new_oci(config.clone(), layers.clone());
    manifest.artifact_type = Some(cache_graph::ARTIFACT_TYPE.into());
    let manifest = Blob::canonical(manifest)?;
    state.content.put(manifest.bytes())?;
    let top = manifest.descriptor(media_types::OCI_MANIFEST);
    let bytes = layers.iter().map(|l| l.size).sum();
    match &spec.target {
        CacheTarget::Registry(name) => {
            let registry = bases.registry()?;
            registry.push_knowing(state, &top, std::slice::from_ref(name), &present)?;
        }
        CacheTarget::Local { dir, tag } => {
            let mut blobs = layers.clone();
            blobs.push(config);
            super::local_layout::store(state, dir, tag, &top, &blobs, inputs.unusable)?;
        }
        CacheTarget::Inline => unreachable!("inline caches are written with the image"),
    }
    Ok((graph.records.len(), layers.len(), bytes))
}

/// Whether the export can carry `blob`: in the store, at the target already, or fetched now
/// from the imported cache that has it.
fn available(
    state: &State,
    bases: &StoreBases,
    imported: &ImportedCache,
    spec: &CacheExport,
    present: &BTreeSet<Digest>,
    inputs: &ExportInputs,
    blob: &Descriptor,
) -> bool {
    if state.content.contains(&blob.digest) || present.contains(&blob.digest) {
        return true;
    }
    if let CacheTarget::Registry(name) = &spec.target {
        let there = !inputs.unusable.contains(&blob.digest)
            && bases
                .registry()
                .is_ok_and(|r| r.has_blob(name, &blob.digest).unwrap_or(false));
        // Known there, the push sends the manifest without the blob's bytes.
        if there
            && state
                .db
                .add_blob_source(&blob.digest, &name.domain, &name.path)
                .is_ok()
        {
            return true;
        }
    }
    imported.fetch(state, bases, blob).is_ok()
}

/// The contents of the cache mounts the build's RUN steps use, each as a layer in
/// `compression`.
fn exported_mounts(
    state: &State,
    inputs: &ExportInputs,
    compression: Compression,
) -> anyhow::Result<Vec<CachedMount>> {
    let mut ids = BTreeSet::new();
    for step in inputs.steps {
        if let rbuild_frontend::graph::Op::Exec(exec) = &inputs.graph.graph[step.vertex].op {
            for m in exec.mounts.iter().filter(|m| m.kind == MountType::Cache) {
                ids.insert(
                    m.id.clone()
                        .or_else(|| m.target.clone())
                        .unwrap_or_default(),
                );
            }
        }
    }
    let caches = crate::cache_mounts::CacheMounts::new(&state.root);
    let mut mounts = Vec::new();
    for id in ids {
        let Some(held) = caches.existing(&id)? else {
            continue;
        };
        let changes = rbuild_cache::layer::ChangeSet::from_overlay_upper(&held.data)
            .with_context(|| format!("reading the cache mount {id:?}"))?;
        let mut writer = state.content.writer()?;
        let options = rbuild_cache::layer::LayerOptions {
            compression,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            source_date_epoch: None,
        };
        let info = rbuild_cache::layer::write_layer(&changes, &mut writer, &options)
            .with_context(|| format!("packing the cache mount {id:?}"))?;
        let blob = writer.commit(Some(&info.blob_digest), Some(info.size))?;
        mounts.push(CachedMount {
            id,
            layer: CachedLayer {
                diff_id: info.diff_id,
                blob: Some(BlobRef {
                    media_type: compression.oci_media_type().into(),
                    digest: blob.digest,
                    size: blob.size,
                }),
            },
        });
    }
    Ok(mounts)
}

/// Each step's layer blob in `compression` (`None` for a step without a layer), made at most
/// once per layer, several layers at a time.
fn exported_blobs(
    state: &State,
    bases: &StoreBases,
    imported: &ImportedCache,
    steps: &[&StepRecord],
    compression: Compression,
) -> anyhow::Result<Vec<Option<Descriptor>>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; steps.len()]);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(step) = steps.get(i) else {
                            return Ok(());
                        };
                        let Some(layer) = &step.layer else { continue };
                        let blob = match exported_blob(state, bases, imported, layer, compression) {
                            Ok(blob) => blob,
                            // An imported layer that cannot be fetched: its record is left out.
                            Err(e) if e.downcast_ref::<super::UnusableLayer>().is_some() => {
                                continue
                            }
                            Err(e) => return Err(e),
                        };
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(blob);
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| anyhow::bail!("a cache export thread panicked"))
        })
    })?;
    Ok(results.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn exported_blob(
    state: &State,
    bases: &StoreBases,
    imported: &ImportedCache,
    layer: &RecordedLayer,
    compression: Compression,
) -> anyhow::Result<Descriptor> {
    let as_recorded = Descriptor::new(layer.media_type.clone(), layer.blob, layer.size);
    if media_types::layer_compression(&layer.media_type) == Some(compression) {
        // Already as wanted (an imported layer is, usually): not even fetched.
        return Ok(as_recorded);
    }
    if !state.content.contains(&layer.blob) {
        imported.fetch(state, bases, &as_recorded)?;
    }
    let (digest, size) =
        crate::export::layer_blob(state, &layer.blob, &layer.diff_id, compression)?;
    Ok(Descriptor::new(compression.oci_media_type(), digest, size))
}

/// The blobs the cache manifest now at `name` lists: the registry has them, so the export
/// sends them without asking again. Nothing when there is none (or it is not a cache).
fn previously_listed(
    state: &State,
    bases: &StoreBases,
    name: &rbuild_cache::image::ImageName,
) -> anyhow::Result<BTreeSet<Digest>> {
    let registry = bases.registry()?;
    let top = match registry.fetch_top(state, name) {
        Ok(Some(top)) if media_types::is_manifest(&top.media_type) => top,
        // No earlier export, or not one of ours: every blob is checked.
        Ok(_) | Err(_) => return Ok(BTreeSet::new()),
    };
    let Ok(manifest) = Blob::<Manifest>::parse(state.content.read(&top.digest)?) else {
        return Ok(BTreeSet::new());
    };
    if manifest.value().config.media_type != cache_graph::CONFIG_MEDIA_TYPE {
        return Ok(BTreeSet::new());
    }
    let mut present = BTreeSet::new();
    for blob in std::iter::once(&manifest.value().config).chain(&manifest.value().layers) {
        state
            .db
            .add_blob_source(&blob.digest, &name.domain, &name.path)?;
        present.insert(blob.digest);
    }
    Ok(present)
}
