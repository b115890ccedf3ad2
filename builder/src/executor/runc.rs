//! The runc executor: one OCI bundle per run under the scratch directory, `runc run` with
//! piped stdio (no terminal), and an unconditional teardown: `runc delete -f`, the bundle
//! removed, the mount stubs removed. While the process runs, an interrupt cleanup kills and
//! deletes the container and removes its bundle.

use std::ffi::OsStr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use rbuild_cache::layer::safe_path::{normalize, Missing, Root, Symlinks};
use rustix::fs::{AtFlags, Gid, Uid};

use super::output::{pump, Tail};
use super::spec::{self, BundleFiles};
use super::stubs::MountStubs;
use super::{ExecError, Executor, OutputSink, RunSpec, ERROR_TAIL_LINES};
use crate::interrupt;
use crate::users;

/// Where Debian and others install runc when it is not on a user's PATH.
const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Containers started by this process; with the pid, unique among concurrent rbuilds.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Runs processes with `runc`.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    state_dir: PathBuf,
    scratch: PathBuf,
}

impl Runc {
    /// `state_dir` is runc's `--root`, `scratch` holds the bundles; both are created. Finds
    /// `runc` on PATH (or in the sbin directories); a clear error names the fix if missing.
    pub fn new(state_dir: &Path, scratch: &Path) -> Result<Runc, ExecError> {
        let binary = find_binary("runc")?;
        Runc::with_binary(&binary, state_dir, scratch)
    }

    /// As [`Runc::new`], with an explicit runtime binary (a runc-compatible one).
    pub fn with_binary(binary: &Path, state_dir: &Path, scratch: &Path) -> Result<Runc, ExecError> {
        let mut dirs = Vec::new();
        for dir in [state_dir, scratch] {
            std::fs::create_dir_all(dir).map_err(ExecError::io(dir))?;
            dirs.push(std::fs::canonicalize(dir).map_err(ExecError::io(dir))?);
        }
        let scratch = dirs.pop().unwrap_or_default();
        let state_dir = dirs.pop().unwrap_or_default();
        Ok(Runc {
            binary: binary.to_path_buf(),
            state_dir,
            scratch,
        })
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Kills and deletes the containers whose bundle lies under `dir`: those a killed rbuild
    /// (SIGKILL, no cleanup) left running. Best effort: nothing to reap is the usual case.
    pub fn reap_under(&self, dir: &Path) {
        let Ok(out) = self.command().args(["list", "--format", "json"]).output() else {
            return;
        };
        let listed: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).unwrap_or_default();
        for container in listed {
            let (Some(id), Some(bundle)) = (container["id"].as_str(), container["bundle"].as_str())
            else {
                continue;
            };
            if Path::new(bundle).starts_with(dir) {
                let _ = self
                    .command()
                    .args(["kill", id, "KILL"])
                    .stderr(Stdio::null())
                    .status();
                let _ = delete_container(&self.binary, &self.state_dir, id);
            }
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_dir);
        cmd
    }
}

