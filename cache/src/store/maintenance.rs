//! Checking and tidying a store: re-hashing blobs, reaping temp files of dead writers.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rayon::prelude::*;
use rustix::fs::FlockOperation;

use super::{ContentStore, StoreError};
use crate::digest::{Digest, DigestHasher};

const HASH_BUFFER: usize = 1024 * 1024;

impl ContentStore {
    /// Re-hashes every blob and returns, sorted, the ones whose content does not match their
    /// name. Those are moved to `corrupt/` so they are no longer trusted (nor served).
    ///
    /// Run it under an exclusive state lock: a writer that re-adds a blob while fsck moves the
    /// bad copy away could otherwise lose its good copy with it.
    pub fn fsck(&self) -> Result<Vec<Digest>, StoreError> {
        let checked: Vec<Result<Option<Digest>, StoreError>> = self
            .blob_paths()?
            .par_iter()
            .map(|(digest, path)| match blob_matches(digest, path)? {
                true => Ok(None),
                false => Ok(Some(*digest)),
            })
            .collect();
        let mut bad = Vec::new();
        for result in checked {
            bad.extend(result?);
        }
        bad.sort();
        for digest in &bad {
            self.quarantine(digest)?;
        }
        Ok(bad)
    }

    /// Removes temp files in `ingest/` left by writers that died (crash, SIGKILL) and returns how
    /// many. Live writers hold an flock on their temp file, so their files are left alone.
    pub fn clean_ingest(&self) -> Result<usize, StoreError> {
        let dir = self.ingest_dir();
        let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && remove_if_abandoned(&entry.path())? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn quarantine(&self, digest: &Digest) -> Result<(), StoreError> {
        let corrupt = &self.paths.corrupt;
        fs::create_dir_all(corrupt).map_err(|e| StoreError::io(corrupt, e))?;
        let from = self.path(digest);
        fs::rename(&from, corrupt.join(digest.hex())).map_err(|e| StoreError::io(&from, e))?;
        super::writer::sync_dir(self.blobs_dir())
    }
}

/// Whether the file at `path` hashes to `digest`. A blob removed meanwhile (GC) is no longer
/// trusted by anyone, so it counts as fine; a non-file is not a blob and is skipped.
fn blob_matches(digest: &Digest, path: &Path) -> Result<bool, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(path, e))?;
    if !meta.is_file() {
        return Ok(true);
    }
    let (actual, _) = hash_reader(&mut file).map_err(|e| StoreError::io(path, e))?;
    Ok(actual == *digest)
}

pub(crate) fn hash_reader(reader: &mut impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = DigestHasher::default();
    let mut buf = vec![0u8; HASH_BUFFER];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Removes the temp file at `path` if no writer holds its lock. Returns whether it did.
fn remove_if_abandoned(path: &Path) -> Result<bool, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        // Committed or dropped since readdir.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(StoreError::io(path, e.into())),
    }
    // Only unlink the file we locked: if the name now points elsewhere, that is not ours to judge.
    let held = file.metadata().map_err(|e| StoreError::io(path, e))?;
    match fs::symlink_metadata(path) {
        Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(path, e)),
    }
    // Unlink while still holding the lock, so a writer that locks after us sees 0 links.
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path, e)),
    }
}
