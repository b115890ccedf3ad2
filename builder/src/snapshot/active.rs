//! The directory of one live snapshot (`snapshots/active/<id>/`) and what is mounted in it.
//!
//! The owner holds an exclusive `flock` on the directory for the snapshot's lifetime, so
//! [`sweep`] (run when a state root's snapshots are opened) can tell a crashed run's leftovers
//! (unlocked: unmount, remove) from another process's live snapshot (locked: leave alone).
//! Mounts only ever happen at the fixed names in [`MOUNT_POINTS`], so undoing a snapshot is
//! always "detach those, remove the directory": on drop, on error paths, on Ctrl-C (the
//! cleanup is registered with [`crate::interrupt`] before anything is mounted) and in a sweep.

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use super::SnapshotError;
use crate::interrupt;

/// Where an active dir may have something mounted: `m` (overlay), `r` (native view bind).
const MOUNT_POINTS: [&str; 2] = ["m", "r"];

pub(crate) struct ActiveDir {
    path: PathBuf,
    _lock: OwnedFd,
    guard: Option<interrupt::Guard>,
    removed: bool,
}

impl ActiveDir {
    /// A new, locked, empty directory under `active`.
    pub(crate) fn create(active: &Path) -> Result<ActiveDir, SnapshotError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = active.join(format!("{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SnapshotError::io("creating", &path)(e)),
            }
            // A sweep in another process may lock and remove the fresh (unlocked) dir before
            // we lock it; then this name is lost, and we try the next one.
            let Ok(fd) = open_dir(&path) else { continue };
            if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue;
            }
            let same = match (std::fs::symlink_metadata(&path), rustix::fs::fstat(&fd)) {
                (Ok(st), Ok(fst)) => st.ino() == fst.st_ino && st.dev() == fst.st_dev,
                _ => false,
            };
            if !same {
                continue;
            }
            let p = path.clone();
            let guard = interrupt::register(move || {
                let _ = cleanup(&p);
            });
            return Ok(ActiveDir {
                path,
                _lock: fd,
                guard: Some(guard),
                removed: false,
            });
        }
        Err(SnapshotError::io(
            "creating a snapshot directory in",
            active,
        )(io::Error::other("no free name")))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Mounts an overlay with `data` at `target` (one of [`MOUNT_POINTS`] in this dir).
    pub(crate) fn mount_overlay(&self, target: &Path, data: &CStr) -> Result<(), SnapshotError> {
        debug_assert!(self.is_mount_point(target));
        rustix::mount::mount("overlay", target, "overlay", MountFlags::empty(), data).map_err(|e| {
            SnapshotError::Mount {
                target: target.to_path_buf(),
                options: data.to_string_lossy().into_owned(),
                source: e.into(),
            }
        })
    }

    /// Bind-mounts `target` onto itself, read-only.
    pub(crate) fn bind_read_only(&self, target: &Path) -> Result<(), SnapshotError> {
        debug_assert!(self.is_mount_point(target));
        let err = |e: Errno| SnapshotError::Mount {
            target: target.to_path_buf(),
            options: "bind,ro".into(),
            source: e.into(),
        };
        rustix::mount::mount_bind(target, target).map_err(err)?;
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "").map_err(err)
    }

    /// Unmounts `target` synchronously: an overlay still in use (a process left running in
    /// it) is an error rather than a lazy unmount, because its upperdir could still change.
    pub(crate) fn unmount(&self, target: &Path) -> Result<(), SnapshotError> {
        rustix::mount::unmount(target, UnmountFlags::NOFOLLOW).map_err(|e| SnapshotError::Unmount {
            path: target.to_path_buf(),
            source: e.into(),
        })
    }

    /// Unmounts whatever is mounted here and removes the directory.
    pub(crate) fn remove(mut self) -> Result<(), SnapshotError> {
        self.removed = true;
        let result = cleanup(&self.path).map_err(SnapshotError::io("removing", &self.path));
        self.guard.take();
        result
    }

    fn is_mount_point(&self, target: &Path) -> bool {
        target.parent() == Some(self.path.as_path())
            && MOUNT_POINTS
                .iter()
                .any(|m| target.file_name() == Some(m.as_ref()))
    }
}

impl Drop for ActiveDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = cleanup(&self.path);
        }
        // The guard drops after the cleanup ran: an interrupt in between runs it again, which
        // is harmless.
        self.guard.take();
    }
}

/// Detaches every mount point of the dir at `path`, then removes the dir.
fn cleanup(path: &Path) -> io::Result<()> {
    for m in MOUNT_POINTS {
        let target = path.join(m);
        // EINVAL: not a mount point; ENOENT: not there. Anything mounted is gone from the
        // namespace at once with MNT_DETACH, so the removal below never reaches into it.
        loop {
            match rustix::mount::unmount(&target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
                Ok(()) => continue, // stacked mounts: undo them all
                Err(Errno::INVAL) | Err(Errno::NOENT) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes the active dirs no live process holds (left by a crash), unmounting them first.
pub(crate) fn sweep(active: &Path) {
    let Ok(entries) = std::fs::read_dir(active) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(fd) = open_dir(&path) else { continue };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok() {
            let _ = cleanup(&path);
        }
    }
}
