//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`), as a directory or a tar.
//!
//! Names follow BuildKit's `type=oci` exporter (containerd's archive exporter): the index
//! descriptor of a named image carries the full normalized name in `io.containerd.image.name`
//! (`docker.io/library/app:1.0`) and only the tag in `org.opencontainers.image.ref.name`
//! (`1.0`), which is what `skopeo … oci:DIR:1.0` and `umoci --image DIR:1.0` look up.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::blobs::{invalid, read_small, BlobSink, BlobSource, VerifyingReader};
use super::media_types::{self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use super::tar_out::DetTar;
use super::{Blob, Descriptor, ImageError, ImageName, Index};
use crate::Digest;

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Manifests nest in indexes; deeper than this is a loop or an attack, not an image.
const MAX_DEPTH: usize = 8;
/// `index.json` is read whole; it lists images, it does not hold them.
const MAX_INDEX_SIZE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest}: {source}")]
    Blob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("reading OCI layout tar entry {entry:?}: {source}")]
    Tar {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("OCI layout {layout}: {reason}")]
    Invalid { layout: String, reason: String },
    #[error("no image {selector} in OCI layout {layout} (it has: {available})")]
    NotFound {
        selector: String,
        layout: String,
        available: String,
    },
    #[error(
        "OCI layout {layout} holds several images ({available}); choose one with :TAG or @DIGEST"
    )]
    Ambiguous { layout: String, available: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// One entry of `index.json`: a manifest or index and the names it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutImage {
    pub descriptor: Descriptor,
    /// `org.opencontainers.image.ref.name`: the tag (`1.0`).
    pub ref_name: Option<String>,
    /// `io.containerd.image.name`: the full name (`docker.io/library/app:1.0`).
    pub image_name: Option<String>,
}

impl LayoutImage {
    pub fn unnamed(descriptor: Descriptor) -> Self {
        LayoutImage {
            descriptor,
            ref_name: None,
            image_name: None,
        }
    }

    /// Named as BuildKit names it: full normalized name, and the tag as the ref name.
    pub fn named(descriptor: Descriptor, name: &str) -> Result<Self, ImageError> {
        let name: ImageName = name.parse()?;
        Ok(LayoutImage {
            descriptor,
            ref_name: name.tag_or_latest().map(str::to_string),
            image_name: Some(name.full()),
        })
    }

    /// The names move from the annotations into the fields, so that writing the image again
    /// gives the same index entry.
    fn from_index_entry(descriptor: &Descriptor) -> Self {
        let mut descriptor = descriptor.clone();
        LayoutImage {
            ref_name: descriptor.annotations.remove(ANNOTATION_REF_NAME),
            image_name: descriptor.annotations.remove(ANNOTATION_IMAGE_NAME),
            descriptor,
        }
    }

    /// The descriptor as `index.json` lists it, names as annotations.
    fn index_entry(&self) -> Descriptor {
        let mut d = self.descriptor.clone();
        if let Some(name) = &self.image_name {
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.to_string(), name.clone());
        }
        if let Some(tag) = &self.ref_name {
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_string(), tag.clone());
        }
        d
    }

    fn label(&self) -> String {
        match &self.ref_name {
            Some(r) => format!("{r} ({})", self.descriptor.digest),
            None => self.descriptor.digest.to_string(),
        }
    }
}

/// The `index.json` of a layout whose images are listed by [`OciLayout::images`].
pub fn index_for(images: &[LayoutImage]) -> Result<Blob<Index>, ImageError> {
    Blob::canonical(Index::new_oci(
        images.iter().map(LayoutImage::index_entry).collect(),
    ))
}

/// Every blob the images need (manifests, indexes, configs, layers) with its size, sorted.
fn collect_blobs(
    images: &[LayoutImage],
    source: &dyn BlobSource,
) -> Result<BTreeMap<Digest, u64>, LayoutError> {
    let mut out = BTreeMap::new();
    for image in images {
        walk(source, &image.descriptor, 0, &mut out)?;
    }
    Ok(out)
}

