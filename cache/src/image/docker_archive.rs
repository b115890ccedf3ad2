//! `docker save` / `docker load` archives.
//!
//! Written as Docker ≥ 25 writes them (moby `image/tarexport`): `manifest.json` and
//! `repositories` for `docker load`, plus an OCI layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) holding the config, the layers as *uncompressed* tars named by their
//! diffID, and an OCI manifest over them. Read: both that layout and the older
//! `<id>/layer.tar` one, with layers compressed or not.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::blobs::{decompress_auto, invalid, read_small, BlobSink, BlobSource, VerifyingReader};
use super::config::validate;
use super::media_types::{OCI_CONFIG, OCI_LAYER};
use super::oci_layout::{index_for, LayoutImage, INDEX_FILE, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE};
use super::tar_out::DetTar;
use super::{Blob, Descriptor, ImageConfig, ImageError, ImageName, Manifest};
use crate::digest::HashingReader;
use crate::Digest;

const MANIFEST_FILE: &str = "manifest.json";
const REPOSITORIES_FILE: &str = "repositories";
/// Symlinks chained deeper than this are a loop.
const MAX_LINKS: usize = 8;
const MAX_JSON: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("docker archive entry {entry:?}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest}: {source}")]
    Blob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer {index} (diffID {diff_id}): {source}")]
    Layer {
        index: usize,
        diff_id: Digest,
        #[source]
        source: io::Error,
    },
    #[error("docker archive: {0}")]
    Invalid(String),
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// One image to save: its manifest (config and layers are read from the blob source) and the
/// names to load it as.
#[derive(Clone, Debug)]
pub struct ArchiveImage {
    pub manifest: Blob<Manifest>,
    pub names: Vec<String>,
}

/// One image read from an archive. Its config, layers (uncompressed, named by diffID) and the
/// new OCI manifest are in the sink.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// `RepoTags` as written (`app:1.0`).
    pub names: Vec<String>,
    pub config: Blob<ImageConfig>,
    pub manifest: Blob<Manifest>,
}

/// An entry of `manifest.json`; field order is Docker's.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    /// Docker writes `null` for an untagged image.
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Go's `json.Encoder` output, which Docker uses for these two files: compact plus a newline.
fn go_encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("maps with string keys serialize");
    bytes.push(b'\n');
    bytes
}

/// What goes into the archive, by path; a `BTreeMap` so entries come out sorted.
enum Entry {
    Bytes(Vec<u8>),
    /// A layer blob, written decompressed; `size` is the uncompressed size.
    Layer {
        /// The stored (maybe compressed) blob and its size.
        blob: (Digest, u64),
        diff_id: Digest,
        size: u64,
    },
}

#[derive(Default)]
struct Plan {
    files: BTreeMap<String, Entry>,
    items: Vec<ManifestItem>,
    repositories: BTreeMap<String, BTreeMap<String, String>>,
    index: Vec<LayoutImage>,
}

/// Streams a deterministic `docker save` archive of `images` (sorted entries, mtime 0,
/// root-owned). Compressed layers are decompressed twice — once to learn the size the tar
/// header needs first, once to write — so no layer is ever held in memory or on disk whole.
pub fn write_docker_archive<W: Write>(
    w: W,
    images: &[ArchiveImage],
    source: &dyn BlobSource,
) -> Result<W, ArchiveError> {
    let mut plan = Plan::default();
    for image in images {
        plan_image(&mut plan, image, source)?;
    }
    let index = index_for(&plan.index)?;
    let files = &mut plan.files;
    files.insert(INDEX_FILE.into(), Entry::Bytes(index.into_bytes()));
    files.insert(MANIFEST_FILE.into(), Entry::Bytes(go_encode(&plan.items)));
    files.insert(
        OCI_LAYOUT_FILE.into(),
        Entry::Bytes(OCI_LAYOUT_CONTENT.to_vec()),
    );
    if !plan.repositories.is_empty() {
        let repos = go_encode(&plan.repositories);
        files.insert(REPOSITORIES_FILE.into(), Entry::Bytes(repos));
    }
    let mut tar = DetTar::new(w);
    for (path, entry) in &plan.files {
        let entry_err = |source| ArchiveError::Entry {
            entry: path.clone(),
            source,
        };
        match entry {
            Entry::Bytes(bytes) => tar.bytes(path, bytes).map_err(entry_err)?,
            Entry::Layer {
                blob,
                diff_id,
                size,
            } => {
                let diff = open_diff(source, blob.0, blob.1).map_err(entry_err)?;
                let diff = VerifyingReader::new(diff, *diff_id, Some(*size));
                tar.file(path, *size, diff).map_err(entry_err)?;
            }
        }
    }
    tar.finish().map_err(|source| ArchiveError::Entry {
        entry: "(end of archive)".into(),
        source,
    })
}

