//! The process of a run through an emulator hook. The runtime starts the emulator (bound at
//! [`EMULATOR_PATH`]) instead of the program, and qemu-user neither searches `PATH` nor keeps
//! the program's own argv[0], so the program is looked up here, as runc would look it up in the
//! container, and named to qemu with `-0 ARGV0`:
//! `[/dev/.rbuild-emulator, -0, argv0, /resolved/program, argv[1..]…]`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rbuild_cache::layer::safe_path::{Missing, Root, Symlinks, MAX_SYMLINKS};
use rustix::fs::{AtFlags, FileType};

use super::{ExecError, EMULATOR_PATH};

/// The argv that runs `args` through the emulator, with the program resolved against the
/// `PATH` of `env` inside `rootfs` when it names no directory.
pub fn args(rootfs: &Path, args: &[String], env: &[String]) -> Result<Vec<String>, ExecError> {
    let Some(argv0) = args.first() else {
        return Err(ExecError::InvalidSpec("no command to run".to_string()));
    };
    let program = if argv0.contains('/') {
        // qemu would take a leading `-` for one of its options.
        match argv0.starts_with('-') {
            true => format!("./{argv0}"),
            false => argv0.clone(),
        }
    } else {
        look_path(rootfs, argv0, env).ok_or_else(|| ExecError::Runtime {
            action: "starting".to_string(),
            command: args.join(" "),
            message: format!("exec: {argv0:?}: executable file not found in $PATH"),
        })?
    };
    let mut out = vec![
        EMULATOR_PATH.to_string(),
        "-0".to_string(),
        argv0.clone(),
        program,
    ];
    out.extend(args[1..].iter().cloned());
    Ok(out)
}

/// `name` in the first directory of `PATH` (the last `PATH=` of `env`) that holds an
/// executable file of that name inside `rootfs`, as Go's `exec.LookPath` finds it for runc.
/// Empty `PATH` entries are skipped: they would mean the working directory.
fn look_path(rootfs: &Path, name: &str, env: &[String]) -> Option<String> {
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(super::spec::DEFAULT_PATH);
    let root = Root::open(rootfs).ok()?;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
        .find(|candidate| executable_in(&root, candidate))
}

/// Whether `path` (absolute in the container, or relative to its root) is an executable regular
/// file inside `root`, every symlink on the way resolved inside the root.
fn executable_in(root: &Root, path: &str) -> bool {
    let mut path = path.as_bytes().to_vec();
    for _ in 0..MAX_SYMLINKS {
        let comps = components(&path);
        let Some((name, dirs)) = comps.split_last() else {
            return false;
        };
        let Ok(dir) = root.resolve_dir(dirs, Missing::Fail, Symlinks::FollowInRoot) else {
            return false;
        };
        let Ok(st) = rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return false;
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => return st.st_mode & 0o111 != 0,
            FileType::Symlink => {
                let Ok(target) = rustix::fs::readlinkat(&dir.fd, name, Vec::new()) else {
                    return false;
                };
                let target = target.as_bytes();
                path = match target.first() {
                    Some(b'/') => target.to_vec(),
                    _ => [dir.rel.as_os_str().as_bytes(), b"/", target].concat(),
                };
            }
            _ => return false,
        }
    }
    false
}

/// The components of `path` with `.` dropped and `..` applied, never above the root (as the
/// kernel treats `..` at a container's root).
fn components(path: &[u8]) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(std::ffi::OsStr::from_bytes(c).to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rootfs() -> tempfile::TempDir {
        let root = tempfile::TempDir::new().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("usr/bin")).unwrap();
        std::fs::create_dir_all(p.join("opt")).unwrap();
        std::fs::write(p.join("usr/bin/busybox"), "").unwrap();
        std::fs::set_permissions(
            p.join("usr/bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(p.join("opt/data"), "").unwrap();
        // A merged /usr: /bin is a link, and the applets are absolute links.
        symlink("usr/bin", p.join("bin")).unwrap();
        symlink("/bin/busybox", p.join("usr/bin/sh")).unwrap();
        symlink("../../opt/data", p.join("usr/bin/data")).unwrap();
        root
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_bare_program_is_found_on_the_containers_path() {
        let root = rootfs();
        let env = s(&["PATH=/nope:/bin:/usr/bin"]);
        assert_eq!(
            args(root.path(), &s(&["sh", "-c", "echo hi"]), &env).unwrap(),
            s(&[EMULATOR_PATH, "-0", "sh", "/bin/sh", "-c", "echo hi"])
        );
        // The default PATH when the env has none.
        assert_eq!(
            args(root.path(), &s(&["busybox"]), &[]).unwrap(),
            s(&[EMULATOR_PATH, "-0", "busybox", "/usr/bin/busybox"])
        );
    }

    #[test]
    fn a_program_with_a_directory_is_taken_as_it_is() {
        let root = rootfs();
        let got = args(root.path(), &s(&["/no/such", "a"]), &[]).unwrap();
        assert_eq!(got, s(&[EMULATOR_PATH, "-0", "/no/such", "/no/such", "a"]));
        let got = args(root.path(), &s(&["-x/y"]), &[]).unwrap();
        assert_eq!(got[3], "./-x/y");
    }

    #[test]
    fn missing_programs_fail_as_runc_says() {
        let root = rootfs();
        let env = s(&["PATH=/usr/bin"]);
        // Not executable, and a link to a host path that is not in the rootfs.
        for name in ["data", "missing"] {
            let err = args(root.path(), &s(&[name]), &env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "exec: \"{name}\": executable file not found in $PATH"
                )),
                "{err}"
            );
        }
        std::os::unix::fs::symlink("/usr/bin/true", root.path().join("usr/bin/hosttrue")).unwrap();
        assert!(args(root.path(), &s(&["hosttrue"]), &env).is_err());
    }

    #[test]
    fn dot_dot_stays_in_the_root() {
        assert_eq!(components(b"/../a/./b/../c"), ["a", "c"]);
    }
}