fn walk(
    source: &dyn BlobSource,
    desc: &Descriptor,
    depth: usize,
    out: &mut BTreeMap<Digest, u64>,
) -> Result<(), LayoutError> {
    if depth > MAX_DEPTH {
        return Err(LayoutError::Invalid {
            layout: "(being written)".to_string(),
            reason: format!("indexes nest deeper than {MAX_DEPTH} at {}", desc.digest),
        });
    }
    if out.insert(desc.digest, desc.size).is_some() {
        return Ok(());
    }
    let read = || {
        read_small(source, &desc.digest, desc.size).map_err(|source| LayoutError::Blob {
            digest: desc.digest,
            source,
        })
    };
    for child in super::children(&desc.media_type, &desc.digest, &read()?)? {
        if media_types::is_manifest(&child.media_type) || media_types::is_index(&child.media_type) {
            walk(source, &child, depth + 1, out)?;
        } else if child.urls.is_empty() || source.size(&child.digest).is_ok() {
            // Foreign layers live at their URLs; a layout may legitimately lack them.
            out.insert(child.digest, child.size);
        }
    }
    Ok(())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Streams a layout of `images` as a deterministic tar (sorted entries, mtime 0, root-owned):
/// the same images give the same bytes. Blobs are copied from `source` and verified on the way.
pub fn write_oci_tar<W: Write>(
    w: W,
    images: &[LayoutImage],
    source: &dyn BlobSource,
) -> Result<(W, Blob<Index>), LayoutError> {
    let blobs = collect_blobs(images, source)?;
    let index = index_for(images)?;
    let tar_err = |entry: &str| {
        let entry = entry.to_string();
        move |source| LayoutError::Tar { entry, source }
    };
    let mut tar = DetTar::new(w);
    // "blobs/…" < "index.json" < "oci-layout": this order is the sorted order.
    for (digest, size) in &blobs {
        let path = blob_path(digest);
        let data = source.open(digest).map_err(|source| LayoutError::Blob {
            digest: *digest,
            source,
        })?;
        let data = VerifyingReader::new(data, *digest, Some(*size));
        tar.file(&path, *size, data).map_err(tar_err(&path))?;
    }
    tar.bytes(INDEX_FILE, index.bytes())
        .map_err(tar_err(INDEX_FILE))?;
    tar.bytes(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)
        .map_err(tar_err(OCI_LAYOUT_FILE))?;
    let w = tar.finish().map_err(tar_err("end of archive"))?;
    Ok((w, index))
}

/// Writes a layout of `images` into directory `dir`, creating it. Blobs already present and
/// matching their digest are kept; every file is written to a temporary name and renamed, so
/// a crash leaves no half-written blob. `index.json` is replaced, not merged.
pub fn write_oci_dir(
    dir: &Path,
    images: &[LayoutImage],
    source: &dyn BlobSource,
) -> Result<Blob<Index>, LayoutError> {
    let blobs = collect_blobs(images, source)?;
    let index = index_for(images)?;
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(io_at(&blob_dir))?;
    for (digest, size) in &blobs {
        let path = dir.join(blob_path(digest));
        if existing_blob_matches(&path, digest, *size) {
            continue;
        }
        let data = source.open(digest).map_err(|source| LayoutError::Blob {
            digest: *digest,
            source,
        })?;
        write_atomic(&path, VerifyingReader::new(data, *digest, Some(*size)))?;
    }
    write_atomic(&dir.join(OCI_LAYOUT_FILE), OCI_LAYOUT_CONTENT)?;
    write_atomic(&dir.join(INDEX_FILE), index.bytes())?;
    Ok(index)
}

/// Whether `path` already holds the blob. Hashed, not judged by its size: a file of the
/// right length left by an interrupted copy or another tool must not stay in the layout.
fn existing_blob_matches(path: &Path, digest: &Digest, size: u64) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    if !file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == size)
    {
        return false;
    }
    let mut verified = VerifyingReader::new(io::BufReader::new(file), *digest, Some(size));
    io::copy(&mut verified, &mut io::sink()).is_ok()
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, mut data: impl Read) -> Result<(), LayoutError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        io::copy(&mut data, &mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_at(path))
}

