//! The `stat_cache` table: a regular file's content digest by absolute path, trusted while the
//! file's stat identity (dev, ino, size, mtime, ctime) is still the one it was hashed with.
//!
//! A checksum reads every row under its root in one query and writes what changed in one
//! transaction at the end, so a build neither runs a query per file nor holds the write lock
//! while it hashes.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rayon::prelude::*;
use rusqlite::{params, TransactionBehavior};

use crate::db::{Database, DbError};
use crate::digest::Digest;

/// What must not have changed for a remembered content digest to still hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl StatKey {
    pub(super) fn of(meta: &Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The later of mtime and ctime, in ns since the epoch.
    pub(super) fn newest_ns(&self) -> i64 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

/// Saturating: times past the year 2262 all look alike, which only costs a missed change if
/// ctime (which only the kernel sets, to "now") did not move either.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A row: the stat a file was hashed with, and its content digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StatRow {
    pub stat: StatKey,
    pub digest: Digest,
}

/// Rows by absolute path (its bytes, as stored).
pub(super) type StatRows = HashMap<Vec<u8>, StatRow>;

/// The BLOB range holding every path below `root`: from `root/` up to `root0` ('0' is the
/// byte after '/'), so that `root2/x` is not included.
fn range(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let base = root.as_os_str().as_bytes();
    let base = base.strip_suffix(b"/").unwrap_or(base);
    ([base, b"/"].concat(), [base, b"0"].concat())
}

/// The row key of the absolute path `abs`.
pub(super) fn row_key(abs: &Path) -> &[u8] {
    abs.as_os_str().as_bytes()
}

impl Database {
    /// Every stat-cache row for a path below `root`.
    pub(super) fn stat_rows_under(&self, root: &Path) -> Result<StatRows, DbError> {
        type Raw = (Vec<u8>, [i64; 5], String);
        let (lo, hi) = range(root);
        let raw: Vec<Raw> = {
            let fail = |e| self.error("read stat cache", e);
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM stat_cache
                     WHERE path >= ?1 AND path < ?2",
                )
                .map_err(fail)?;
            let rows = stmt
                .query_map(params![lo, hi], |row| {
                    let ints = [
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ];
                    Ok((row.get(0)?, ints, row.get(6)?))
                })
                .map_err(fail)?;
            rows.collect::<Result<_, _>>().map_err(fail)?
        };
        raw.into_iter()
            .map(|(path, [dev, ino, size, mtime_ns, ctime_ns], digest)| {
                // dev, ino and size were stored bit-cast to SQLite's i64; only equality matters.
                let stat = StatKey {
                    dev: dev as u64,
                    ino: ino as u64,
                    size: size as u64,
                    mtime_ns,
                    ctime_ns,
                };
                let digest = self.digest("stat_cache.digest", digest)?;
                Ok((path, StatRow { stat, digest }))
            })
            .collect()
    }

    /// Replaces the rows in `store` and deletes those in `forget`, in one transaction. Takes no
    /// write lock when there is nothing to write, as for an unchanged context.
    pub(super) fn update_stat_rows(
        &self,
        store: &[(Vec<u8>, StatRow)],
        forget: &[Vec<u8>],
    ) -> Result<(), DbError> {
        if store.is_empty() && forget.is_empty() {
            return Ok(());
        }
        let fail = |e| self.error("update stat cache", e);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR REPLACE INTO stat_cache
                     (path, dev, ino, size, mtime_ns, ctime_ns, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(fail)?;
            for (path, StatRow { stat: s, digest }) in store {
                let (dev, ino, size) = (s.dev as i64, s.ino as i64, s.size as i64);
                insert
                    .execute(params![
                        path,
                        dev,
                        ino,
                        size,
                        s.mtime_ns,
                        s.ctime_ns,
                        digest.to_string()
                    ])
                    .map_err(fail)?;
            }
            let mut delete = tx
                .prepare("DELETE FROM stat_cache WHERE path = ?1")
                .map_err(fail)?;
            for path in forget {
                delete.execute([path]).map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }
}

/// Rows of files that are gone: below a selected directory, no longer in the selection, and
/// no longer a regular file by lstat. Only rows a selection covers are looked at, so a small
/// COPY in a large context does not stat the rest of it; the others wait for a selection that
/// covers them.
pub(super) fn stale_rows(
    root: &Path,
    selected: &HashSet<&Path>,
    cached: &StatRows,
) -> Vec<Vec<u8>> {
    let (lo, _) = range(root);
    let whole_root = selected.contains(Path::new("."));
    let candidates: Vec<&Vec<u8>> = cached
        .keys()
        .filter(|abs| {
            let Some(rel) = abs.strip_prefix(lo.as_slice()) else {
                return false;
            };
            let rel = Path::new(OsStr::from_bytes(rel));
            !selected.contains(rel)
                && (whole_root || rel.ancestors().skip(1).any(|a| selected.contains(a)))
        })
        .collect();
    candidates
        .into_par_iter()
        .filter(|abs| is_gone(Path::new(OsStr::from_bytes(abs))))
        .cloned()
        .collect()
}

/// Whether `abs` is no longer a regular file. An lstat that fails otherwise (permissions)
/// says nothing, so the row stays.
fn is_gone(abs: &Path) -> bool {
    match fs::symlink_metadata(abs) {
        Ok(meta) => !meta.is_file(),
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
    }
}
