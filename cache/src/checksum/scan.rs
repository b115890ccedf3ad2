//! One entry of a selection: lstat it, then take a regular file's content digest from the stat
//! cache or by reading the file.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::entry::{entry_digest, Attrs, Detail, FileKind};
use super::stat_cache::{row_key, StatKey, StatRow, StatRows};
use super::{ChecksumError, FileChecksum};
use crate::digest::{Digest, DigestHasher};

/// Looks at an entry that keeps changing under the reader this many times before giving up.
const ATTEMPTS: usize = 3;

/// Per thread, so hashing many small files does not allocate a buffer each.
const HASH_BUFFER: usize = 256 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; HASH_BUFFER]);
}

/// An entry, whether its content was read, and what its stat-cache row needs.
pub(super) struct Scanned {
    pub file: FileChecksum,
    pub hashed: bool,
    pub row: RowUpdate,
}

pub(super) enum RowUpdate {
    Keep,
    /// Hashed and settled: remember it.
    Store(Vec<u8>, StatRow),
    /// The row can no longer be right (not a regular file now, or stale and too fresh to
    /// replace): drop it.
    Forget(Vec<u8>),
}

/// Checksums the entry at `rel` below `root`, looking again if it changes while read.
pub(super) fn scan(
    root: &Path,
    rel: &Path,
    cached: &StatRows,
    racy_window: Duration,
) -> Result<Scanned, ChecksumError> {
    let abs = match rel == Path::new(".") {
        true => root.to_path_buf(),
        false => root.join(rel),
    };
    let row = cached.get(row_key(&abs));
    for _ in 0..ATTEMPTS {
        let meta = lstat(&abs)?;
        let kind = FileKind::of(meta.file_type());
        let Some((detail, hashed, row)) = detail(&abs, kind, &meta, row, racy_window)? else {
            continue;
        };
        let digest = entry_digest(rel, kind, Attrs::of(&meta), detail);
        let file = FileChecksum {
            path: rel.to_path_buf(),
            kind,
            digest,
        };
        return Ok(Scanned { file, hashed, row });
    }
    Err(ChecksumError::Unstable {
        path: abs,
        attempts: ATTEMPTS,
    })
}

/// What the entry holds beyond its metadata, whether a file was read, and what its row needs;
/// `None` if it changed while looked at.
fn detail(
    abs: &Path,
    kind: FileKind,
    meta: &Metadata,
    row: Option<&StatRow>,
    racy_window: Duration,
) -> Result<Option<(Detail, bool, RowUpdate)>, ChecksumError> {
    // A row for what is no longer a regular file can never match again.
    let update = || {
        row.map_or(RowUpdate::Keep, |_| {
            RowUpdate::Forget(row_key(abs).to_vec())
        })
    };
    let no_content = |detail| Some((detail, false, update()));
    Ok(match kind {
        FileKind::Regular => regular(abs, meta, row, racy_window)?,
        FileKind::Symlink => read_link(abs)?.and_then(|target| no_content(Detail::Target(target))),
        FileKind::CharDevice | FileKind::BlockDevice => no_content(Detail::Device(meta.rdev())),
        FileKind::Dir | FileKind::Fifo | FileKind::Socket => no_content(Detail::None),
    })
}

fn lstat(abs: &Path) -> Result<Metadata, ChecksumError> {
    std::fs::symlink_metadata(abs).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ChecksumError::Missing {
            path: abs.to_path_buf(),
        },
        _ => ChecksumError::Stat {
            path: abs.to_path_buf(),
            source,
        },
    })
}

/// A symlink's target; `None` if it is no longer a symlink (look again).
fn read_link(abs: &Path) -> Result<Option<OsString>, ChecksumError> {
    match rustix::fs::readlink(abs, Vec::new()) {
        Ok(target) => Ok(Some(OsString::from_vec(target.into_bytes()))),
        Err(Errno::INVAL | Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(read_error(abs, e.into())),
    }
}

/// A regular file's content digest, whether it was read, and what its row needs; `None` if
/// the file changed while read (look again).
fn regular(
    abs: &Path,
    meta: &Metadata,
    row: Option<&StatRow>,
    racy_window: Duration,
) -> Result<Option<(Detail, bool, RowUpdate)>, ChecksumError> {
    let stat = StatKey::of(meta);
    if let Some(row) = row.filter(|row| row.stat == stat) {
        return Ok(Some((Detail::Content(row.digest), false, RowUpdate::Keep)));
    }
    let Some(digest) = hash_file(abs, &stat)? else {
        return Ok(None);
    };
    let key = row_key(abs).to_vec();
    let update = match (is_racy(&stat, racy_window), row) {
        (false, _) => RowUpdate::Store(key, StatRow { stat, digest }),
        (true, Some(_)) => RowUpdate::Forget(key),
        (true, None) => RowUpdate::Keep,
    };
    Ok(Some((Detail::Content(digest), true, update)))
}

/// Whether the file was changed so recently that another change within the same timestamp
/// tick would leave its stat as it is now. A future time counts too: the clock cannot be
/// trusted to tell. ctime is checked beside mtime since tools that restore mtimes (tar,
/// rsync, reproducible-build mtimes) leave only ctime saying when the content changed.
fn is_racy(stat: &StatKey, racy_window: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let window = i64::try_from(racy_window.as_nanos()).unwrap_or(i64::MAX);
    stat.newest_ns() > now.saturating_sub(window)
}

/// The sha256 of the content of the file at `abs`, if it stays the file `stat` describes from
/// open to end of read; `None` if it was replaced or changed meanwhile.
fn hash_file(abs: &Path, stat: &StatKey) -> Result<Option<Digest>, ChecksumError> {
    // NOFOLLOW: a file swapped for a symlink since the lstat must not be followed out of the
    // context. NONBLOCK: nor may one swapped for a fifo hang the open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let mut file = match rustix::fs::open(abs, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::LOOP | Errno::NOENT | Errno::NOTDIR | Errno::NXIO) => return Ok(None),
        Err(e) => return Err(read_error(abs, e.into())),
    };
    let fstat = |file: &File| file.metadata().map_err(|e| read_error(abs, e));
    // Checked before reading: a device swapped in here could be endless.
    let before = fstat(&file)?;
    if !before.is_file() || StatKey::of(&before) != *stat {
        return Ok(None);
    }
    let digest = hash_content(&mut file).map_err(|e| read_error(abs, e))?;
    Ok((StatKey::of(&fstat(&file)?) == *stat).then_some(digest))
}

/// Streams `file` through sha256.
fn hash_content(file: &mut File) -> io::Result<Digest> {
    BUFFER.with_borrow_mut(|buf| {
        let mut hasher = DigestHasher::default();
        loop {
            match file.read(buf) {
                Ok(0) => return Ok(hasher.finish().0),
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })
}

fn read_error(abs: &Path, source: io::Error) -> ChecksumError {
    ChecksumError::Read {
        path: abs.to_path_buf(),
        source,
    }
}