/// The images of a layout, from its `index.json`.
#[derive(Clone, Debug)]
pub struct OciLayout {
    /// Where the layout came from, for error messages.
    pub origin: String,
    pub index: Blob<Index>,
}

/// Which image of a layout: `PATH`, `PATH:TAG` or `PATH@DIGEST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The only image; an error when there are several.
    Only,
    /// A ref name (tag) or full image name.
    Name(String),
    Digest(Digest),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Only => f.write_str("(any)"),
            Selector::Name(n) => write!(f, "{n:?}"),
            Selector::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// Splits `[oci-layout://]PATH[:TAG|@DIGEST]` as BuildKit's `oci-layout://` source does.
pub fn parse_layout_ref(s: &str) -> Result<(PathBuf, Selector), LayoutError> {
    let rest = s.strip_prefix("oci-layout://").unwrap_or(s);
    if let Some((path, digest)) = rest.rsplit_once('@') {
        let digest = digest.parse().map_err(|e| LayoutError::Invalid {
            layout: path.to_string(),
            reason: format!("bad digest in {s:?}: {e}"),
        })?;
        return Ok((PathBuf::from(path), Selector::Digest(digest)));
    }
    // A ':' inside the last path component starts the tag; one in a directory name does not.
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last..].rfind(':') {
        Some(i) if i > 0 => Ok((
            PathBuf::from(&rest[..last + i]),
            Selector::Name(rest[last + i + 1..].to_string()),
        )),
        _ => Ok((PathBuf::from(rest), Selector::Only)),
    }
}

impl OciLayout {
    fn parse(origin: String, layout_file: &[u8], index: Vec<u8>) -> Result<Self, LayoutError> {
        let version = serde_json::from_slice::<serde_json::Value>(layout_file)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
        if !version.as_deref().is_some_and(|v| v.starts_with("1.")) {
            return Err(LayoutError::Invalid {
                layout: origin,
                reason: format!("{OCI_LAYOUT_FILE} does not say imageLayoutVersion 1.x"),
            });
        }
        let index = Blob::parse(index)?;
        Ok(OciLayout { origin, index })
    }

    pub fn images(&self) -> Vec<LayoutImage> {
        let manifests = &self.index.value().manifests;
        manifests
            .iter()
            .map(LayoutImage::from_index_entry)
            .collect()
    }

    /// The image `selector` names; a name matches the ref name (tag) or the full image name.
    pub fn select(&self, selector: &Selector) -> Result<LayoutImage, LayoutError> {
        let images = self.images();
        let full = match selector {
            Selector::Name(n) => n.parse::<ImageName>().ok().map(|n| n.full()),
            _ => None,
        };
        let matching: Vec<&LayoutImage> = images
            .iter()
            .filter(|i| match selector {
                Selector::Only => true,
                Selector::Digest(d) => i.descriptor.digest == *d,
                Selector::Name(n) => {
                    i.ref_name.as_ref() == Some(n)
                        || i.image_name.as_ref() == Some(n)
                        || (full.is_some() && i.image_name == full)
                }
            })
            .collect();
        let available = || {
            images
                .iter()
                .map(|i| i.label())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match matching.as_slice() {
            [] => Err(LayoutError::NotFound {
                selector: selector.to_string(),
                layout: self.origin.clone(),
                available: available(),
            }),
            [first, rest @ ..]
                if rest
                    .iter()
                    .all(|i| i.descriptor.digest == first.descriptor.digest) =>
            {
                Ok((*first).clone())
            }
            _ => Err(LayoutError::Ambiguous {
                layout: self.origin.clone(),
                available: available(),
            }),
        }
    }
}

/// Reads a layout tar front to back. Blobs may come before `index.json` (they do in sorted
/// archives), so each is put into `sink` as it passes, verified against its file name; blobs
/// the sink already has are skipped. Other entries (`manifest.json` of a docker archive) are
/// ignored.
pub fn read_oci_tar<R: Read>(r: R, sink: &dyn BlobSink) -> Result<OciLayout, LayoutError> {
    let mut archive = tar::Archive::new(r);
    let tar_err = |entry: &str| {
        let entry = entry.to_string();
        move |source| LayoutError::Tar { entry, source }
    };
    let (mut layout_file, mut index) = (None, None);
    for entry in archive.entries().map_err(tar_err("(start)"))? {
        let mut entry = entry.map_err(tar_err("(next entry)"))?;
        let name = entry.path().map_err(tar_err("(path)"))?;
        let name = name.to_string_lossy();
        let name = name.trim_start_matches("./").to_string();
        let regular = entry.header().entry_type().is_file();
        match name.as_str() {
            OCI_LAYOUT_FILE => layout_file = Some(read_limited(&mut entry, &name)?),
            INDEX_FILE => index = Some(read_limited(&mut entry, &name)?),
            _ => {
                let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) else {
                    continue;
                };
                let digest: Digest = format!("sha256:{hex}")
                    .parse()
                    .map_err(|e| tar_err(&name)(invalid(format!("not a blob name: {e}"))))?;
                if !regular {
                    return Err(tar_err(&name)(invalid("blob is not a regular file".into())));
                }
                if !sink.contains(&digest) {
                    let size = entry.size();
                    sink.put_verified(&digest, Some(size), &mut entry)
                        .map_err(|source| LayoutError::Blob { digest, source })?;
                }
            }
        }
    }
    let missing = |file: &str| LayoutError::Invalid {
        layout: "(tar)".to_string(),
        reason: format!("no {file} in the archive"),
    };
    let layout_file = layout_file.ok_or_else(|| missing(OCI_LAYOUT_FILE))?;
    let index = index.ok_or_else(|| missing(INDEX_FILE))?;
    OciLayout::parse("(tar)".to_string(), &layout_file, index)
}

