//! Mount stubs: the runtime creates every missing mount target (`/proc`, `/etc/hosts`, a
//! `--mount` target and their parents) inside the rootfs before mounting over it. Those empty
//! files and directories must not land in the step's layer, so the paths that did not exist
//! before the run are recorded and removed afterwards if they are still empty (BuildKit's
//! `executor/stubs.go`, with its parent-timestamp restore for reproducible builds).
//!
//! Paths are resolved inside the rootfs (a symlink such as `/etc/resolv.conf ->
//! ../run/systemd/resolve/stub-resolv.conf` is followed there, as the runtime follows it), and
//! removal goes through directory fds without following any symlink, so a process that
//! rearranged the rootfs cannot make the cleanup touch anything outside it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_cache::layer::safe_path::{
    list_dir, open_readable, Missing, Root, Symlinks, MAX_SYMLINKS,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;

/// The stubs one run may create, recorded before it.
#[derive(Debug, Default)]
pub struct MountStubs {
    rootfs: PathBuf,
    /// Symlink-free paths relative to the rootfs, deepest first.
    paths: Vec<PathBuf>,
}

impl MountStubs {
    /// Records which of `targets` (absolute container paths) and their parents do not exist in
    /// `rootfs` yet.
    pub fn record<'a>(
        rootfs: &Path,
        targets: impl IntoIterator<Item = &'a str>,
    ) -> std::io::Result<MountStubs> {
        let root = Root::open(rootfs)?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for target in targets {
            paths.extend(missing_on_path(&root, target));
        }
        paths.sort_by(|a, b| {
            let depth = |p: &Path| p.components().count();
            depth(b).cmp(&depth(a)).then_with(|| a.cmp(b))
        });
        paths.dedup();
        Ok(MountStubs {
            rootfs: rootfs.to_path_buf(),
            paths,
        })
    }

    /// The recorded paths (relative to the rootfs, deepest first).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Removes every recorded path that is still an empty directory or an empty regular file,
    /// deepest first, restoring its parent's timestamps. Best effort: what cannot be removed
    /// is left (it then belongs to the run).
    pub fn cleanup(&self) {
        let Ok(root) = Root::open(&self.rootfs) else {
            return;
        };
        for rel in &self.paths {
            let _ = remove_stub(&root, rel);
        }
    }
}

/// The paths on the way to `target` that do not exist, resolved as the runtime resolves them.
fn missing_on_path(root: &Root, target: &str) -> Vec<PathBuf> {
    let mut todo: VecDeque<OsString> = components(target.as_bytes()).collect();
    // The symlink-free directory reached so far.
    let mut here: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(comp) = todo.pop_front() {
        if comp == ".." {
            here.pop();
            continue;
        }
        let Ok(dir) = root.resolve_dir(&here, Missing::Fail, Symlinks::Refuse) else {
            return Vec::new();
        };
        match rustix::fs::statat(&dir.fd, comp.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => here.push(comp),
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Vec::new();
                    }
                    let Ok(link) = rustix::fs::readlinkat(&dir.fd, comp.as_os_str(), Vec::new())
                    else {
                        return Vec::new();
                    };
                    let link = link.as_bytes();
                    if link.first() == Some(&b'/') {
                        here.clear();
                    }
                    for c in components(link).collect::<Vec<_>>().into_iter().rev() {
                        todo.push_front(c);
                    }
                }
                // The target itself exists (a file), or the path goes through a file (the
                // runtime will fail): nothing to create either way.
                _ => return Vec::new(),
            },
            Err(Errno::NOENT) => {
                // From here on everything is created fresh, so no symlink can intervene.
                let mut path: PathBuf = here.iter().collect();
                path.push(&comp);
                let mut missing = vec![path.clone()];
                for c in todo {
                    if c == ".." {
                        break;
                    }
                    path.push(c);
                    missing.push(path.clone());
                }
                return missing;
            }
            Err(_) => return Vec::new(),
        }
    }
    Vec::new()
}

fn components(path: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_owned())
}

