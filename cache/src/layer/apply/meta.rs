//! An entry's metadata (owner, mode, mtime, xattrs) read from its headers and set on disk.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::{ApplyError, ApplyWarning};

const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Metadata of one entry; uid/gid already carry PAX overrides (the tar crate applies them).
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timespec,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    pub fn read<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, ApplyError> {
        let bad = |cause: String| ApplyError::BadHeader {
            entry: name.to_string(),
            cause,
        };
        let h = entry.header();
        let mode = h.mode().map_err(|e| bad(format!("mode: {e}")))? & 0o7777;
        let id = |v: std::io::Result<u64>, what: &str| {
            let v = v.map_err(|e| bad(format!("{what}: {e}")))?;
            u32::try_from(v).map_err(|_| bad(format!("{what} {v} does not fit 32 bits")))
        };
        let uid = id(h.uid(), "uid")?;
        let gid = id(h.gid(), "gid")?;
        let header_mtime = h.mtime().map_err(|e| bad(format!("mtime: {e}")))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(header_mtime).map_err(|_| bad("mtime overflows".into()))?,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| ApplyError::stream(format!("{name:?}"), e))?;
        for ext in pax.into_iter().flatten() {
            let ext = ext.map_err(|e| bad(format!("PAX record: {e}")))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| bad(format!("PAX mtime {:?}", ext.value())))?;
            } else if let Some(x) = key.strip_prefix(XATTR_PREFIX.as_bytes()) {
                xattrs.push((x.to_vec(), ext.value_bytes().to_vec()));
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    pub fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`, `-1.5`.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nsec: i64 = digits.parse().ok()?;
    let mut secs = secs;
    // -1.5 means 1.5 s before the epoch: tv_sec -2, tv_nsec 0.5e9.
    if int.starts_with('-') && nsec > 0 {
        secs -= 1;
        nsec = 1_000_000_000 - nsec;
    }
    Some(Timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    })
}

/// Where xattrs go: an open regular file or dir, or (symlinks, devices, fifos, which cannot be
/// opened safely) a path made of the root and a symlink-free relative path.
pub enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    Path {
        path: &'a Path,
        is_file_or_dir: bool,
    },
}

/// Sets the entry's xattrs; see [`ApplyWarning`] for which failures are only warnings.
pub fn set_xattrs(
    target: XattrTarget<'_>,
    meta: &Meta,
    entry: &str,
    warnings: &mut Vec<ApplyWarning>,
) -> Result<(), ApplyError> {
    for (key, value) in &meta.xattrs {
        let key = OsStr::from_bytes(key);
        let (res, plain) = match &target {
            XattrTarget::Fd(fd) => (
                rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty()),
                true,
            ),
            XattrTarget::Path {
                path,
                is_file_or_dir,
            } => (
                rustix::fs::lsetxattr(*path, key, value, XattrFlags::empty()),
                *is_file_or_dir,
            ),
        };
        let Err(errno) = res else { continue };
        let k = key.to_string_lossy();
        let privileged = k.starts_with("security.") || k.starts_with("trusted.");
        let forgivable = errno == Errno::NOTSUP
            || (errno == Errno::PERM && (privileged || !plain))
            || (errno == Errno::ACCESS && privileged);
        if !forgivable {
            return Err(ApplyError::io(entry, format!("setting xattr {k}"), errno));
        }
        warnings.push(ApplyWarning {
            entry: entry.to_string(),
            message: format!("xattr {k} not set: {errno}"),
        });
    }
    Ok(())
}

/// lchown, when asked to. Before chmod, since chown clears setuid/setgid.
pub fn chown_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    meta: &Meta,
    same_owner: bool,
    entry: &str,
) -> Result<(), ApplyError> {
    if !same_owner {
        return Ok(());
    }
    let (uid, gid) = ids(meta);
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| ApplyError::io(entry, format!("lchown {}:{}", meta.uid, meta.gid), e))
}

pub fn chown_fd(
    fd: BorrowedFd<'_>,
    meta: &Meta,
    same_owner: bool,
    entry: &str,
) -> Result<(), ApplyError> {
    if !same_owner {
        return Ok(());
    }
    let (uid, gid) = ids(meta);
    rustix::fs::fchown(fd, Some(uid), Some(gid))
        .map_err(|e| ApplyError::io(entry, format!("chown {}:{}", meta.uid, meta.gid), e))
}

fn ids(meta: &Meta) -> (rustix::fs::Uid, rustix::fs::Gid) {
    // Numeric ids, as containerd does: user names in the header mean nothing in the image.
    (
        rustix::fs::Uid::from_raw(meta.uid),
        rustix::fs::Gid::from_raw(meta.gid),
    )
}

pub fn mode(meta: &Meta) -> Mode {
    Mode::from_raw_mode(meta.mode)
}

/// mtime (and atime, to the same value, so extraction is reproducible) without following a
/// symlink at `name`.
pub fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    meta: &Meta,
    entry: &str,
) -> Result<(), ApplyError> {
    rustix::fs::utimensat(dir, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| ApplyError::io(entry, "setting mtime", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("x"), None);
        assert_eq!(t("1.x"), None);
    }
}
