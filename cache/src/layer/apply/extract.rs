//! The per-entry work: each tar entry becomes a file, directory, link or node inside the root.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::ext_limit::ExtensionLimit;
use super::meta::{self, Meta, XattrTarget};
use super::{ApplyError, ApplyOptions, ApplyWarning, WhiteoutMode};
use crate::layer::safe_path::{
    normalize, open_readable, remove_all_at, Missing, PathError, Resolved, Root, Symlinks,
};

/// Copy buffer: large enough that a multi-GB layer is not a million small writes.
const BUF_LEN: usize = 256 * 1024;

pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

pub struct Extractor<'o> {
    pub(super) root: Root,
    pub(super) opts: &'o ApplyOptions,
    /// The last entry's parent directory. Entries come grouped by directory, and nothing an
    /// entry does (it only changes things *below* its parent) can change the path to it.
    pub(super) parent: Option<(Vec<OsString>, Resolved)>,
    /// Paths this layer wrote, and their ancestors: what an opaque whiteout must not remove.
    pub(super) kept: HashSet<PathBuf>,
    /// Directories' final mode and mtime, set at the end: creating children changes a dir's
    /// mtime, and a 0555 dir would stop a non-root user from creating them.
    pub(super) dirs: HashMap<PathBuf, (u32, Timestamps)>,
    pub(super) warnings: Vec<ApplyWarning>,
    buf: Vec<u8>,
}

/// What was at an entry's path before it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Slot {
    Empty,
    /// A directory, kept because the entry is a directory too.
    Dir,
    /// An overlay whiteout (0/0 char device), now removed.
    Whiteout,
    Other,
}

impl<'o> Extractor<'o> {
    pub fn new(root: Root, opts: &'o ApplyOptions) -> Self {
        Extractor {
            root,
            opts,
            parent: None,
            kept: HashSet::new(),
            dirs: HashMap::new(),
            warnings: Vec::new(),
            buf: vec![0; BUF_LEN],
        }
    }

