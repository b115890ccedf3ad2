//! Applying a layer (tar, gzip or zstd) onto a directory: the rootfs of a build step, or one
//! overlayfs lowerdir per layer.
//!
//! The layer is untrusted: every path is resolved inside the target by [`super::safe_path`], and
//! the diffID is computed over exactly the bytes that were extracted, so a caller that passes the
//! expected diffID knows that what is on disk is what the image names.

mod ext_limit;
mod extract;
mod meta;
mod whiteout;

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, RenameFlags};
use rustix::io::Errno;

use super::detect::{decoder, sniff};
use super::safe_path::{remove_all_at, PathError, Root};
use super::Compression;
use crate::digest::{Digest, HashingReader};
use extract::Extractor;

/// How OCI whiteouts (`.wh.name`, `.wh..wh..opq`) are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Target is a merged rootfs: `.wh.name` deletes `name`, `.wh..wh..opq` empties the
    /// directory's existing (lower) contents.
    Apply,
    /// Target is one overlayfs lowerdir (a per-layer snapshot): `.wh.name` becomes a 0/0 char
    /// device `name`, `.wh..wh..opq` sets xattr `trusted.overlay.opaque=y` on the dir.
    Overlay,
}

#[derive(Clone, Debug)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Set owners (lchown) from the headers' numeric uid/gid; true when running as root.
    pub same_owner: bool,
}

impl ApplyOptions {
    /// Owners are kept when this process may set them (it is root).
    pub fn for_current_user(whiteouts: WhiteoutMode) -> Self {
        ApplyOptions {
            whiteouts,
            same_owner: rustix::process::geteuid().is_root(),
        }
    }
}

/// What applying a layer found.
#[derive(Clone, Debug)]
pub struct Applied {
    /// sha256 of the whole uncompressed stream, end blocks and padding included.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub compression: Compression,
    /// Things the target filesystem could not hold but that do not make the result wrong
    /// enough to fail (see [`ApplyWarning`]); libraries do not print, callers report these.
    pub warnings: Vec<ApplyWarning>,
}

/// An xattr that was not set: the filesystem does not support it (ENOTSUP), or it is in a
/// privileged namespace (`security.*`, `trusted.*`) this process may not write (EPERM), or it is
/// a `user.*` xattr on a symlink or device, which Linux never allows. Other xattr failures are
/// errors, since they would silently make the rootfs differ from the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyWarning {
    pub entry: String,
    pub message: String,
}

impl fmt::Display for ApplyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer entry {:?}: {}", self.entry, self.message)
    }
}

/// Errors of applying a layer; each names the entry (or the stream position) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("layer is not a tar, gzip or zstd stream (it starts with {start})")]
    UnknownFormat { start: String },
    #[error("reading the layer's first bytes: {0}")]
    Sniff(#[source] io::Error),
    #[error("opening the {compression} decoder: {source}")]
    Decoder {
        compression: Compression,
        source: io::Error,
    },
    #[error("target directory {path:?}: {source}")]
    Target { path: PathBuf, source: io::Error },
    #[error("destination {0:?} already exists")]
    DestExists(PathBuf),
    #[error("layer entry {entry:?} refused: {cause}")]
    Refused { entry: String, cause: PathError },
    #[error("layer truncated at entry {entry}: {cause}")]
    Truncated { entry: String, cause: String },
    #[error("layer corrupt at entry {entry}: {cause}")]
    Corrupt { entry: String, cause: io::Error },
    #[error("layer entry {entry:?}: bad header field: {cause}")]
    BadHeader { entry: String, cause: String },
    #[error("layer entry {entry:?}: unsupported entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("layer entry {entry:?}: {op}: {cause}")]
    Io {
        entry: String,
        op: String,
        cause: io::Error,
    },
    #[error("layer diffID mismatch: expected {expected}, the stream is {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("moving the extracted layer to {dest:?}: {source}")]
    Commit { dest: PathBuf, source: io::Error },
}

impl ApplyError {
    /// A failure to read the stream: cut short, or bytes that do not decode.
    pub(crate) fn stream(entry: String, cause: io::Error) -> Self {
        let msg = cause.to_string();
        let short = cause.kind() == io::ErrorKind::UnexpectedEof
            || msg.contains("failed to read entire block")
            || msg.contains("unexpected EOF")
            || msg.contains("no future member found");
        if short {
            ApplyError::Truncated { entry, cause: msg }
        } else {
            ApplyError::Corrupt { entry, cause }
        }
    }

    pub(crate) fn io(entry: &str, op: impl Into<String>, cause: impl Into<io::Error>) -> Self {
        ApplyError::Io {
            entry: entry.to_string(),
            op: op.into(),
            cause: cause.into(),
        }
    }

    pub(crate) fn refused(entry: &str, cause: PathError) -> Self {
        ApplyError::Refused {
            entry: entry.to_string(),
            cause,
        }
    }
}

/// Detects gzip / zstd / plain tar from the first bytes.
pub use super::detect::detect_compression;

