//! Tar entry names resolved inside a root directory, never by letting the OS follow a symlink.
//!
//! A layer is untrusted input: an entry `link/pwned` after a symlink `link -> /etc` must not write
//! to the host's `/etc`. So every directory on the way to an entry is opened one component at a
//! time with `O_NOFOLLOW`; a symlink met there is read and followed *by us*, inside the root (an
//! absolute target starts again at the root, as the container will see it), and a `..` that
//! would climb above the root is refused. The result is an open directory fd, and the final
//! component is only ever used relative to it with no-follow calls.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Linux gives up after 40 links (ELOOP); so do we, so a symlink loop cannot hang extraction.
pub const MAX_SYMLINKS: usize = 40;

/// Why a name or a path inside the root is refused or cannot be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the name is empty")]
    Empty,
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("absolute names are refused (a layer's names are relative to its root)")]
    Absolute,
    #[error("its \"..\" components climb above the root")]
    DotDot,
    #[error("the path goes through symlink {link:?}, which leads outside the root")]
    SymlinkEscapes { link: PathBuf },
    #[error("more than {MAX_SYMLINKS} symlinks met on the path (a loop?)")]
    TooManySymlinks,
    #[error("{0:?} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0:?} does not exist in the root")]
    Missing(PathBuf),
    #[error("{0:?} is a directory")]
    IsDirectory(PathBuf),
    #[error("a whiteout must name an entry of its directory")]
    BadWhiteout,
    #[error("the root directory itself can only be a directory entry")]
    IsRoot,
    #[error("hardlink target {target:?}: {cause}")]
    HardlinkTarget {
        target: String,
        cause: Box<PathError>,
    },
    #[error("{path:?}: {errno}")]
    Os { path: PathBuf, errno: Errno },
}

/// Splits a tar name into normal components: `./a//b/` → `[a, b]`, `a/../b` → `[b]`.
/// Absolute names and `..` that climbs above the root are refused rather than clamped, since a
/// layer that contains them was made by a broken or hostile tool. Empty result = the root.
pub fn normalize(name: &[u8]) -> Result<Vec<OsString>, PathError> {
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    if name.contains(&0) {
        return Err(PathError::Nul);
    }
    if name[0] == b'/' {
        return Err(PathError::Absolute);
    }
    let mut out: Vec<OsString> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop().ok_or(PathError::DotDot)?;
            }
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}

/// What to do when a directory on the path does not exist.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Missing {
    /// Create it 0755, as tar tools do for entries that come before their parents.
    Create,
    Fail,
}

/// Whether a symlink on the path is followed (inside the root) or means "not the same path".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Symlinks {
    FollowInRoot,
    Refuse,
}

/// The directory extraction writes into, opened once.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// A directory inside the root: an `O_PATH` fd and its symlink-free path relative to the root.
pub struct Resolved {
    pub fd: OwnedFd,
    pub rel: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory named by `comps` (normalized components) inside the root.
    pub fn resolve_dir(
        &self,
        comps: &[OsString],
        missing: Missing,
        symlinks: Symlinks,
    ) -> Result<Resolved, PathError> {
        let mut walk = Walk {
            root: self,
            stack: Vec::new(),
            links: Vec::new(),
        };
        let mut todo: VecDeque<(OsString, Option<usize>)> =
            comps.iter().map(|c| (c.clone(), None)).collect();
        while let Some((comp, from_link)) = todo.pop_front() {
            match comp.as_bytes() {
                b"" | b"." => {}
                b".." => walk.up(from_link)?,
                _ => {
                    if let Some(target) = walk.step(&comp, missing, symlinks)? {
                        let link = walk.links.len() - 1;
                        if target.first() == Some(&b'/') {
                            walk.stack.clear();
                        }
                        for c in target.split(|&b| b == b'/').rev() {
                            todo.push_front((OsStr::from_bytes(c).to_owned(), Some(link)));
                        }
                    }
                }
            }
        }
        let rel: PathBuf = walk.stack.iter().map(|(_, n)| n.as_os_str()).collect();
        let fd = match walk.stack.pop() {
            Some((fd, _)) => fd,
            None => reopen_path(self.fd())?,
        };
        Ok(Resolved { fd, rel })
    }
}

/// The state of one resolution: the directories entered so far and the symlinks followed.
struct Walk<'r> {
    root: &'r Root,
    stack: Vec<(OwnedFd, OsString)>,
    links: Vec<PathBuf>,
}

