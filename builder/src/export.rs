//! Exporters: an image already in the content store goes to the local image store (names),
//! an OCI layout (tar or directory), a docker archive, or its rootfs (directory or tar).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rbuild_cache::db::ImageRecord;
use rbuild_cache::image::blobs::decompress_auto;
use rbuild_cache::image::docker_archive::{write_docker_archive, ArchiveImage};
use rbuild_cache::image::oci_layout::{write_oci_dir, write_oci_tar, LayoutImage};
use rbuild_cache::image::{
    media_types, Blob, Descriptor, ImageConfig, ImageName, Index, Manifest, Platform,
};
use rbuild_cache::Digest;

use rbuild_cache::layer::{apply_layer, ApplyOptions, WhiteoutMode};
use rbuild_cache::layer::{compress_layer, write_layer, ChangeSet, Compression, LayerOptions};

use crate::output::Destination;
use crate::state::State;

/// Points each name at the image (replacing what it named before).
pub fn tag(state: &State, image: &Descriptor, names: &[String]) -> anyhow::Result<()> {
    let record = ImageRecord {
        digest: image.digest,
        media_type: image.media_type.clone(),
        size: image.size,
        created_at: crate::timestamp::now().0,
    };
    for name in names {
        state.db.set_image(&store_name(name)?, &record)?;
    }
    Ok(())
}

/// The name the store keeps: `app` → `docker.io/library/app:latest`.
pub fn store_name(name: &str) -> anyhow::Result<String> {
    let parsed: ImageName = name.parse()?;
    if parsed.digest.is_some() {
        bail!("{name:?}: a name with a digest cannot tag an image in the local store");
    }
    Ok(parsed.full())
}