fn remove_stub(root: &Root, rel: &Path) -> Result<(), Errno> {
    let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
        return Ok(());
    };
    let parent: Vec<OsString> = parent.iter().map(OsStr::to_owned).collect();
    // Refuse symlinks: the recorded path was symlink-free; if it is not any more, the process
    // changed it and it is not ours to remove.
    let dir = root
        .resolve_dir(&parent, Missing::Fail, Symlinks::Refuse)
        .map_err(|_| Errno::NOENT)?;
    let st = rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let flags = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let oflags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub = rustix::fs::openat(&dir.fd, name, oflags, Mode::empty())?;
            if !list_dir(sub.as_fd())?.is_empty() {
                return Ok(());
            }
            AtFlags::REMOVEDIR
        }
        FileType::RegularFile if st.st_size == 0 => AtFlags::empty(),
        _ => return Ok(()),
    };
    let parent_dir = open_readable(dir.fd.as_fd())?;
    let before = rustix::fs::fstat(&parent_dir)?;
    rustix::fs::unlinkat(&dir.fd, name, flags)?;
    // Removing an entry touches the parent's mtime; put it back (moby/buildkit#3148).
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: before.st_atime as _,
            tv_nsec: before.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: before.st_mtime as _,
            tv_nsec: before.st_mtime_nsec as _,
        },
    };
    rustix::fs::futimens(&parent_dir, &times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn rels(stubs: &MountStubs) -> Vec<String> {
        stubs
            .paths()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn records_missing_targets_and_parents_deepest_first() {
        let root = tempfile::TempDir::new().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/passwd"), "x").unwrap();
        fs::create_dir(root.path().join("proc")).unwrap();
        let stubs = MountStubs::record(
            root.path(),
            [
                "/proc",
                "/etc/hosts",
                "/dev",
                "/dev/pts",
                "/etc/passwd",
                "/a/b/c",
            ],
        )
        .unwrap();
        assert_eq!(
            rels(&stubs),
            ["a/b/c", "a/b", "dev/pts", "etc/hosts", "a", "dev"]
        );
    }

    #[test]
    fn cleanup_removes_only_what_is_still_empty() {
        let root = tempfile::TempDir::new().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        let stubs = MountStubs::record(
            root.path(),
            ["/etc/hosts", "/etc/resolv.conf", "/proc", "/work/out"],
        )
        .unwrap();
        let mtime = |p: &str| {
            fs::metadata(root.path().join(p))
                .unwrap()
                .modified()
                .unwrap()
        };
        // What the runtime does, then what the process does.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.path().join("etc/hosts"), "").unwrap();
        fs::write(root.path().join("etc/resolv.conf"), "").unwrap();
        fs::create_dir(root.path().join("proc")).unwrap();
        fs::create_dir_all(root.path().join("work/out")).unwrap();
        fs::write(root.path().join("work/result"), "kept").unwrap();
        let etc_mtime = mtime("etc");
        stubs.cleanup();
        assert!(!root.path().join("etc/hosts").exists());
        assert!(!root.path().join("etc/resolv.conf").exists());
        assert!(!root.path().join("proc").exists());
        assert!(!root.path().join("work/out").exists());
        assert_eq!(
            fs::read_to_string(root.path().join("work/result")).unwrap(),
            "kept"
        );
        assert_eq!(mtime("etc"), etc_mtime, "parent timestamps are restored");
    }

    #[test]
    fn written_stubs_stay() {
        let root = tempfile::TempDir::new().unwrap();
        let stubs = MountStubs::record(root.path(), ["/etc/hosts", "/data"]).unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/hosts"), "written").unwrap();
        fs::create_dir(root.path().join("data")).unwrap();
        fs::write(root.path().join("data/f"), "").unwrap();
        stubs.cleanup();
        assert!(root.path().join("etc/hosts").exists());
        assert!(root.path().join("data/f").exists());
    }

    #[test]
    fn symlinked_targets_are_followed_inside_the_rootfs() {
        let root = tempfile::TempDir::new().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            root.path().join("etc/resolv.conf"),
        )
        .unwrap();
        // An absolute link to a host path is resolved from the rootfs' own root.
        symlink("/nonexistent-host-dir", root.path().join("hostlink")).unwrap();
        let stubs = MountStubs::record(root.path(), ["/etc/resolv.conf", "/hostlink/x"]).unwrap();
        assert_eq!(
            rels(&stubs),
            [
                "run/systemd/resolve/stub-resolv.conf",
                "run/systemd/resolve",
                "nonexistent-host-dir/x",
                "run/systemd",
                "nonexistent-host-dir",
                "run",
            ]
        );
    }

    #[test]
    fn cleanup_never_follows_a_symlink_the_process_made() {
        let root = tempfile::TempDir::new().unwrap();
        let outside = tempfile::TempDir::new().unwrap();
        fs::create_dir(outside.path().join("empty")).unwrap();
        let stubs = MountStubs::record(root.path(), ["/m/empty"]).unwrap();
        symlink(outside.path(), root.path().join("m")).unwrap();
        stubs.cleanup();
        assert!(outside.path().join("empty").is_dir());
    }
}
