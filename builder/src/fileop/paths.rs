//! The destination side: paths inside the destination rootfs, resolved as the container sees
//! them, and Docker's rules for where a source lands.
//!
//! BuildKit facts kept here (fsutil `copy.Copy` / `prepareTargetDir` / `MkdirAll`):
//! - the destination is resolved with `fs.RootPath`: symlinks on it, the last one included,
//!   are followed inside the rootfs (`/`-targets restart at the root, `..` stops there);
//! - `dest` ending in `/` is created as a directory first; otherwise its parent is;
//! - a file source into an existing directory (or a `dest/`) lands as `dest/<base name>`, a
//!   directory source puts its *contents* into `dest` (created if missing);
//! - directories created on the way are 0755 and owned by `--chown`'s user (root otherwise);
//!   existing ones are left as they are.
//!
//! Every write happens relative to a directory fd opened component by component with
//! `O_NOFOLLOW`, so a symlink swapped in after resolution makes the write fail rather than
//! leave the root.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_cache::layer::safe_path::open_readable;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::FileOpError;
use super::source::{components, join, rel_string, root_path};

/// Owner of what a file op creates; `None` fields mean "leave as the process makes it".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The destination rootfs, opened once.
pub(crate) struct DestRoot {
    pub path: PathBuf,
    fd: OwnedFd,
    /// Whether ownership can be set (running as root).
    pub privileged: bool,
}

impl DestRoot {
    pub fn open(path: &Path) -> Result<DestRoot, FileOpError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FileOpError::io(path.to_string_lossy(), "opening the destination root", e))?;
        Ok(DestRoot {
            path: path.to_path_buf(),
            fd,
            privileged: rustix::process::geteuid().is_root(),
        })
    }

    /// `fs.RootPath`: `path` (absolute in the container) resolved inside the root.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Vec<OsString>, FileOpError> {
        let comps = components(path.as_bytes());
        root_path(&self.path, &comps, follow_last)
            .map_err(|e| FileOpError::io(path, "resolving in the destination", e))
    }

    /// lstat of a resolved path; `None` when missing.
    pub fn lstat(&self, comps: &[OsString]) -> Option<rustix::fs::Stat> {
        rustix::fs::statat(
            self.fd.as_fd(),
            join(Path::new("."), comps).as_path(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ok()
    }

    /// `MkdirAll(path, 0755)` with new directories chowned to `owner`: resolves `path`, then
    /// creates what is missing. Returns the directory's fd and resolved components.
    pub fn mkdir_all(
        &self,
        path: &str,
        mode: u32,
        owner: Option<Owner>,
    ) -> Result<(OwnedFd, Vec<OsString>), FileOpError> {
        let comps = self.resolve(path, true)?;
        let fd = self.mkdir_resolved(&comps, mode, owner, path)?;
        Ok((fd, comps))
    }

    /// Creates the (already resolved, symlink-free) directories of `comps` that are missing.
    pub fn mkdir_resolved(
        &self,
        comps: &[OsString],
        mode: u32,
        owner: Option<Owner>,
        display: &str,
    ) -> Result<OwnedFd, FileOpError> {
        let mut cur = reopen(self.fd.as_fd()).map_err(|e| FileOpError::io(display, "open", e))?;
        for (i, c) in comps.iter().enumerate() {
            let here = || format!("/{}", rel_string(&comps[..=i]));
            match open_dir(cur.as_fd(), c) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(cur.as_fd(), c, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(FileOpError::io(here(), "mkdir", e)),
                    }
                    let fd =
                        open_dir(cur.as_fd(), c).map_err(|e| FileOpError::io(here(), "open", e))?;
                    // mkdir honours the umask; MkdirAll's directories have exactly `mode`.
                    let rd = open_readable(fd.as_fd())
                        .map_err(|e| FileOpError::io(here(), "open", e))?;
                    rustix::fs::fchmod(&rd, Mode::from_raw_mode(mode))
                        .map_err(|e| FileOpError::io(here(), "chmod", e))?;
                    if let Some(o) = owner {
                        self.chown_fd(rd.as_fd(), o, true, &here())?;
                    }
                    cur = fd;
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return Err(FileOpError::NotADirectory(here()));
                }
                Err(e) => return Err(FileOpError::io(here(), "open", e)),
            }
        }
        Ok(cur)
    }

    /// Opens the existing directory `comps` (resolved) without following symlinks.
    pub fn open_resolved(&self, comps: &[OsString], display: &str) -> Result<OwnedFd, FileOpError> {
        let mut cur = reopen(self.fd.as_fd()).map_err(|e| FileOpError::io(display, "open", e))?;
        for c in comps {
            cur = open_dir(cur.as_fd(), c).map_err(|e| match e {
                Errno::NOTDIR | Errno::LOOP => FileOpError::NotADirectory(display.to_string()),
                e => FileOpError::io(display, "open", e),
            })?;
        }
        Ok(cur)
    }

    /// fchown when permitted: an explicit owner (`--chown`) must be applied; a kept source
    /// owner is applied only as root.
    pub fn chown_fd(
        &self,
        fd: BorrowedFd<'_>,
        o: Owner,
        explicit: bool,
        display: &str,
    ) -> Result<(), FileOpError> {
        if !self.privileged && !explicit {
            return Ok(());
        }
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(o.uid)),
            Some(rustix::fs::Gid::from_raw(o.gid)),
        )
        .map_err(|e| FileOpError::io(display, "chown", e))
    }

    pub fn chown_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        o: Owner,
        explicit: bool,
        display: &str,
    ) -> Result<(), FileOpError> {
        if !self.privileged && !explicit {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(o.uid)),
            Some(rustix::fs::Gid::from_raw(o.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| FileOpError::io(display, "lchown", e))
    }
}

