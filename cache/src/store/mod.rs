//! The content store: blobs by digest under `<root>/content`, written atomically and verified.
//!
//! Layout (under the directory given to [`ContentStore::open`]):
//! - `blobs/sha256/<hex>`: trusted blobs. A file here always hashes to its name: content only
//!   arrives by `rename` from `ingest/` after it was hashed, fsynced and checked.
//! - `ingest/`: temp files of writers in progress. Each is `flock`ed by its writer, so
//!   [`ContentStore::clean_ingest`] can tell live writers from ones a crash left behind.
//! - `corrupt/`: blobs [`ContentStore::fsck`] found not to match their name, kept for inspection.
//!
//! `ingest/` sits beside `blobs/` so both are on one filesystem and the rename is atomic.

mod image_blobs;
mod maintenance;
mod writer;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;

pub use writer::BlobWriter;

/// Errors of the content store. Each names the blob or path involved and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content store: {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("content store: blob {digest} not found")]
    NotFound { digest: Digest },
    #[error(
        "content store: content does not match: expected {expected} ({}), got {actual} ({actual_size} bytes)",
        describe_size(*.expected_size)
    )]
    DigestMismatch {
        expected: Digest,
        expected_size: Option<u64>,
        actual: Digest,
        actual_size: u64,
    },
    #[error(
        "content store: size of {digest} does not match: expected {expected_size} bytes, got {actual_size} bytes"
    )]
    SizeMismatch {
        digest: Digest,
        expected_size: u64,
        actual_size: u64,
    },
    #[error(
        "content store: content for {digest} is longer than the expected {expected_size} bytes"
    )]
    TooLong { digest: Digest, expected_size: u64 },
    #[error("content store: reading content for {digest}: {source}")]
    Read { digest: Digest, source: io::Error },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

fn describe_size(size: Option<u64>) -> String {
    match size {
        Some(size) => format!("{size} bytes"),
        None => "size not given".to_string(),
    }
}

/// A blob's name and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// Blobs by digest in one directory. Cheap to clone; clones share the directory.
#[derive(Clone, Debug)]
pub struct ContentStore {
    paths: Arc<Paths>,
}

#[derive(Debug)]
struct Paths {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    corrupt: PathBuf,
}

impl ContentStore {
    /// Opens the store in `dir`, creating its directories if they are missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ContentStore, StoreError> {
        let root = dir.into();
        let paths = Paths {
            blobs: root.join("blobs").join("sha256"),
            ingest: root.join("ingest"),
            corrupt: root.join("corrupt"),
            root,
        };
        for dir in [&paths.blobs, &paths.ingest] {
            fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        Ok(ContentStore {
            paths: Arc::new(paths),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.paths.root
    }

    /// Where in-progress writes live.
    pub fn ingest_dir(&self) -> &Path {
        &self.paths.ingest
    }

    /// Where trusted blobs live (`blobs/sha256`).
    pub fn blobs_dir(&self) -> &Path {
        &self.paths.blobs
    }

    /// Starts a new blob: a temp file in `ingest/` that [`BlobWriter::commit`] moves into place.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        BlobWriter::create(&self.paths.ingest, &self.paths.blobs)
    }

    /// Stores `bytes` (meant for small blobs: manifests, configs) and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut writer = self.writer()?;
        io::Write::write_all(&mut writer, bytes).map_err(|e| writer.write_error(e))?;
        Ok(writer.commit(Some(&digest), None)?.digest)
    }

    /// Copies `reader` in and verifies it is `expected` (and `size` bytes, if given) before
    /// trusting it. Returns the blob's size.
    ///
    /// If the blob is already present nothing is read: it was verified when it came in. With a
    /// `size`, reading stops one byte past it, so a stream longer than promised is not copied.
    pub fn put_verified(
        &self,
        expected: &Digest,
        size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<u64, StoreError> {
        if let Ok(existing) = self.size(expected) {
            return match size {
                Some(size) if size != existing => Err(StoreError::SizeMismatch {
                    digest: *expected,
                    expected_size: size,
                    actual_size: existing,
                }),
                _ => Ok(existing),
            };
        }
        let mut writer = self.writer()?;
        let copied = match size {
            Some(size) => io::copy(&mut reader.take(size.saturating_add(1)), &mut writer),
            None => io::copy(&mut reader, &mut writer),
        };
        copied.map_err(|source| StoreError::Read {
            digest: *expected,
            source,
        })?;
        if let Some(size) = size.filter(|&size| writer.written() > size) {
            // Dropping the writer removes its temp file.
            return Err(StoreError::TooLong {
                digest: *expected,
                expected_size: size,
            });
        }
        Ok(writer.commit(Some(expected), size)?.size)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Where the blob named `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.paths.blobs.join(digest.hex())
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| self.blob_error(digest, path, e))
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| self.blob_error(digest, path, e))
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.path(digest);
        let meta = fs::metadata(&path).map_err(|e| self.blob_error(digest, path, e))?;
        Ok(meta.len())
    }

    /// Every blob, sorted by digest. Names that are not a sha256 hex digest are skipped.
    pub fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let mut blobs = Vec::new();
        for (digest, path) in self.blob_paths()? {
            // A blob removed between readdir and stat is simply no longer listed.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => blobs.push(BlobInfo {
                    digest,
                    size: meta.len(),
                }),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        blobs.sort();
        Ok(blobs)
    }

    /// Removes a blob; `false` if it was not there.
    ///
    /// The directory is not fsynced: a crash that undoes the removal leaves a valid blob behind,
    /// which the next GC removes again, and GC removes many blobs at once.
    pub fn remove(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// The digest-named entries of `blobs/sha256` with their paths, in directory order.
    fn blob_paths(&self) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let dir = &self.paths.blobs;
        let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name();
            if let Some(digest) = name.to_str().and_then(digest_from_hex) {
                out.push((digest, entry.path()));
            }
        }
        Ok(out)
    }

    fn blob_error(&self, digest: &Digest, path: PathBuf, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound { digest: *digest }
        } else {
            StoreError::io(path, e)
        }
    }
}

/// The digest a blob file name stands for, if it is one (64 lowercase hex characters).
fn digest_from_hex(name: &str) -> Option<Digest> {
    format!("sha256:{name}").parse().ok()
}

#[cfg(test)]
mod tests;