/// An OCI layout of the images; the first name of each image becomes its ref name.
pub fn write_oci(
    state: &State,
    images: &[(Descriptor, Vec<String>)],
    dest: &Destination,
    tar: bool,
) -> anyhow::Result<()> {
    let entries = images
        .iter()
        .map(|(descriptor, names)| match names.first() {
            Some(name) => LayoutImage::named(descriptor.clone(), name),
            None => Ok(LayoutImage::unnamed(descriptor.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !tar {
        let Destination::Path(dir) = dest else {
            bail!("an OCI layout directory needs a path, not stdout");
        };
        write_oci_dir(dir, &entries, &state.content)
            .with_context(|| format!("writing the OCI layout {}", dir.display()))?;
        return Ok(());
    }
    write_to(dest, |w| {
        write_oci_tar(w, &entries, &state.content)?;
        Ok(())
    })
}

/// A docker archive (`docker load` input); single-platform manifests only, as Docker's format.
pub fn write_docker(
    state: &State,
    images: &[(Descriptor, Vec<String>)],
    dest: &Destination,
) -> anyhow::Result<()> {
    let mut archive = Vec::new();
    for (descriptor, names) in images {
        let manifest = read_manifest(state, descriptor)?;
        let names = names
            .iter()
            .map(|n| Ok(n.parse::<ImageName>()?.familiar()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        archive.push(ArchiveImage { manifest, names });
    }
    write_to(dest, |w| {
        write_docker_archive(w, &archive, &state.content)?;
        Ok(())
    })
}

/// The part of an image the store holds: an index whose platforms were not all pulled becomes
/// an index of those that were (a new one, in the store); anything else is itself. Used by
/// `rbuild save`, which writes what is here, as `docker save` writes the platform it pulled.
pub fn present_part(state: &State, top: &Descriptor) -> anyhow::Result<Descriptor> {
    if !media_types::is_index(&top.media_type) {
        return Ok(top.clone());
    }
    let index: Blob<Index> = Blob::parse(state.content.read(&top.digest)?)?;
    let mut value = index.value().clone();
    let all = value.manifests.len();
    value
        .manifests
        .retain(|m| state.content.contains(&m.digest));
    if value.manifests.len() == all {
        return Ok(top.clone());
    }
    if value.manifests.is_empty() {
        bail!("{}: no platform of this index is in the store", top.digest);
    }
    let index = Blob::canonical(value)?;
    state.content.put(index.bytes())?;
    Ok(index.descriptor(media_types::OCI_INDEX))
}

/// The one platform's manifest of an image, for formats that hold one platform (a docker
/// archive): an index with one entry is that entry; with several, the error lists them.
pub fn single_platform(state: &State, top: &Descriptor) -> anyhow::Result<Descriptor> {
    if !media_types::is_index(&top.media_type) {
        return Ok(top.clone());
    }
    let index: Blob<Index> = Blob::parse(state.content.read(&top.digest)?)?;
    match index.value().manifests.as_slice() {
        [one] => Ok(one.clone()),
        many => {
            let platforms: Vec<String> = many
                .iter()
                .map(|m| {
                    m.platform
                        .as_ref()
                        .map_or("unknown".into(), |p| p.to_string())
                })
                .collect();
            bail!(
                "{} holds {} platforms ({}); a docker archive holds one: use the OCI format",
                top.digest,
                many.len(),
                platforms.join(", ")
            )
        }
    }
}

/// The manifest a single-platform descriptor names; an index is refused with the reason.
pub fn read_manifest(state: &State, descriptor: &Descriptor) -> anyhow::Result<Blob<Manifest>> {
    if media_types::is_index(&descriptor.media_type) {
        bail!(
            "{} is a multi-platform index; this output holds one platform (use type=oci)",
            descriptor.digest
        );
    }
    let bytes = state.content.read(&descriptor.digest)?;
    Ok(Blob::parse(bytes)?)
}

/// The rootfs: every layer applied in order onto `dir` (created if missing).
pub fn write_rootfs_dir(state: &State, descriptor: &Descriptor, dir: &Path) -> anyhow::Result<()> {
    let manifest = read_manifest(state, descriptor)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let options = ApplyOptions {
        whiteouts: WhiteoutMode::Apply,
        same_owner: rustix::process::geteuid().is_root(),
    };
    for layer in &manifest.value().layers {
        let blob = state.content.open_blob(&layer.digest)?;
        apply_layer(io::BufReader::new(blob), dir, &options, None)
            .with_context(|| format!("applying layer {} onto {}", layer.digest, dir.display()))?;
    }
    Ok(())
}

/// The rootfs as one tar: each image unpacked in the state root's scratch space (under its
/// directory: empty for one platform, `linux_arm64` … for several), then written in layer
/// order, so the tar is the same whatever the layers looked like.
pub fn write_rootfs_tar(
    state: &State,
    images: &[(Descriptor, PathBuf)],
    dest: &Destination,
) -> anyhow::Result<()> {
    let scratch = state.temp_dir()?;
    let rootfs = scratch.path().join("rootfs");
    for (descriptor, dir) in images {
        write_rootfs_dir(state, descriptor, &rootfs.join(dir))?;
    }
    let changes = ChangeSet::from_dir(&rootfs)?;
    let options = LayerOptions {
        compression: Compression::None,
        threads: 1,
        source_date_epoch: None,
    };
    write_to(dest, |w| {
        write_layer(&changes, w, &options)?;
        Ok(())
    })
}

/// An OCI index over `manifests`, one per platform, put in the content store.
pub fn put_index(
    state: &State,
    manifests: &[(Descriptor, Platform)],
) -> anyhow::Result<Descriptor> {
    let entries = manifests
        .iter()
        .map(|(manifest, platform)| {
            let mut entry = Descriptor::new(&manifest.media_type, manifest.digest, manifest.size);
            entry.platform = Some(platform.clone());
            entry
        })
        .collect();
    let index = Blob::canonical(Index::new_oci(entries))?;
    state.content.put(index.bytes())?;
    Ok(index.descriptor(media_types::OCI_INDEX))
}

/// Writes a file atomically (temp file beside it, renamed when complete) or streams to stdout.
/// A destination that is a device, FIFO or socket (`dest=/dev/null`, a named pipe) is written
/// into as it is: renaming over it would replace `/dev/null` itself with a regular file.
pub fn write_to(
    dest: &Destination,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match dest {
        Destination::Stdout => {
            let mut out = BufWriter::new(io::stdout().lock());
            write(&mut out)?;
            out.flush().context("writing to stdout")
        }
        Destination::Path(path) => match std::fs::metadata(path) {
            Ok(md) if !md.is_file() && !md.is_dir() => write_into_special(path, write),
            // Through a symlink to the file it names, as `docker build -o` writes, not over
            // the link.
            _ => write_file_atomically(&follow_links(path)?, write),
        },
    }
}

/// Where `path` leads through symlinks, even to a file not made yet (a dangling link names the
/// file to create).
fn follow_links(path: &Path) -> anyhow::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..rbuild_cache::layer::safe_path::MAX_SYMLINKS {
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)
                    .with_context(|| format!("reading the symlink {}", path.display()))?;
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(path),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

fn write_into_special(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write(&mut out).with_context(|| format!("writing {}", path.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

fn write_file_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A temp file is 0600; an output is an ordinary file (0644 less the umask).
    let temp = tempfile::Builder::new()
        .prefix(".rbuild-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, temp);
    write(&mut out).with_context(|| format!("writing {}", path.display()))?;
    let temp = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    temp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Opens `path` for reading, naming it in the error.
pub fn open_input(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// The image with its layers from index `from` on in `compression`, and the uncompressed ones
/// before it too (a base built here, stored as committed): each made once per diffID and
/// remembered. Other earlier layers stay as they are, as BuildKit leaves a base's blobs
/// unless forced (`from` 0). Returns the descriptor of the new manifest (the same one when
/// nothing changes).
pub fn recompressed(
    state: &State,
    descriptor: &Descriptor,
    compression: Compression,
    from: usize,
) -> anyhow::Result<Descriptor> {
    let manifest = read_manifest(state, descriptor)?;
    let config: Blob<ImageConfig> =
        Blob::parse(state.content.read(&manifest.value().config.digest)?)?;
    let diff_ids = &config.value().rootfs.diff_ids;
    let mut value = manifest.value().clone();
    let mut changed = false;
    for (i, (layer, diff_id)) in value.layers.iter_mut().zip(diff_ids).enumerate() {
        let has = media_types::layer_compression(&layer.media_type);
        let wanted = i >= from || has == Some(Compression::None);
        if !wanted || has == Some(compression) {
            continue;
        }
        let (digest, size) = layer_blob(state, &layer.digest, diff_id, compression)?;
        *layer = Descriptor::new(compression.oci_media_type(), digest, size);
        changed = true;
    }
    if !changed {
        return Ok(descriptor.clone());
    }
    let manifest = Blob::canonical(value)?;
    state.content.put(manifest.bytes())?;
    Ok(manifest.descriptor(media_types::OCI_MANIFEST))
}

/// The image (a manifest, or an index of them) as a push sends it: uncompressed layers gzip
/// (made once per layer and remembered), the others as they are. Index entries the store
/// does not hold (platforms never pulled) are left for the push to report.
pub fn for_push(state: &State, top: &Descriptor) -> anyhow::Result<Descriptor> {
    if !media_types::is_index(&top.media_type) {
        return recompressed(state, top, Compression::Gzip, usize::MAX);
    }
    let index: Blob<Index> = Blob::parse(state.content.read(&top.digest)?)?;
    let mut value = index.value().clone();
    let mut changed = false;
    for entry in &mut value.manifests {
        if !media_types::is_manifest(&entry.media_type) || !state.content.contains(&entry.digest) {
            continue;
        }
        let compressed = recompressed(state, entry, Compression::Gzip, usize::MAX)?;
        if compressed.digest != entry.digest {
            (entry.digest, entry.size) = (compressed.digest, compressed.size);
            entry.media_type = compressed.media_type;
            changed = true;
        }
    }
    if !changed {
        return Ok(top.clone());
    }
    let index = Blob::canonical(value)?;
    state.content.put(index.bytes())?;
    Ok(index.descriptor(media_types::OCI_INDEX))
}

/// The blob of layer `diff_id` in `compression`: remembered, or made from `source`.
pub(crate) fn layer_blob(
    state: &State,
    source: &Digest,
    diff_id: &Digest,
    compression: Compression,
) -> anyhow::Result<(Digest, u64)> {
    if let Some((blob, size)) = state.db.layer_blob(diff_id, compression.name())? {
        if state.content.contains(&blob) {
            return Ok((blob, size));
        }
    }
    let tar = decompress_auto(io::BufReader::new(state.content.open_blob(source)?))?;
    let mut writer = state.content.writer()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let info = compress_layer(tar, &mut writer, compression, threads)
        .with_context(|| format!("recompressing layer {source} as {compression}"))?;
    if info.diff_id != *diff_id {
        bail!(
            "layer {source} decompresses to {}, but the config says {diff_id}",
            info.diff_id
        );
    }
    let committed = writer.commit(Some(&info.blob_digest), Some(info.size))?;
    state.db.set_layer_blob(
        diff_id,
        compression.name(),
        &committed.digest,
        committed.size,
    )?;
    Ok((committed.digest, committed.size))
}