/// `O_PATH|O_NOFOLLOW|O_DIRECTORY`: fails on a symlink instead of following it.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) fn reopen(dir: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) fn file_type(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Where one selected source goes, by fsutil's `Copy` + `prepareTargetDir` rules.
pub(crate) struct Placement {
    /// The directory the entry is written into (resolved, symlink-free).
    pub parent: Vec<OsString>,
    /// The entry's name in `parent`; `None` when a directory's contents go straight into
    /// `parent` (the destination directory itself).
    pub name: Option<OsString>,
}

/// Applies the rules for one source whose lstat (after following) is `src_is_dir`, named
/// `base` (its base name as matched), to destination `dest` (absolute, trailing `/` kept).
/// Creates the directories the rules create.
pub(crate) fn place(
    root: &DestRoot,
    dest: &str,
    src_is_dir: bool,
    base: &OsStr,
    owner: Option<Owner>,
) -> Result<Placement, FileOpError> {
    // ensureDstPath: `dest/` itself, else its parent.
    let ends_dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let ensure = if ends_dir {
        dest.to_string()
    } else {
        match dest.rfind('/') {
            Some(i) => dest[..=i].to_string(),
            None => "/".to_string(),
        }
    };
    root.mkdir_all(&ensure, 0o755, owner)?;
    let mut target = root.resolve(dest, true)?;
    let existing = root.stat_follow(&target);
    let dest_is_dir = existing
        .as_ref()
        .is_some_and(|st| file_type(st) == FileType::Directory);
    if !src_is_dir && dest_is_dir {
        target.push(base.to_owned());
    }
    if src_is_dir {
        // Contents into `dest`: create it when missing (0755, chowned), keep it when present.
        if existing.is_some() && !dest_is_dir {
            return Err(FileOpError::NotADirectory(dest.to_string()));
        }
        root.mkdir_resolved(&target, 0o755, owner, dest)?;
        return Ok(Placement {
            parent: target,
            name: None,
        });
    }
    let name = target
        .pop()
        .ok_or_else(|| FileOpError::ReplaceDirWithFile("/".into()))?;
    root.mkdir_resolved(&target, 0o755, owner, dest)?;
    Ok(Placement {
        parent: target,
        name: Some(name),
    })
}

impl DestRoot {
    /// stat of a resolved path following a final symlink (inside the root).
    pub fn stat_follow(&self, comps: &[OsString]) -> Option<rustix::fs::Stat> {
        let resolved = root_path(&self.path, comps, true).ok()?;
        self.lstat(&resolved)
    }
}

/// The display form of a resolved destination path.
pub(crate) fn display(comps: &[OsString], name: Option<&OsStr>) -> String {
    let mut s = format!("/{}", rel_string(comps));
    if let Some(n) = name {
        if !s.ends_with('/') {
            s.push('/');
        }
        s.push_str(&String::from_utf8_lossy(n.as_bytes()));
    }
    s
}