impl Walk<'_> {
    fn cur(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.root.fd(), |(fd, _)| fd.as_fd())
    }

    fn rel(&self) -> PathBuf {
        self.stack.iter().map(|(_, n)| n.as_os_str()).collect()
    }

    /// `..`: only symlink targets can contain one (names are normalized), so climbing past the
    /// root means that symlink points outside.
    fn up(&mut self, from_link: Option<usize>) -> Result<(), PathError> {
        if self.stack.pop().is_some() {
            return Ok(());
        }
        match from_link {
            Some(i) => Err(PathError::SymlinkEscapes {
                link: self.links[i].clone(),
            }),
            None => Err(PathError::DotDot),
        }
    }

    /// Enters `comp`; returns a symlink's target instead when `comp` is one.
    fn step(
        &mut self,
        comp: &OsStr,
        missing: Missing,
        symlinks: Symlinks,
    ) -> Result<Option<Vec<u8>>, PathError> {
        let here = self.rel().join(comp);
        let os = |errno| PathError::Os {
            path: here.clone(),
            errno,
        };
        match open_dir_path(self.cur(), comp) {
            Ok(fd) => {
                self.stack.push((fd, comp.to_owned()));
                Ok(None)
            }
            Err(Errno::NOENT) if missing == Missing::Create => {
                match rustix::fs::mkdirat(self.cur(), comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(os(e)),
                }
                // mkdir honours the umask; parents made for an entry are always 0755.
                let fd = open_dir_path(self.cur(), comp).map_err(os)?;
                let _ = rustix::fs::chmodat(
                    self.cur(),
                    comp,
                    Mode::from_raw_mode(0o755),
                    AtFlags::empty(),
                );
                self.stack.push((fd, comp.to_owned()));
                Ok(None)
            }
            Err(Errno::NOENT) => Err(PathError::Missing(here)),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                let st =
                    rustix::fs::statat(self.cur(), comp, AtFlags::SYMLINK_NOFOLLOW).map_err(os)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    return Err(PathError::NotADirectory(here));
                }
                if symlinks == Symlinks::Refuse || self.links.len() >= MAX_SYMLINKS {
                    return Err(match symlinks {
                        Symlinks::Refuse => PathError::NotADirectory(here),
                        Symlinks::FollowInRoot => PathError::TooManySymlinks,
                    });
                }
                let target = rustix::fs::readlinkat(self.cur(), comp, Vec::new()).map_err(os)?;
                if target.as_bytes().is_empty() {
                    return Err(PathError::Missing(here));
                }
                self.links.push(here);
                Ok(Some(target.into_bytes()))
            }
            Err(e) => Err(os(e)),
        }
    }
}

/// `O_PATH` needs no read permission on the directory and `O_NOFOLLOW|O_DIRECTORY` fails on a
/// symlink instead of following it.
fn open_dir_path(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty())
}

fn reopen_path(dir: BorrowedFd<'_>) -> Result<OwnedFd, PathError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::openat(dir, ".", flags, Mode::empty()).map_err(|errno| PathError::Os {
        path: PathBuf::new(),
        errno,
    })
}

/// A readable fd of a directory reached through an `O_PATH` fd, for fchmod, fsetxattr, readdir.
pub fn open_readable(dir: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::openat(dir, ".", flags, Mode::empty())
}

/// `rm -rf dir/name` without following any symlink. Directories are made writable first, so a
/// tree with 0555 directories can be removed by a non-root user too.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        // A 0000 or 0555 directory, as a non-root user: make it ours to empty, then retry.
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(dir, name, flags, Mode::empty())?
        }
        other => other?,
    };
    if rustix::fs::fstat(&sub)?.st_mode & 0o700 != 0o700 {
        rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
    }
    for child in list_dir(sub.as_fd())? {
        remove_all_at(sub.as_fd(), &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// The names in a directory (without `.` and `..`), read before anything in it is changed.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<Vec<String>, PathError> {
        normalize(s.as_bytes()).map(|v| {
            v.into_iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn normalize_cleans_and_refuses() {
        assert_eq!(norm("./a//b/").unwrap(), ["a", "b"]);
        assert_eq!(norm("a/./b/../c").unwrap(), ["a", "c"]);
        assert!(norm("./").unwrap().is_empty());
        assert_eq!(norm("../escape"), Err(PathError::DotDot));
        assert_eq!(norm("a/../../b"), Err(PathError::DotDot));
        assert_eq!(norm("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(norm(""), Err(PathError::Empty));
    }

    #[test]
    fn resolution_follows_symlinks_inside_and_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let root_dir = tmp.path().join("root");
        std::fs::create_dir_all(root_dir.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root_dir.join("lib")).unwrap();
        std::os::unix::fs::symlink("/", root_dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root_dir.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("loop", root_dir.join("loop")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        let r = |p: &str, m| {
            root.resolve_dir(&normalize(p.as_bytes()).unwrap(), m, Symlinks::FollowInRoot)
        };
        assert_eq!(r("lib", Missing::Fail).unwrap().rel, Path::new("usr/lib"));
        assert_eq!(
            r("abs/abs/usr", Missing::Fail).unwrap().rel,
            Path::new("usr")
        );
        assert_eq!(
            r("usr/up/x", Missing::Create).err(),
            Some(PathError::SymlinkEscapes {
                link: "usr/up".into()
            })
        );
        assert_eq!(
            r("loop/x", Missing::Fail).err(),
            Some(PathError::TooManySymlinks)
        );
        assert_eq!(
            r("new/dir", Missing::Create).unwrap().rel,
            Path::new("new/dir")
        );
        let refused = root.resolve_dir(&[OsString::from("lib")], Missing::Fail, Symlinks::Refuse);
        assert_eq!(refused.err(), Some(PathError::NotADirectory("lib".into())));
        assert!(!tmp.path().join("x").exists());
    }
}
