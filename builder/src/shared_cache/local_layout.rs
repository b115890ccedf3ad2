//! `type=local` caches: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) whose index names each cache manifest by its tag
//! (`org.opencontainers.image.ref.name`), as BuildKit's local cache does. Blobs already in the
//! directory are not written again, so exporting to the same directory only adds what changed.

use std::path::Path;

use anyhow::{bail, Context};
use rbuild_cache::image::{media_types, Blob, Descriptor, Index};

use crate::state::State;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The descriptor the layout's index names `tag`.
pub fn tagged(dir: &Path, tag: &str) -> anyhow::Result<Descriptor> {
    let index = read_index(dir)?.with_context(|| format!("{} has no index.json", dir.display()))?;
    index
        .manifests
        .iter()
        .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        .cloned()
        .with_context(|| format!("{}/index.json names nothing {tag:?}", dir.display()))
}

/// Copies `blob` from the layout into the content store (unless the store has it), verified
/// against its digest and size: a damaged file is an error and is never stored.
pub fn fetch_blob(state: &State, dir: &Path, blob: &Descriptor) -> anyhow::Result<()> {
    if state.content.contains(&blob.digest) {
        return Ok(());
    }
    let path = blob_path(dir, blob);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    state
        .content
        .put_verified(&blob.digest, Some(blob.size), std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}

/// Writes the manifest `top` and `blobs` (each from the content store, unless the layout has
/// it) and names `top` `tag` in the index, replacing what the tag named before.
pub fn store(
    state: &State,
    dir: &Path,
    tag: &str,
    top: &Descriptor,
    blobs: &[Descriptor],
    unusable: &std::collections::BTreeSet<rbuild_cache::Digest>,
) -> anyhow::Result<()> {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir)
        .with_context(|| format!("creating {}", blob_dir.display()))?;
    // One exporter at a time changes the index (runners may share the directory).
    let dir_handle =
        std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    rustix::fs::flock(&dir_handle, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", dir.display()))?;
    for blob in blobs.iter().chain([top]) {
        let path = blob_path(dir, blob);
        // Kept unless it is the wrong size or this build found it corrupt.
        let kept = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == blob.size);
        if kept && !unusable.contains(&blob.digest) {
            continue;
        }
        let mut from = state.content.open_blob(&blob.digest)?;
        write_atomically(&path, |out| {
            std::io::copy(&mut from, out)?;
            Ok(())
        })?;
    }
    write_atomically(&dir.join("oci-layout"), |out| {
        Ok(out.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)?)
    })?;
    let mut index = read_index(dir)?.unwrap_or_else(|| Index::new_oci(Vec::new()));
    index
        .manifests
        .retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
    let mut entry = top.clone();
    entry.annotations.insert(REF_NAME.into(), tag.into());
    index.manifests.push(entry);
    let bytes = Blob::canonical(index)?.bytes().to_vec();
    write_atomically(&dir.join("index.json"), |out| Ok(out.write_all(&bytes)?))
}

use std::io::Write;

fn blob_path(dir: &Path, blob: &Descriptor) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(blob.digest.hex())
}

fn read_index(dir: &Path) -> anyhow::Result<Option<Index>> {
    let path = dir.join("index.json");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let index: Index =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let is_manifest = |t: &str| media_types::is_manifest(t) || media_types::is_index(t);
    if !index.manifests.iter().all(|m| is_manifest(&m.media_type)) {
        bail!("{} lists something that is not a manifest", path.display());
    }
    Ok(Some(index))
}

/// A temp file beside `path`, renamed over it once complete (the exporters' writer).
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    crate::export::write_to(&crate::output::Destination::Path(path.to_path_buf()), write)
}