/// `name` on PATH, then in the sbin directories.
fn find_binary(name: &str) -> Result<PathBuf, ExecError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| ExecError::RuntimeNotFound {
            name: name.to_string(),
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A container id unique in this process and among processes: `rbuild-PID-N`.
fn next_id() -> String {
    format!(
        "rbuild-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

impl Executor for Runc {
    fn run(
        &self,
        rootfs: &Path,
        run: &RunSpec,
        sink: &mut dyn OutputSink,
    ) -> Result<(), ExecError> {
        spec::validate(run)?;
        let rootfs = std::fs::canonicalize(rootfs).map_err(ExecError::io(rootfs))?;
        let identity = users::resolve(&rootfs, &run.user)?;

        let id = next_id();
        let bundle = self.scratch.join(&id);
        // From here on, everything is undone when `container` goes out of scope.
        let mut container = Container {
            runc: self,
            id: id.clone(),
            bundle: bundle.clone(),
            stubs: None,
            done: false,
            _guard: interrupt_cleanup(self, &id, &bundle),
        };
        std::fs::create_dir(&bundle).map_err(ExecError::io(&bundle))?;
        set_mode(&bundle, 0o711)?;

        let files = BundleFiles {
            hosts: bundle.join("hosts"),
            resolv_conf: bundle.join("resolv.conf"),
            hostname: bundle.join("hostname"),
        };
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let (hosts, resolv, hostname) = spec::file_contents(run, &host_resolv);
        for (path, text) in [
            (&files.hosts, hosts),
            (&files.resolv_conf, resolv),
            (&files.hostname, hostname),
        ] {
            std::fs::write(path, text).map_err(ExecError::io(path))?;
            set_mode(path, 0o644)?;
        }
        let spec = spec::build(&rootfs, run, &identity, &files)?;
        let config = bundle.join("config.json");
        let json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| ExecError::InvalidSpec(format!("serializing config.json: {e}")))?;
        // 0600: the process's environment may hold secrets (`RUN --mount=type=secret,env=…`).
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&config)
                .map_err(ExecError::io(&config))?;
            file.write_all(&json).map_err(ExecError::io(&config))?;
        }

        let targets: Vec<String> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        container.stubs = Some(
            MountStubs::record(&rootfs, targets.iter().map(String::as_str))
                .map_err(ExecError::io(&rootfs))?,
        );
        ensure_cwd(&rootfs, &run.cwd, identity.uid, identity.gid)?;

        let log = bundle.join("runc.log");
        let mut child = self
            .command()
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Out of the terminal's process group: Ctrl-C reaches rbuild, whose interrupt
            // cleanup kills the container, instead of racing it.
            .process_group(0)
            .spawn()
            .map_err(ExecError::io(&self.binary))?;
        let mut tail = Tail::new(ERROR_TAIL_LINES);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExecError::InvalidSpec(
                "runc's stdio was not piped".to_string(),
            ));
        };
        pump(stdout, stderr, sink, &mut tail);
        let status = child.wait().map_err(ExecError::io(&self.binary))?;
        let last_lines = tail.finish();
        let command = run.command_line();

        let result = match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(exit_code), _) => match runtime_errors(&log) {
                Some(message) => Err(ExecError::Runtime {
                    action: "starting".to_string(),
                    command,
                    message,
                }),
                None => Err(ExecError::Failed {
                    command,
                    exit_code,
                    last_lines,
                }),
            },
            (None, Some(signal)) => Err(ExecError::Signaled {
                command,
                signal,
                last_lines,
            }),
            (None, None) => Err(ExecError::Runtime {
                action: "running".to_string(),
                command,
                message: format!("ended with {status}"),
            }),
        };
        let teardown = container.teardown();
        result.and(teardown)
    }
}

/// The error messages runc logged (it also prints the last one to stderr, which the sink got).
fn runtime_errors(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let messages: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal" | "panic")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(ExecError::io(path))
}

/// What a run leaves to undo: the container, its bundle, the mount stubs.
struct Container<'a> {
    runc: &'a Runc,
    id: String,
    bundle: PathBuf,
    stubs: Option<MountStubs>,
    done: bool,
    _guard: [interrupt::Guard; 2],
}

impl Container<'_> {
    /// `runc delete -f` (runc run normally deletes its container itself), the bundle, the
    /// stubs; every step is attempted, the first failure is reported.
    fn teardown(&mut self) -> Result<(), ExecError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let deleted = delete_container(&self.runc.binary, &self.runc.state_dir, &self.id);
        let removed = match std::fs::remove_dir_all(&self.bundle) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ExecError::Io {
                path: self.bundle.clone(),
                source: e,
            }),
            _ => Ok(()),
        };
        if let Some(stubs) = &self.stubs {
            stubs.cleanup();
        }
        deleted.and(removed)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// `runc delete -f ID`, unless runc already removed it.