fn plan_image(
    plan: &mut Plan,
    image: &ArchiveImage,
    source: &dyn BlobSource,
) -> Result<(), ArchiveError> {
    let cd = &image.manifest.value().config;
    let config_bytes =
        read_small(source, &cd.digest, cd.size).map_err(|source| ArchiveError::Blob {
            digest: cd.digest,
            source,
        })?;
    let config = Blob::<ImageConfig>::parse(config_bytes)?;
    validate(&image.manifest, &config)?;
    let diff_ids = &config.value().rootfs.diff_ids;
    let layers = plan_layers(plan, image.manifest.value(), diff_ids, source)?;
    let oci = Blob::canonical(Manifest::new_oci(config.descriptor(OCI_CONFIG), layers))?;
    let mut descriptor = oci.descriptor(oci.value().descriptor_media_type());
    descriptor.platform = Some(config.value().platform());
    let tags = add_names(plan, image, &descriptor, diff_ids.last())?;
    plan.items.push(ManifestItem {
        config: blob_path(&config.digest()),
        repo_tags: (!tags.is_empty()).then_some(tags),
        layers: diff_ids.iter().map(blob_path).collect(),
        extra: BTreeMap::new(),
    });
    let config_path = blob_path(&config.digest());
    plan.files
        .insert(config_path, Entry::Bytes(config.into_bytes()));
    plan.files
        .insert(blob_path(&oci.digest()), Entry::Bytes(oci.into_bytes()));
    Ok(())
}

/// One decompressed layer entry per diffID (shared layers once); their OCI descriptors.
fn plan_layers(
    plan: &mut Plan,
    manifest: &Manifest,
    diff_ids: &[Digest],
    source: &dyn BlobSource,
) -> Result<Vec<Descriptor>, ArchiveError> {
    let mut layers = Vec::new();
    for (index, (blob, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
        let size = match plan.files.get(&blob_path(diff_id)) {
            Some(Entry::Layer { size, .. }) => *size,
            _ => diff_size(source, blob, diff_id).map_err(|source| ArchiveError::Layer {
                index,
                diff_id: *diff_id,
                source,
            })?,
        };
        let entry = Entry::Layer {
            blob: (blob.digest, blob.size),
            diff_id: *diff_id,
            size,
        };
        plan.files.insert(blob_path(diff_id), entry);
        layers.push(Descriptor::new(OCI_LAYER, *diff_id, size));
    }
    Ok(layers)
}

/// Index entries and `repositories` lines for the image's names; returns the `RepoTags`
/// (Docker's short names). Names with only a digest are skipped, as Docker skips them: they
/// cannot be loaded as tags.
fn add_names(
    plan: &mut Plan,
    image: &ArchiveImage,
    descriptor: &Descriptor,
    top_layer: Option<&Digest>,
) -> Result<Vec<String>, ArchiveError> {
    let mut tags = Vec::new();
    for name in &image.names {
        let parsed: ImageName = name.parse()?;
        let Some(tag) = parsed.tag_or_latest() else {
            continue;
        };
        tags.push(parsed.familiar());
        plan.index
            .push(LayoutImage::named(descriptor.clone(), name)?);
        // Docker writes the top layer's v1 ID here; rbuild has no v1 IDs, so it writes the top
        // layer's diffID hex. `docker load` reads `repositories` only without `manifest.json`.
        let top = top_layer.map(Digest::hex).unwrap_or_default();
        plan.repositories
            .entry(parsed.familiar_repository())
            .or_default()
            .insert(tag.to_string(), top);
    }
    if tags.is_empty() {
        // Docker lists only tagged images in index.json; an unnamed entry keeps the OCI part
        // usable (`skopeo copy oci-archive:…`) for untagged saves too.
        plan.index.push(LayoutImage::unnamed(descriptor.clone()));
    }
    Ok(tags)
}

/// The decompressed layer `blob`.
fn open_diff(source: &dyn BlobSource, digest: Digest, size: u64) -> io::Result<Box<dyn Read + '_>> {
    let raw = VerifyingReader::new(source.open(&digest)?, digest, Some(size));
    decompress_auto(raw)
}

/// The uncompressed size of a layer, checking on the way that it decompresses to `diff_id`.
fn diff_size(source: &dyn BlobSource, blob: &Descriptor, diff_id: &Digest) -> io::Result<u64> {
    if blob.digest == *diff_id {
        return Ok(blob.size);
    }
    let mut hashing = HashingReader::new(open_diff(source, blob.digest, blob.size)?);
    io::copy(&mut hashing, &mut io::sink())?;
    let (_, digest, size) = hashing.finish();
    if digest != *diff_id {
        return Err(invalid(format!(
            "blob {} decompresses to {digest}, not to its diffID",
            blob.digest
        )));
    }
    Ok(size)
}

/// Where each entry of an archive file is, so entries can be read in any order.
struct TarIndex {
    path: PathBuf,
    entries: BTreeMap<String, Located>,
}