fn read_limited(entry: &mut impl Read, name: &str) -> Result<Vec<u8>, LayoutError> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_INDEX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LayoutError::Tar {
            entry: name.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_INDEX_SIZE {
        return Err(LayoutError::Tar {
            entry: name.to_string(),
            source: invalid(format!("larger than {MAX_INDEX_SIZE} bytes")),
        });
    }
    Ok(bytes)
}

/// A layout directory, readable as a [`BlobSource`].
#[derive(Clone, Debug)]
pub struct OciDir {
    root: PathBuf,
    layout: OciLayout,
}

impl OciDir {
    pub fn open(root: &Path) -> Result<Self, LayoutError> {
        // Bounded like the tar reader's: a huge file (or a FIFO, /dev/zero) is not an index.
        let read = |name: &str| {
            let path = root.join(name);
            let file = File::open(&path).map_err(|source| LayoutError::Io {
                path: path.clone(),
                source,
            })?;
            read_limited(&mut io::BufReader::new(file), &path.display().to_string())
        };
        let layout = OciLayout::parse(
            root.display().to_string(),
            &read(OCI_LAYOUT_FILE)?,
            read(INDEX_FILE)?,
        )?;
        Ok(OciDir {
            root: root.to_path_buf(),
            layout,
        })
    }

    pub fn layout(&self) -> &OciLayout {
        &self.layout
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(blob_path(digest))
    }
}

impl BlobSource for OciDir {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self.blob_path(digest))?))
    }

    fn size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(fs::metadata(self.blob_path(digest))?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_refs_split_like_buildkit() {
        let d = Digest::of(b"m");
        let cases = [
            ("oci-layout://dir", "dir", Selector::Only),
            (
                "oci-layout:///a/b:1.0",
                "/a/b",
                Selector::Name("1.0".into()),
            ),
            ("/a:b/c", "/a:b/c", Selector::Only),
            ("rel/dir:tag", "rel/dir", Selector::Name("tag".into())),
        ];
        for (input, path, sel) in cases {
            assert_eq!(parse_layout_ref(input).unwrap(), (PathBuf::from(path), sel));
        }
        assert_eq!(
            parse_layout_ref(&format!("oci-layout://x@{d}")).unwrap(),
            (PathBuf::from("x"), Selector::Digest(d))
        );
        assert!(parse_layout_ref("x@sha256:zz").is_err());
    }
}
