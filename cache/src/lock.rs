//! The state-root lock: many builds share a root, while prune/GC needs it alone.
//!
//! An `flock` on `<root>/lock`. Builds and loads take it shared; prune and GC take it exclusive,
//! which waits for every shared holder to finish and keeps new ones out meanwhile. The kernel
//! drops the lock when the holder's file closes, so a crashed rbuild never leaves the root locked.
//!
//! Locks belong to the open file, not the process: two `StateLock`s in one process conflict just
//! as they would across processes. A shared lock is never upgraded in place (flock would release
//! it first, letting GC in between); drop it and take an exclusive one instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock on a state root; released on drop.
#[derive(Debug)]
pub struct StateLock {
    // Held only for its open file description, which carries the flock.
    _file: File,
    path: PathBuf,
    mode: LockMode,
}

impl StateLock {
    /// Waits for and takes a shared lock (builds, loads: many at once).
    pub fn shared(path: impl AsRef<Path>) -> Result<StateLock, LockError> {
        Self::acquire(path.as_ref(), LockMode::Shared)
    }

    /// Waits for and takes the exclusive lock (prune, GC): waits until no one holds it shared.
    pub fn exclusive(path: impl AsRef<Path>) -> Result<StateLock, LockError> {
        Self::acquire(path.as_ref(), LockMode::Exclusive)
    }

    /// Takes a shared lock if that is possible right now; `None` if an exclusive holder exists.
    pub fn try_shared(path: impl AsRef<Path>) -> Result<Option<StateLock>, LockError> {
        Self::try_acquire(path.as_ref(), LockMode::Shared)
    }

    /// Takes the exclusive lock if no one else holds the lock at all right now.
    pub fn try_exclusive(path: impl AsRef<Path>) -> Result<Option<StateLock>, LockError> {
        Self::try_acquire(path.as_ref(), LockMode::Exclusive)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> LockMode {
        self.mode
    }

    fn acquire(path: &Path, mode: LockMode) -> Result<StateLock, LockError> {
        let file = open_lock_file(path)?;
        let operation = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        loop {
            match rustix::fs::flock(&file, operation) {
                // A signal interrupted the wait; keep waiting.
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_error(path, e.into())),
                Ok(()) => break,
            }
        }
        Ok(Self::held(file, path, mode))
    }

    fn try_acquire(path: &Path, mode: LockMode) -> Result<Option<StateLock>, LockError> {
        let file = open_lock_file(path)?;
        let operation = match mode {
            LockMode::Shared => FlockOperation::NonBlockingLockShared,
            LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(&file, operation) {
            Ok(()) => Ok(Some(Self::held(file, path, mode))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io_error(path, e.into())),
        }
    }

    fn held(file: File, path: &Path, mode: LockMode) -> StateLock {
        StateLock {
            _file: file,
            path: path.to_path_buf(),
            mode,
        }
    }
}

/// Opens (creating if needed) the lock file. Its content is irrelevant and never written.
fn open_lock_file(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: io::Error) -> LockError {
    LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Duration;

    use super::*;

    fn lock_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        (dir, path)
    }

    #[test]
    fn many_shared_holders_at_once_but_exclusive_is_kept_out() {
        let (_dir, path) = lock_path();
        let a = StateLock::shared(&path).unwrap();
        let b = StateLock::try_shared(&path).unwrap();
        assert!(b.is_some(), "a second shared holder must be admitted");
        assert!(StateLock::try_exclusive(&path).unwrap().is_none());
        drop(a);
        assert!(StateLock::try_exclusive(&path).unwrap().is_none());
        drop(b);
        let ex = StateLock::try_exclusive(&path).unwrap().expect("free now");
        assert_eq!(ex.mode(), LockMode::Exclusive);
        assert!(StateLock::try_shared(&path).unwrap().is_none());
    }

    #[test]
    fn exclusive_waits_for_the_shared_holder_to_release() {
        let (_dir, path) = lock_path();
        let events = Arc::new(Mutex::new(Vec::new()));
        let shared = StateLock::shared(&path).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let gc = thread::spawn({
            let (path, events) = (path.clone(), Arc::clone(&events));
            move || {
                started_tx.send(()).unwrap();
                let _ex = StateLock::exclusive(&path).unwrap();
                events.lock().unwrap().push("exclusive acquired");
            }
        });
        started_rx.recv().unwrap();
        // Give the other thread time to block in flock. The sleep only makes the check
        // meaningful; the assertion is on the order of events, which holds however long it is.
        thread::sleep(Duration::from_millis(100));
        events.lock().unwrap().push("shared released");
        drop(shared);
        gc.join().unwrap();
        assert_eq!(
            *events.lock().unwrap(),
            ["shared released", "exclusive acquired"]
        );
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let (dir, _) = lock_path();
        let path = dir.path().join("no/such/dir/lock");
        let err = StateLock::shared(&path).unwrap_err();
        assert!(err.to_string().contains("no/such/dir/lock"), "{err}");
    }
}
