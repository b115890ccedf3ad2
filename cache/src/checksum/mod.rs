//! Content checksums of build-context files: the part of a COPY/ADD cache key that says what
//! the step read.
//!
//! An entry's digest covers what a copy carries over (path, type, permission bits, content,
//! link target, device number) and never what only tells whether a file was touched (mtime,
//! ctime, inode) or what a COPY replaces (the owner: context files are written as 0:0, or as
//! `--chown` says): a fresh checkout of the same tree, by any user, must give the same key.
//!
//! Reading every file on every build would make an unchanged context cost its whole size, so
//! a regular file's content digest is remembered in cache.db's `stat_cache` under its absolute
//! path with its (dev, ino, size, mtime, ctime). While those five still match, the file is not
//! opened: an unchanged context costs one `lstat` per file. Changed files are re-hashed in
//! parallel and their rows replaced in one transaction at the end.

mod entry;
mod scan;
mod stat_cache;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;

use crate::db::{Database, DbError};
use crate::digest::Digest;

pub use entry::FileKind;

/// A file whose mtime or ctime is this close to the moment it was hashed may still change
/// within the same timestamp tick without its stat changing, so its digest is used but not
/// remembered (git's "racy clean" problem). Coarse filesystems tick in whole seconds.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// One entry of a checksum: a path relative to the root, what it is, and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChecksum {
    /// Relative, without `.` components; the root itself is `.`.
    pub path: PathBuf,
    pub kind: FileKind,
    pub digest: Digest,
}

/// The checksum of a selection of files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentChecksum {
    /// Over every entry's path and digest, in path order.
    pub digest: Digest,
    /// Sorted by path, each path once.
    pub files: Vec<FileChecksum>,
    /// How many regular files were read because the stat cache could not vouch for them.
    pub hashed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("build context {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("path {path:?} of a COPY source selection: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("{path} is gone from the build context (removed while building?)")]
    Missing { path: PathBuf },
    #[error("lstat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} kept changing while it was being read ({attempts} attempts)")]
    Unstable { path: PathBuf, attempts: usize },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checksums `paths` (relative to `root`, as a COPY source selection resolved them: every file,
/// directory and symlink read; duplicates allowed). Entries are lstat'ed, never followed.
pub fn checksum(
    root: &Path,
    paths: &[PathBuf],
    db: &Database,
) -> Result<ContentChecksum, ChecksumError> {
    checksum_with(root, paths, db, RACY_WINDOW)
}

/// [`checksum`] with the racy window as a parameter, so tests need not wait it out.
fn checksum_with(
    root: &Path,
    paths: &[PathBuf],
    db: &Database,
    racy_window: Duration,
) -> Result<ContentChecksum, ChecksumError> {
    // Canonical, so that one context reached by different spellings shares its cache rows.
    let root = std::fs::canonicalize(root).map_err(|source| ChecksumError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let paths = normalize(paths)?;
    let cached = db.stat_rows_under(&root)?;
    let scanned = paths
        .par_iter()
        .map(|rel| scan::scan(&root, rel, &cached, racy_window))
        .collect::<Result<Vec<_>, _>>()?;
    let selected: HashSet<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut forget = stat_cache::stale_rows(&root, &selected, &cached);
    let mut remember = Vec::new();
    let mut files = Vec::with_capacity(scanned.len());
    let mut hashed = 0;
    for s in scanned {
        hashed += usize::from(s.hashed);
        match s.row {
            scan::RowUpdate::Keep => {}
            scan::RowUpdate::Store(key, row) => remember.push((key, row)),
            scan::RowUpdate::Forget(key) => forget.push(key),
        }
        files.push(s.file);
    }
    db.update_stat_rows(&remember, &forget)?;
    Ok(ContentChecksum {
        digest: entry::combined_digest(&files),
        files,
        hashed,
    })
}

/// The selection made relative and `.`-free, sorted and without duplicates. `..` and absolute
/// paths are refused: the selection was resolved inside the root, so either is a caller bug.
fn normalize(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ChecksumError> {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let invalid = |reason| ChecksumError::InvalidPath {
            path: path.clone(),
            reason,
        };
        let mut rel = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(name) => rel.push(name),
                Component::CurDir => {}
                Component::ParentDir => return Err(invalid("\"..\" is not allowed")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid("it must be relative to the build context"))
                }
            }
        }
        if rel.as_os_str().is_empty() {
            rel.push(".");
        }
        out.push(rel);
    }
    out.sort();
    out.dedup();
    Ok(out)
}