/// Extracts a layer (any compression, detected) onto an existing directory.
///
/// The diffID is computed over the whole uncompressed stream (read to EOF, including padding
/// after the end blocks); if `expected_diff_id` is given and differs → error. The target is
/// changed in place, so after an error it may be half-applied: use [`unpack_layer`] when a
/// failure must leave nothing behind.
pub fn apply_layer(
    layer: impl Read,
    target: &Path,
    opts: &ApplyOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<Applied, ApplyError> {
    let (compression, start, stream) = sniff(layer).map_err(ApplyError::Sniff)?;
    let compression = compression.ok_or_else(|| ApplyError::UnknownFormat {
        start: describe_start(&start),
    })?;
    let decoded = decoder(compression, stream).map_err(|source| ApplyError::Decoder {
        compression,
        source,
    })?;
    let mut hashing = HashingReader::new(decoded);
    let root = Root::open(target).map_err(|source| ApplyError::Target {
        path: target.to_path_buf(),
        source,
    })?;
    let mut ex = Extractor::new(root, opts);
    let last = ex.extract_all(&mut hashing)?;
    // Tar writers pad to a record size after the end blocks; those bytes are part of the diffID.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| ApplyError::stream(format!("{last} (reading past the end blocks)"), e))?;
    let warnings = ex.finish()?;
    let (_, diff_id, uncompressed_size) = hashing.finish();
    if let Some(expected) = expected_diff_id {
        if *expected != diff_id {
            return Err(ApplyError::DiffIdMismatch {
                expected: *expected,
                actual: diff_id,
            });
        }
    }
    Ok(Applied {
        diff_id,
        uncompressed_size,
        compression,
        warnings,
    })
}

fn describe_start(start: &[u8]) -> String {
    if start.is_empty() {
        "nothing: it is empty".to_string()
    } else {
        format!("bytes {}", hex::encode(start))
    }
}

/// Extracts into a fresh temp dir beside `dest` and renames it to `dest` only on success; on
/// any error the temp dir is removed, so nothing half-extracted is ever at `dest` for a later
/// build to trust. `dest` must not exist.
pub fn unpack_layer(
    layer: impl Read,
    dest: &Path,
    opts: &ApplyOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<Applied, ApplyError> {
    if dest.symlink_metadata().is_ok() {
        return Err(ApplyError::DestExists(dest.to_path_buf()));
    }
    let tmp = temp_beside(dest)?;
    let result = apply_layer(layer, &tmp, opts, expected_diff_id)
        .and_then(|applied| commit(&tmp, dest).map(|()| applied));
    if result.is_err() {
        remove_tree(&tmp);
    }
    result
}

/// A new empty directory next to `dest` (same filesystem, so the final rename is atomic),
/// named so that a crash leaves something recognizably rbuild's to clean up.
fn temp_beside(dest: &Path) -> Result<PathBuf, ApplyError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target_err = |source| ApplyError::Target {
        path: dest.to_path_buf(),
        source,
    };
    let name = dest
        .file_name()
        .ok_or_else(|| target_err(io::Error::other("destination has no file name")))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(
        ".{}.rbuild-tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir(&tmp).map_err(target_err)?;
    // The root's mode must not depend on the umask; a `./` entry in the layer overrides it.
    rustix::fs::chmod(&tmp, Mode::from_raw_mode(0o755)).map_err(|e| target_err(e.into()))?;
    Ok(tmp)
}

/// Makes the tree durable, then renames it into place without replacing anything that
/// appeared at `dest` meanwhile (another rbuild process unpacking the same layer).
fn commit(tmp: &Path, dest: &Path) -> Result<(), ApplyError> {
    let err = |e: Errno| ApplyError::Commit {
        dest: dest.to_path_buf(),
        source: e.into(),
    };
    let dir = rustix::fs::open(tmp, rustix::fs::OFlags::RDONLY, Mode::empty()).map_err(err)?;
    // One syncfs instead of an fsync per file: a crash after the rename must not leave a dest
    // with empty files that a later build trusts.
    rustix::fs::syncfs(&dir).map_err(err)?;
    let cwd = rustix::fs::CWD;
    match rustix::fs::renameat_with(cwd, tmp, cwd, dest, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => {
            return Err(ApplyError::DestExists(dest.to_path_buf()))
        }
        // Filesystems without RENAME_NOREPLACE: check, then plain rename.
        Err(Errno::INVAL) if dest.symlink_metadata().is_err() => std::fs::rename(tmp, dest)
            .map_err(|source| ApplyError::Commit {
                dest: dest.to_path_buf(),
                source,
            })?,
        Err(e) => return Err(err(e)),
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(p) = rustix::fs::open(parent, rustix::fs::OFlags::RDONLY, Mode::empty()) {
            let _ = rustix::fs::fsync(p);
        }
    }
    Ok(())
}

/// Best-effort removal of a failed extraction; the error that caused it is what matters.
fn remove_tree(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    if let Ok(dir) = rustix::fs::open(parent, rustix::fs::OFlags::PATH, Mode::empty()) {
        let _ = remove_all_at(std::os::fd::AsFd::as_fd(&dir), name);
    }
}
