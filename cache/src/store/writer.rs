//! Streaming a new blob in: temp file in `ingest/`, hashed as written, renamed into `blobs/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

use super::{BlobInfo, StoreError};
use crate::digest::{Digest, DigestHasher};

/// Buffered so callers writing small pieces (tar headers) do not make one syscall each.
const WRITE_BUFFER: usize = 256 * 1024;

/// Attempts to find a fresh temp name before giving up; a clash needs a reused pid, the same
/// counter value and the same nanosecond, so more than one retry means something else is wrong.
const NAME_ATTEMPTS: usize = 16;

/// A blob being written. Hashes what passes through, so the content is never re-read to name it.
///
/// Dropping a writer without [`commit`](BlobWriter::commit) removes its temp file.
pub struct BlobWriter {
    file: BufWriter<File>,
    temp_path: PathBuf,
    blobs_dir: PathBuf,
    hasher: DigestHasher,
    /// Set once the temp file has been renamed into `blobs/`: nothing is left for Drop to remove.
    committed: bool,
}

impl BlobWriter {
    pub(super) fn create(ingest_dir: &Path, blobs_dir: &Path) -> Result<BlobWriter, StoreError> {
        let (file, temp_path) = create_locked_temp(ingest_dir)?;
        Ok(BlobWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            temp_path,
            blobs_dir: blobs_dir.to_path_buf(),
            hasher: DigestHasher::default(),
            committed: false,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// The temp file the content goes to until it is committed.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Checks the content against `expected` and `expected_size` (when given), makes it
    /// durable and moves it to `blobs/sha256/<hex>`.
    ///
    /// If the blob already exists the temp file is dropped: both copies hash to the same name,
    /// so concurrent writers of one blob all succeed. On a mismatch the temp file is removed and
    /// the error names the expected and actual digest or size.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobInfo, StoreError> {
        let (digest, size) = std::mem::take(&mut self.hasher).finish();
        check_expected(digest, size, expected, expected_size)?;
        self.make_durable()?;
        let target = self.blobs_dir.join(digest.hex());
        if !target.is_file() {
            fs::rename(&self.temp_path, &target).map_err(|e| StoreError::io(&self.temp_path, e))?;
            self.committed = true;
        }
        // Also when another writer won the race: it may not have synced the directory yet, and
        // our caller is told the blob is durable.
        sync_dir(&self.blobs_dir)?;
        Ok(BlobInfo { digest, size })
    }

    /// Flushes and fsyncs the temp file, so that the name never points at content the disk
    /// does not have yet.
    fn make_durable(&mut self) -> Result<(), StoreError> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_all())
            .map_err(|e| StoreError::io(&self.temp_path, e))
    }

    /// An I/O error while writing, naming the temp file.
    pub(super) fn write_error(&self, e: io::Error) -> StoreError {
        StoreError::io(&self.temp_path, e)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: what is left behind is reaped by clean_ingest once our lock is gone.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

fn check_expected(
    actual: Digest,
    actual_size: u64,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
) -> Result<(), StoreError> {
    if let Some(expected) = expected.filter(|&&e| e != actual) {
        return Err(StoreError::DigestMismatch {
            expected: *expected,
            expected_size,
            actual,
            actual_size,
        });
    }
    match expected_size {
        Some(expected_size) if expected_size != actual_size => Err(StoreError::SizeMismatch {
            digest: expected.copied().unwrap_or(actual),
            expected_size,
            actual_size,
        }),
        _ => Ok(()),
    }
}

/// Creates a temp file with a name no other thread or process uses, holding an exclusive flock
/// on it for as long as the file stays open: the lock is what tells `clean_ingest` we are alive.
fn create_locked_temp(ingest_dir: &Path) -> Result<(File, PathBuf), StoreError> {
    for _ in 0..NAME_ATTEMPTS {
        let path = ingest_dir.join(temp_name());
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io(path, e)),
        };
        lock_exclusive(&file).map_err(|e| StoreError::io(&path, e))?;
        // clean_ingest may have taken the file for abandoned between our create and our flock
        // and unlinked it; then start over with a new name instead of writing into the void.
        let links = rustix::fs::fstat(&file)
            .map_err(|e| StoreError::io(&path, e.into()))?
            .st_nlink;
        if links > 0 {
            return Ok((file, path));
        }
    }
    Err(StoreError::io(
        ingest_dir,
        io::Error::other("could not create a temp file with a fresh name"),
    ))
}

/// Blocks until the exclusive lock is ours (only clean_ingest ever holds it briefly).
fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        match rustix::fs::flock(file, FlockOperation::LockExclusive) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// `<pid>-<counter>-<nanos>.tmp`: the pid separates processes, the counter threads of one
/// process, and the time a later process that reuses the pid of a killed one.
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{}-{sequence}-{nanos:x}.tmp", std::process::id())
}

/// Makes a rename in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}
