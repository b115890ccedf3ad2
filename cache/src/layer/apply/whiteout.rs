//! OCI whiteouts: `.wh.name` hides `name` of the lower layers, `.wh..wh..opq` hides all the lower
//! contents of its directory. Per the image spec they never hide what the same layer writes,
//! whatever the order of the entries, so paths this layer wrote are tracked in `kept`.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::extract::{set_opaque, Extractor};
use super::{ApplyError, WhiteoutMode};
use crate::layer::safe_path::{
    list_dir, open_readable, remove_all_at, Missing, PathError, Resolved, Symlinks,
};

/// aufs kept its own metadata under `.wh..wh.` names; they are not content.
const META_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..opq";

impl Extractor<'_> {
    /// `dir` is the whiteout's directory, `hidden` its name without the `.wh.` prefix.
    pub(super) fn whiteout(
        &mut self,
        dir: &[OsString],
        hidden: &[u8],
        name: &str,
    ) -> Result<(), ApplyError> {
        if hidden == OPAQUE {
            return self.opaque(dir, name);
        }
        if hidden.starts_with(META_PREFIX) {
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(ApplyError::refused(name, PathError::BadWhiteout));
        }
        let hidden = OsStr::from_bytes(hidden);
        let missing = match self.opts.whiteouts {
            WhiteoutMode::Apply => Missing::Fail,
            WhiteoutMode::Overlay => Missing::Create,
        };
        let parent = match self.take_parent(dir, missing) {
            Ok(p) => p,
            // Nothing there, so nothing of a lower layer to hide.
            Err(PathError::Missing(_) | PathError::NotADirectory(_)) => return Ok(()),
            Err(c) => return Err(ApplyError::refused(name, c)),
        };
        let res = self.hide(&parent, hidden, name);
        self.parent = Some((dir.to_vec(), parent));
        res
    }

    fn hide(&mut self, parent: &Resolved, hidden: &OsStr, name: &str) -> Result<(), ApplyError> {
        let rel = parent.rel.join(hidden);
        if self.kept.contains(&rel) {
            // This layer wrote `hidden` too: keep it, hide only the lower contents beneath it.
            return self.hide_lower_beneath(parent, hidden, name);
        }
        match self.opts.whiteouts {
            WhiteoutMode::Apply => {
                remove_all_at(parent.fd.as_fd(), hidden)
                    .map_err(|e| ApplyError::io(name, "removing the whited-out path", e))?;
                self.forget_dirs_under(&rel);
                Ok(())
            }
            WhiteoutMode::Overlay => {
                self.clear_slot(parent, hidden, false, name)?;
                let dev = rustix::fs::makedev(0, 0);
                let ft = FileType::CharacterDevice;
                rustix::fs::mknodat(&parent.fd, hidden, ft, Mode::empty(), dev)
                    .map_err(|e| ApplyError::io(name, "mknod of the overlay whiteout (0/0)", e))
            }
        }
    }

    fn hide_lower_beneath(
        &mut self,
        parent: &Resolved,
        hidden: &OsStr,
        name: &str,
    ) -> Result<(), ApplyError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(&parent.fd, hidden, flags, Mode::empty()) else {
            return Ok(()); // not a directory: the layer's own file is all there is
        };
        let dir = Resolved {
            fd,
            rel: parent.rel.join(hidden),
        };
        self.make_opaque(&dir, name)
    }

    /// `.wh..wh..opq` in `dir`.
    fn opaque(&mut self, dir: &[OsString], name: &str) -> Result<(), ApplyError> {
        let missing = match self.opts.whiteouts {
            WhiteoutMode::Apply => Missing::Fail,
            WhiteoutMode::Overlay => Missing::Create,
        };
        let resolved = match self.root.resolve_dir(dir, missing, Symlinks::FollowInRoot) {
            Ok(d) => d,
            Err(PathError::Missing(_) | PathError::NotADirectory(_)) => return Ok(()),
            Err(c) => return Err(ApplyError::refused(name, c)),
        };
        // The opaque marker belongs to this layer's version of the directory.
        self.mark_kept(&resolved.rel);
        self.make_opaque(&resolved, name)
    }

    fn make_opaque(&mut self, dir: &Resolved, name: &str) -> Result<(), ApplyError> {
        let fd = open_readable(dir.fd.as_fd())
            .map_err(|e| ApplyError::io(name, "opening the opaque directory", e))?;
        match self.opts.whiteouts {
            WhiteoutMode::Apply => self.remove_lower(fd.as_fd(), &dir.rel, name),
            WhiteoutMode::Overlay => set_opaque(fd.as_fd(), name),
        }
    }

    /// Removes everything under `dir` that this layer did not write, descending into the
    /// directories it did write or that lead to something it wrote.
    fn remove_lower(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        name: &str,
    ) -> Result<(), ApplyError> {
        let err = |e| ApplyError::io(name, format!("emptying {rel:?} for the opaque whiteout"), e);
        for child in list_dir(dir).map_err(err)? {
            let child_rel = rel.join(&child);
            if !self.kept.contains(&child_rel) {
                remove_all_at(dir, &child).map_err(err)?;
                self.forget_dirs_under(&child_rel);
                continue;
            }
            let st = rustix::fs::statat(dir, &child, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = rustix::fs::openat(dir, &child, flags, Mode::empty()).map_err(err)?;
                self.remove_lower(sub.as_fd(), &child_rel, name)?;
            }
        }
        Ok(())
    }
}
