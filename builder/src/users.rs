//! USER and `--chown` specs resolved as Docker/BuildKit resolve them: `name|uid[:group|gid]`
//! against the rootfs' own `/etc/passwd` and `/etc/group`, read inside the rootfs (a symlink
//! there is followed as the container would see it, never out to the host).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_cache::layer::safe_path::{normalize, Missing, Root, Symlinks};
use rustix::fs::{Mode, OFlags};

/// A resolved identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from /etc/group (only when no group was named).
    pub additional_gids: Vec<u32>,
    /// The passwd home directory, when the user has an entry.
    pub home: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user spec {0:?}")]
    Invalid(String),
    #[error("reading {path} in the rootfs: {message}")]
    Read { path: String, message: String },
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (`""` means root) in `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<Identity, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() && group.is_some() {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let user = if user.is_empty() { "0" } else { user };
    let passwd = parse_passwd(&read_in_root(rootfs, "etc/passwd")?.unwrap_or_default());
    let entry = passwd.iter().find(|e| e.name == user).or_else(|| {
        user.parse::<u32>()
            .ok()
            .and_then(|uid| passwd.iter().find(|e| e.uid == uid))
    });
    let (uid, mut gid, name, home) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone()), Some(e.home.clone())),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => return Err(UserError::UnknownUser(user.to_string())),
    };
    let groups = parse_group(&read_in_root(rootfs, "etc/group")?.unwrap_or_default());
    let mut additional_gids = Vec::new();
    match group {
        Some(g) => {
            gid = match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => g
                    .parse()
                    .map_err(|_| UserError::UnknownGroup(g.to_string()))?,
            };
        }
        None => {
            if let Some(name) = &name {
                additional_gids = groups
                    .iter()
                    .filter(|e| e.gid != gid && e.members.iter().any(|m| m == name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids,
        home,
    })
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The largest passwd/group file read (far above any real one).
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// Reads `rel` inside `rootfs`, following symlinks as the container would (within the
/// rootfs). `None` when the file does not exist.
pub fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, UserError> {
    let fail = |message: String| UserError::Read {
        path: format!("/{rel}"),
        message,
    };
    let root = Root::open(rootfs).map_err(|e| fail(e.to_string()))?;
    let mut path = PathBuf::from(rel);
    // Linux's own limit on symlinks in one lookup.
    for _ in 0..40 {
        let comps = normalize(path.as_os_str().as_bytes()).map_err(|e| fail(e.to_string()))?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(None);
        };
        let dir = match root.resolve_dir(parents, Missing::Fail, Symlinks::FollowInRoot) {
            Ok(d) => d,
            Err(_) => return Ok(None),
        };
        // A build may have put a device or a fifo there: never block on it or read a host
        // device through it — only a regular file of sane size is read.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::openat(&dir.fd, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|e| fail(e.to_string()))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::RegularFile
                {
                    return Err(fail("not a regular file".to_string()));
                }
                let mut text = String::new();
                std::fs::File::from(fd)
                    .take(MAX_ACCOUNT_FILE + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| fail(e.to_string()))?;
                if text.len() as u64 > MAX_ACCOUNT_FILE {
                    return Err(fail(format!("larger than {MAX_ACCOUNT_FILE} bytes")));
                }
                return Ok(Some(text));
            }
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                let target = rustix::fs::readlinkat(&dir.fd, name.as_os_str(), Vec::new())
                    .map_err(|e| fail(e.to_string()))?;
                let target = PathBuf::from(OsString::from(std::ffi::OsStr::from_bytes(
                    target.as_bytes(),
                )));
                path = if target.is_absolute() {
                    target.strip_prefix("/").unwrap_or(&target).to_path_buf()
                } else {
                    dir.rel.join(target)
                };
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    Err(fail("too many levels of symbolic links".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwheel:x:10:root\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_ids_resolve_as_docker_does() {
        let r = rootfs();
        let app = resolve(r.path(), "app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1000, vec![50])
        );
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        let root = resolve(r.path(), "").unwrap();
        assert_eq!((root.uid, root.gid, root.additional_gids), (0, 0, vec![10]));
        let numeric = resolve(r.path(), "4242").unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 0));
        let by_id = resolve(r.path(), "1000:staff").unwrap();
        assert_eq!(
            (by_id.uid, by_id.gid, by_id.additional_gids),
            (1000, 50, vec![])
        );
        assert_eq!(resolve(r.path(), "app:7").unwrap().gid, 7);
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = rootfs();
        assert_eq!(
            resolve(r.path(), "nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            resolve(r.path(), "app:nogroup").unwrap_err(),
            UserError::UnknownGroup("nogroup".to_string())
        );
        let empty = tempfile::TempDir::new().unwrap();
        assert_eq!(resolve(empty.path(), "0").unwrap().uid, 0);
        assert!(resolve(empty.path(), "app").is_err());
    }

    #[test]
    fn a_fifo_or_device_as_passwd_is_refused_not_read() {
        let r = rootfs();
        let group = r.path().join("etc/group");
        fs::remove_file(&group).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &group,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = resolve(r.path(), "app").unwrap_err().to_string();
        assert!(
            err.contains("/etc/group") && err.contains("not a regular file"),
            "{err}"
        );
    }

    #[test]
    fn a_symlinked_passwd_is_read_inside_the_rootfs() {
        let r = rootfs();
        let outside = tempfile::TempDir::new().unwrap();
        fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        fs::rename(
            r.path().join("etc/passwd"),
            r.path().join("etc/passwd.real"),
        )
        .unwrap();
        // Absolute: resolved from the rootfs' own root, so it reaches etc/passwd.real.
        std::os::unix::fs::symlink("/etc/passwd.real", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(r.path(), "app").unwrap().uid, 1000);
        fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), r.path().join("etc/passwd"))
            .unwrap();
        // The host path does not exist inside the rootfs: no entries, never the host file.
        assert!(resolve(r.path(), "evil").is_err());
    }
}