fn delete_container(binary: &Path, state_dir: &Path, id: &str) -> Result<(), ExecError> {
    if !state_dir.join(id).exists() {
        return Ok(());
    }
    let out = Command::new(binary)
        .arg("--root")
        .arg(state_dir)
        .args(["delete", "-f", id])
        .stdin(Stdio::null())
        .output()
        .map_err(ExecError::io(binary))?;
    if out.status.success() || !state_dir.join(id).exists() {
        return Ok(());
    }
    Err(ExecError::Runtime {
        action: "deleting container".to_string(),
        command: id.to_string(),
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// On SIGINT/SIGTERM while the run lasts: kill the container at once (the run then returns
/// and `Container`'s drop deletes it); delete it and remove its bundle only if the build does
/// not unwind by itself.
fn interrupt_cleanup(runc: &Runc, id: &str, bundle: &Path) -> [interrupt::Guard; 2] {
    let (binary, state_dir) = (runc.binary.clone(), runc.state_dir.clone());
    let (kill_binary, kill_state, kill_id) = (binary.clone(), state_dir.clone(), id.to_string());
    let stop = interrupt::register_stop(move || {
        // `runc run` records the container a moment after its process starts: a signal in
        // that window finds nothing to kill yet, so try again for a while.
        for _ in 0..50 {
            let killed = Command::new(&kill_binary)
                .arg("--root")
                .arg(&kill_state)
                .args([OsStr::new("kill"), OsStr::new(&kill_id), OsStr::new("KILL")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if killed {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let (id, bundle) = (id.to_string(), bundle.to_path_buf());
    let undo = interrupt::register(move || {
        let _ = delete_container(&binary, &state_dir, &id);
        let _ = std::fs::remove_dir_all(&bundle);
    });
    [stop, undo]
}

/// Creates the working directory in the rootfs if it is missing (0755, owned by the user, as
/// BuildKit's `MkdirAllAndChown`), resolving it inside the rootfs.
fn ensure_cwd(rootfs: &Path, cwd: &str, uid: u32, gid: u32) -> Result<(), ExecError> {
    let rel = cwd.trim_start_matches('/');
    let invalid = |e: &dyn std::fmt::Display| {
        ExecError::InvalidSpec(format!("working directory {cwd:?}: {e}"))
    };
    if rel.is_empty() {
        return Ok(());
    }
    let comps = normalize(rel.as_bytes()).map_err(|e| invalid(&e))?;
    let root = Root::open(rootfs).map_err(ExecError::io(rootfs))?;
    let exists = |k: usize| {
        root.resolve_dir(&comps[..k], Missing::Fail, Symlinks::FollowInRoot)
            .is_ok()
    };
    let Some(existing) = (0..=comps.len()).rev().find(|&k| exists(k)) else {
        return Ok(());
    };
    if existing == comps.len() {
        return Ok(());
    }
    let made = root
        .resolve_dir(&comps, Missing::Create, Symlinks::FollowInRoot)
        .map_err(|e| invalid(&e))?;
    // The new directories are the last components of the resolved path (they are fresh, so
    // no symlink is among them).
    let resolved: Vec<_> = made.rel.iter().map(OsStr::to_owned).collect();
    let created = comps.len() - existing;
    for depth in resolved.len().saturating_sub(created) + 1..=resolved.len() {
        let dir = root
            .resolve_dir(&resolved[..depth], Missing::Fail, Symlinks::Refuse)
            .map_err(|e| invalid(&e))?;
        rustix::fs::chownat(
            &dir.fd,
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH,
        )
        .map_err(|e| ExecError::io(rootfs.join(&made.rel))(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ids_are_unique() {
        let a = next_id();
        let b = next_id();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("rbuild-{}-", std::process::id())));
    }

    #[test]
    fn a_missing_runtime_names_the_fix() {
        let err = find_binary("rbuild-no-such-runtime").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("apt-get install runc"), "{text}");
    }

    #[test]
    fn the_working_directory_is_created_inside_the_rootfs() {
        let root = tempfile::TempDir::new().unwrap();
        let outside = tempfile::TempDir::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        ensure_cwd(root.path(), "/link/a/b", 0, 0).unwrap();
        // The absolute link target is taken from the rootfs' root, never the host's.
        assert!(root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("a/b")
            .is_dir());
        assert!(!outside.path().join("a").exists());
        ensure_cwd(root.path(), "/", 0, 0).unwrap();
        if rustix::process::geteuid().is_root() {
            ensure_cwd(root.path(), "/work/sub", 1000, 50).unwrap();
            let meta = std::fs::metadata(root.path().join("work/sub")).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (1000, 50, 0o755)
            );
            let parent = std::fs::metadata(root.path().join("work")).unwrap();
            assert_eq!((parent.uid(), parent.gid()), (1000, 50));
        }
    }
}