enum Located {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink (target relative to the entry's directory, already resolved) or hardlink.
    Link(String),
}

/// `a/./b/../c` → `a/c`; `None` when it climbs out of the archive.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl TarIndex {
    fn build(path: &Path) -> Result<Self, ArchiveError> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut archive = tar::Archive::new(File::open(path).map_err(io_err)?);
        let mut entries = BTreeMap::new();
        for entry in archive.entries_with_seek().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
            let Some(name) = normalize(&name) else {
                continue;
            };
            let kind = entry.header().entry_type();
            let link = || -> Option<String> {
                let target = entry.link_name().ok()??.to_string_lossy().into_owned();
                match kind {
                    tar::EntryType::Symlink => {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        normalize(&format!("{dir}/{target}"))
                    }
                    _ => normalize(&target),
                }
            };
            let located = match kind {
                k if k.is_file() => Located::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                tar::EntryType::Symlink | tar::EntryType::Link => match link() {
                    Some(target) => Located::Link(target),
                    None => continue,
                },
                _ => continue,
            };
            entries.insert(name, located);
        }
        Ok(TarIndex {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The bytes of entry `name`, following links.
    fn open(&self, name: &str) -> Result<(impl Read, u64), ArchiveError> {
        let entry_err = |reason: &str| ArchiveError::Entry {
            entry: name.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, reason.to_string()),
        };
        let mut current = normalize(name).ok_or_else(|| entry_err("outside the archive"))?;
        for _ in 0..MAX_LINKS {
            match self.entries.get(&current) {
                None => return Err(entry_err("not in the archive")),
                Some(Located::Link(target)) => current = target.clone(),
                Some(Located::File { offset, size }) => {
                    let io_err = |source| ArchiveError::Io {
                        path: self.path.clone(),
                        source,
                    };
                    let mut file = File::open(&self.path).map_err(io_err)?;
                    file.seek(SeekFrom::Start(*offset)).map_err(io_err)?;
                    return Ok((file.take(*size), *size));
                }
            }
        }
        Err(entry_err("too many levels of links"))
    }

    fn read_json(&self, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let (reader, size) = self.open(name)?;
        if size > MAX_JSON {
            return Err(ArchiveError::Invalid(format!(
                "{name} is {size} bytes, too large for JSON"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        let mut reader = reader;
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| ArchiveError::Entry {
                entry: name.to_string(),
                source,
            })?;
        Ok(bytes)
    }
}

/// Reads every image of the archive file at `path` into `sink`: the config exactly as stored
/// (its digest, the image ID, is unchanged), each layer decompressed and verified against its
/// diffID, and a new OCI manifest over them with `application/vnd.oci.image.layer.v1.tar`
/// layers. The file must be seekable so entries can be read in the order manifest.json wants.
pub fn read_docker_archive(
    path: &Path,
    sink: &dyn BlobSink,
) -> Result<Vec<LoadedImage>, ArchiveError> {
    let tar = TarIndex::build(path)?;
    let items: Vec<ManifestItem> = serde_json::from_slice(&tar.read_json(MANIFEST_FILE)?)
        .map_err(|e| ArchiveError::Invalid(format!("cannot parse {MANIFEST_FILE}: {e}")))?;
    items
        .into_iter()
        .map(|item| load_image(&tar, item, sink))
        .collect()
}

fn load_image(
    tar: &TarIndex,
    item: ManifestItem,
    sink: &dyn BlobSink,
) -> Result<LoadedImage, ArchiveError> {
    let config = Blob::<ImageConfig>::parse(tar.read_json(&item.config)?)?;
    put_bytes(sink, config.bytes())?;
    let diff_ids = &config.value().rootfs.diff_ids;
    if diff_ids.len() != item.layers.len() {
        return Err(ArchiveError::Invalid(format!(
            "{MANIFEST_FILE} lists {} layers for config {} ({}), which has {} diff_ids",
            item.layers.len(),
            config.digest(),
            item.config,
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (index, (name, diff_id)) in item.layers.iter().zip(diff_ids).enumerate() {
        let (reader, _) = tar.open(name)?;
        let size =
            layer_into_sink(reader, diff_id, sink).map_err(|source| ArchiveError::Layer {
                index,
                diff_id: *diff_id,
                source,
            })?;
        layers.push(Descriptor::new(OCI_LAYER, *diff_id, size));
    }
    let manifest = Blob::canonical(Manifest::new_oci(config.descriptor(OCI_CONFIG), layers))?;
    put_bytes(sink, manifest.bytes())?;
    Ok(LoadedImage {
        names: item.repo_tags.unwrap_or_default(),
        config,
        manifest,
    })
}

fn put_bytes(sink: &dyn BlobSink, bytes: &[u8]) -> Result<(), ArchiveError> {
    let digest = Digest::of(bytes);
    if !sink.contains(&digest) {
        sink.put_verified(&digest, Some(bytes.len() as u64), &mut &bytes[..])
            .map_err(|source| ArchiveError::Blob { digest, source })?;
    }
    Ok(())
}

/// Decompresses (when compressed) and stores one layer as its diff tar; returns its size.
/// A layer the sink already has is still read through, to verify it and learn its size.
fn layer_into_sink(reader: impl Read, diff_id: &Digest, sink: &dyn BlobSink) -> io::Result<u64> {
    let mut diff = decompress_auto(reader)?;
    if sink.contains(diff_id) {
        let mut verified = VerifyingReader::new(diff, *diff_id, None);
        return io::copy(&mut verified, &mut io::sink());
    }
    sink.put_verified(diff_id, None, &mut diff)
}