    /// Extracts every entry; returns how to name the last one in later errors.
    pub fn extract_all(&mut self, r: impl Read) -> Result<String, ApplyError> {
        // The tar crate would read an extension header's body whole, whatever size it claims.
        let mut archive = tar::Archive::new(ExtensionLimit::new(r));
        let header_label = |i: usize, last: &Option<String>| match last {
            Some(name) => format!("#{i} (the header after {name:?})"),
            None => format!("#{i} (the first header)"),
        };
        let entries = archive
            .entries()
            .map_err(|e| ApplyError::stream(header_label(0, &None), e))?;
        let mut last: Option<String> = None;
        for (i, next) in entries.enumerate() {
            let mut entry = next.map_err(|e| ApplyError::stream(header_label(i, &last), e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            self.entry(&mut entry, &name)?;
            last = Some(name);
        }
        Ok(match last {
            Some(name) => format!("{name:?}"),
            None => "#0 (an archive with no entries)".to_string(),
        })
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), ApplyError> {
        let mut kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global PAX records carry defaults no layer tool relies on (Docker writes none).
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        // Pre-POSIX tars mark directories only by a trailing slash on a regular entry.
        if kind == EntryType::Regular && raw.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        let comps = normalize(&raw).map_err(|c| ApplyError::refused(name, c))?;
        let Some((base, dir)) = comps.split_last() else {
            return self.root_entry(entry, kind, name);
        };
        if let Some(hidden) = base.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(dir, hidden, name);
        }
        let meta = Meta::read(entry, name)?;
        let parent = self
            .take_parent(dir, Missing::Create)
            .map_err(|c| ApplyError::refused(name, c))?;
        let res = self.create(entry, kind, &parent, base, &meta, name);
        if res.is_ok() {
            self.mark_kept(&parent.rel.join(base));
        }
        self.parent = Some((dir.to_vec(), parent));
        res
    }

    /// The directory `dir` (normalized components), from the cache when it is the last one.
    pub(super) fn take_parent(
        &mut self,
        dir: &[OsString],
        missing: Missing,
    ) -> Result<Resolved, PathError> {
        if let Some((key, resolved)) = self.parent.take() {
            if key == dir {
                return Ok(resolved);
            }
        }
        self.root.resolve_dir(dir, missing, Symlinks::FollowInRoot)
    }

    /// Records that this layer wrote `rel`, keeping the invariant that a kept path's
    /// ancestors are kept too (an opaque whiteout descends through them).
    pub(super) fn mark_kept(&mut self, rel: &Path) {
        for a in rel.ancestors() {
            if !self.kept.insert(a.to_path_buf()) {
                break;
            }
        }
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        parent: &Resolved,
        base: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<(), ApplyError> {
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, kind, parent, base, meta, name)
            }
            EntryType::Directory => self.dir(parent, base, meta, name),
            EntryType::Symlink => self.symlink(entry, parent, base, meta, name),
            EntryType::Link => self.hardlink(entry, parent, base, name),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.node(entry, kind, parent, base, meta, name)
            }
            other => Err(ApplyError::Unsupported {
                entry: name.to_string(),
                kind: format!("{other:?} ({:?})", other.as_byte() as char),
            }),
        }
    }

    /// Makes room for an entry: removes what is there unless both are directories (then the
    /// directory and its contents stay and only its metadata changes).
    pub(super) fn clear_slot(
        &mut self,
        parent: &Resolved,
        base: &OsStr,
        keep_dir: bool,
        name: &str,
    ) -> Result<Slot, ApplyError> {
        let st = match rustix::fs::statat(&parent.fd, base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Slot::Empty),
            Err(e) => return Err(ApplyError::io(name, "lstat", e)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            if keep_dir {
                return Ok(Slot::Dir);
            }
            remove_all_at(parent.fd.as_fd(), base)
                .map_err(|e| ApplyError::io(name, "removing the directory it replaces", e))?;
            self.forget_dirs_under(&parent.rel.join(base));
            return Ok(Slot::Other);
        }
        rustix::fs::unlinkat(&parent.fd, base, AtFlags::empty())
            .map_err(|e| ApplyError::io(name, "removing the file it replaces", e))?;
        let whiteout = ft == FileType::CharacterDevice && st.st_rdev == 0;
        Ok(if whiteout {
            Slot::Whiteout
        } else {
            Slot::Other
        })
    }

    /// A removed directory's deferred metadata must not land on whatever is made there next.
    pub(super) fn forget_dirs_under(&mut self, rel: &Path) {
        if !self.dirs.is_empty() {
            self.dirs.retain(|k, _| !k.starts_with(rel));
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        parent: &Resolved,
        base: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<(), ApplyError> {
        self.clear_slot(parent, base, false, name)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &parent.fd,
            base,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| ApplyError::io(name, "creating file", e))?;
        let mut file = File::from(fd);
        // Sparse entries expand beyond their stored size; the tar crate checks those itself.
        let expect = (kind != EntryType::GNUSparse).then(|| entry.size());
        if let Err(e) = self.copy_data(entry, &mut file, expect, name) {
            drop(file);
            // No partial file is left, least of all the start of a "1 TB" one.
            let _ = rustix::fs::unlinkat(&parent.fd, base, AtFlags::empty());
            return Err(e);
        }
        // Data first, then owner, xattrs, mode: writing and chown clear setuid and
        // security.capability, so these must come after.
        meta::chown_fd(file.as_fd(), meta, self.opts.same_owner, name)?;
        meta::set_xattrs(
            XattrTarget::Fd(file.as_fd()),
            meta,
            name,
            &mut self.warnings,
        )?;
        rustix::fs::fchmod(&file, meta::mode(meta))
            .map_err(|e| ApplyError::io(name, "chmod", e))?;
        rustix::fs::futimens(&file, &meta.times())
            .map_err(|e| ApplyError::io(name, "setting mtime", e))
    }

    /// Streams the entry's data; `expect` is the size its header promised.
    fn copy_data(
        &mut self,
        entry: &mut impl Read,
        out: &mut File,
        expect: Option<u64>,
        name: &str,
    ) -> Result<(), ApplyError> {
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ApplyError::stream(format!("{name:?}"), e)),
            };
            out.write_all(&self.buf[..n])
                .map_err(|e| ApplyError::io(name, "writing file data", e))?;
            written += n as u64;
        }
        match expect {
            Some(size) if written < size => Err(ApplyError::Truncated {
                entry: format!("{name:?}"),
                cause: format!(
                    "its header promises {size} bytes of data, the stream ends after {written}"
                ),
            }),
            _ => Ok(()),
        }
    }

    fn dir(
        &mut self,
        parent: &Resolved,
        base: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<(), ApplyError> {
        let slot = self.clear_slot(parent, base, true, name)?;
        if slot != Slot::Dir {
            rustix::fs::mkdirat(&parent.fd, base, Mode::from_raw_mode(0o700))
                .map_err(|e| ApplyError::io(name, "mkdir", e))?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent.fd, base, flags, Mode::empty())
            .map_err(|e| ApplyError::io(name, "opening the directory", e))?;
        // Overlay: a directory where this layer put a whiteout replaces the lower one whole.
        let opaque = slot == Slot::Whiteout && self.opts.whiteouts == WhiteoutMode::Overlay;
        self.dir_meta(fd.as_fd(), parent.rel.join(base), meta, opaque, name)
    }

    /// `./` in a layer: the root's own metadata. It is never replaced by anything else.
    fn root_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        name: &str,
    ) -> Result<(), ApplyError> {
        if kind != EntryType::Directory {
            return Err(ApplyError::refused(name, PathError::IsRoot));
        }
        let meta = Meta::read(entry, name)?;
        let fd = open_readable(self.root.fd())
            .map_err(|e| ApplyError::io(name, "opening the root", e))?;
        self.dir_meta(fd.as_fd(), PathBuf::new(), &meta, false, name)
    }

    fn dir_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        rel: PathBuf,
        meta: &Meta,
        opaque: bool,
        name: &str,
    ) -> Result<(), ApplyError> {
        meta::chown_fd(fd, meta, self.opts.same_owner, name)?;
        meta::set_xattrs(XattrTarget::Fd(fd), meta, name, &mut self.warnings)?;
        if opaque {
            set_opaque(fd, name)?;
        }
        // Writable and searchable by us until finish() sets the real mode.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode | 0o700))
            .map_err(|e| ApplyError::io(name, "chmod", e))?;
        self.dirs.insert(rel, (meta.mode, meta.times()));
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &Resolved,
        base: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<(), ApplyError> {
        // The target is only data: it is stored as is and never followed while extracting.
        let target = link_name(entry, name)?;
        self.clear_slot(parent, base, false, name)?;
        rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent.fd, base)
            .map_err(|e| ApplyError::io(name, "creating symlink", e))?;
        meta::chown_at(parent.fd.as_fd(), base, meta, self.opts.same_owner, name)?;
        self.xattrs_by_path(parent, base, meta, false, name)?;
        meta::set_times_at(parent.fd.as_fd(), base, meta, name)
    }

    /// Symlinks and nodes cannot be opened safely, so their xattrs go by path: the root's path
    /// and the symlink-free path of the parent found by resolution.
    fn xattrs_by_path(
        &mut self,
        parent: &Resolved,
        base: &OsStr,
        meta: &Meta,
        is_file_or_dir: bool,
        name: &str,
    ) -> Result<(), ApplyError> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let path = self.root.path().join(&parent.rel).join(base);
        let target = XattrTarget::Path {
            path: &path,
            is_file_or_dir,
        };
        meta::set_xattrs(target, meta, name, &mut self.warnings)
    }

    /// A hardlink shares its target's inode, and so its metadata: none is set from the header.
    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &Resolved,
        base: &OsStr,
        name: &str,
    ) -> Result<(), ApplyError> {
        let raw = link_name(entry, name)?;
        let refused = |cause: PathError| {
            let target = String::from_utf8_lossy(&raw).into_owned();
            let cause = Box::new(cause);
            ApplyError::refused(name, PathError::HardlinkTarget { target, cause })
        };
        let comps = normalize(&raw).map_err(refused)?;
        let (tbase, tdir) = comps
            .split_last()
            .ok_or_else(|| refused(PathError::IsRoot))?;
        let tparent = self
            .root
            .resolve_dir(tdir, Missing::Fail, Symlinks::FollowInRoot)
            .map_err(refused)?;
        let tst = match rustix::fs::statat(&tparent.fd, tbase, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(refused(PathError::Missing(tparent.rel.join(tbase)))),
            Err(e) => return Err(ApplyError::io(name, "lstat of the hardlink target", e)),
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(refused(PathError::IsDirectory(tparent.rel.join(tbase))));
        }
        if let Ok(here) = rustix::fs::statat(&parent.fd, base, AtFlags::SYMLINK_NOFOLLOW) {
            if (here.st_dev, here.st_ino) == (tst.st_dev, tst.st_ino) {
                return Ok(()); // already that inode (a link to itself, or a re-applied layer)
            }
        }
        self.clear_slot(parent, base, false, name)?;
        rustix::fs::linkat(&tparent.fd, tbase, &parent.fd, base, AtFlags::empty())
            .map_err(|e| ApplyError::io(name, "creating hardlink", e))
    }

    /// Character and block devices and fifos.
    fn node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        parent: &Resolved,
        base: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<(), ApplyError> {
        let h = entry.header();
        let bad = |e: io::Error| ApplyError::BadHeader {
            entry: name.to_string(),
            cause: format!("device number: {e}"),
        };
        // A fifo has no device; some writers leave its number fields blank.
        let (major, minor) = if kind == EntryType::Fifo {
            (0, 0)
        } else {
            (
                h.device_major().map_err(bad)?.unwrap_or(0),
                h.device_minor().map_err(bad)?.unwrap_or(0),
            )
        };
        let file_type = match kind {
            EntryType::Char => FileType::CharacterDevice,
            EntryType::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        self.clear_slot(parent, base, false, name)?;
        let dev = rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(&parent.fd, base, file_type, Mode::from_raw_mode(0o600), dev)
            .map_err(|e| ApplyError::io(name, format!("mknod {file_type:?} {major}:{minor}"), e))?;
        meta::chown_at(parent.fd.as_fd(), base, meta, self.opts.same_owner, name)?;
        self.xattrs_by_path(parent, base, meta, false, name)?;
        // chmodat follows symlinks, but `base` is the node made just above.
        rustix::fs::chmodat(&parent.fd, base, meta::mode(meta), AtFlags::empty())
            .map_err(|e| ApplyError::io(name, "chmod", e))?;
        meta::set_times_at(parent.fd.as_fd(), base, meta, name)
    }

    /// Sets the deferred directory modes and mtimes, deepest first so that setting one never
    /// disturbs another, and returns the warnings.
    pub fn finish(mut self) -> Result<Vec<ApplyWarning>, ApplyError> {
        let mut dirs: Vec<_> = self.dirs.drain().collect();
        dirs.sort_by_key(|(rel, _)| (Reverse(rel.components().count()), rel.clone()));
        for (rel, (mode, times)) in dirs {
            let comps: Vec<OsString> = rel.iter().map(OsStr::to_owned).collect();
            // Refuse symlinks: if the path now goes through one, the directory this metadata
            // was for has been replaced since.
            let Ok(dir) = self
                .root
                .resolve_dir(&comps, Missing::Fail, Symlinks::Refuse)
            else {
                continue;
            };
            let name = rel.to_string_lossy();
            let fd = open_readable(dir.fd.as_fd())
                .map_err(|e| ApplyError::io(&name, "opening the directory", e))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                .map_err(|e| ApplyError::io(&name, "chmod", e))?;
            rustix::fs::futimens(&fd, &times)
                .map_err(|e| ApplyError::io(&name, "setting mtime", e))?;
        }
        Ok(self.warnings)
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>, ApplyError> {
    match entry.link_name_bytes() {
        Some(t) if !t.is_empty() => Ok(t.into_owned()),
        _ => Err(ApplyError::BadHeader {
            entry: name.to_string(),
            cause: "a link without a target".to_string(),
        }),
    }
}

/// Marks an overlay lowerdir directory opaque. An error, never a warning: without it the
/// lower layers' files would show through a directory this layer replaced.
pub(super) fn set_opaque(fd: BorrowedFd<'_>, name: &str) -> Result<(), ApplyError> {
    rustix::fs::fsetxattr(fd, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
        .map_err(|e| ApplyError::io(name, format!("setting {OPAQUE_XATTR}"), e))
}
