//! RUN: one process in a writable rootfs, through an OCI runtime, as BuildKit's runc executor
//! runs it.
//!
//! The caller (the solver) hands over a rootfs directory (its overlay mount) and a [`RunSpec`];
//! an [`Executor`] runs the process there and streams its output to an [`OutputSink`]. The one
//! real executor is [`Runc`]: it writes an OCI bundle whose `config.json` is an
//! [`oci_spec::runtime::Spec`] modelled on BuildKit's (`executor/oci/spec.go`), runs
//! `runc run`, and always deletes the container and the bundle afterwards.
//!
//! The parts:
//! - [`spec`]: `RunSpec` → OCI runtime spec (mounts, capabilities, namespaces, env defaults);
//! - [`etc`]: the `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` files bound into the
//!   container;
//! - [`stubs`]: mount targets the runtime creates in the rootfs, removed again after the run so
//!   they never land in a layer;
//! - [`emulated`]: the argv that runs a process through an emulator hook;
//! - [`output`]: the two output streams, forwarded as they arrive, and the tail kept for errors;
//! - [`runc`]: the runtime itself.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod emulated;
pub mod etc;
pub mod output;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod stubs;

pub use output::CollectOutput;
pub use runc::Runc;

use crate::users::UserError;

/// How many lines of output a failed process's error carries, as BuildKit shows.
pub const ERROR_TAIL_LINES: usize = 20;

/// The network a process sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network stack (BuildKit's host network fallback): no network namespace.
    #[default]
    Host,
    /// A network namespace of its own, where only `lo` exists.
    None,
}

/// An extra bind mount (the solver's `RUN --mount` later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub readonly: bool,
}

/// A tmpfs of its own at `target` (`RUN --mount=type=tmpfs`), `size` bytes at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmpfsMount {
    pub target: String,
    pub size: Option<u64>,
}

/// What to run. Its `Debug` shows the environment's names only: values may be secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// argv as given (shell form already wrapped by the caller).
    pub args: Vec<String>,
    /// `KEY=VALUE`. `PATH` and `HOME` get defaults when missing, as in BuildKit.
    pub env: Vec<String>,
    /// Absolute; created in the rootfs if missing (owned by the user), as BuildKit does.
    pub cwd: String,
    /// USER spec (`name|uid[:group|gid]`), resolved in the rootfs; `""` = root.
    pub user: String,
    pub network: Network,
    /// BuildKit uses [`DEFAULT_HOSTNAME`]; empty means that.
    pub hostname: String,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    /// `RUN --security=insecure`: every capability, no seccomp filter, every device.
    pub privileged: bool,
    /// A host emulator (qemu-user) to run the process through, for a foreign platform without
    /// a usable binfmt_misc handler: bound read-only at [`EMULATOR_PATH`] and made the
    /// process, with the program and its argv as its arguments.
    pub emulator: Option<PathBuf>,
}

/// Where an emulator hook appears in the container (BuildKit uses
/// `/dev/.buildkit_qemu_emulator`): on the runtime's own `/dev` tmpfs, so never in a layer.
pub const EMULATOR_PATH: &str = "/dev/.rbuild-emulator";

/// BuildKit's hostname for build containers.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

impl fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&str> = self
            .env
            .iter()
            .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
            .collect();
        f.debug_struct("RunSpec")
            .field("args", &self.args)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("network", &self.network)
            .field("mounts", &self.mounts)
            .field("tmpfs", &self.tmpfs)
            .field("privileged", &self.privileged)
            .field("emulator", &self.emulator)
            .finish()
    }
}

impl RunSpec {
    /// A spec with BuildKit's defaults: root, cwd `/`, host network, `buildkitsandbox`.
    pub fn new(args: impl IntoIterator<Item = impl Into<String>>) -> RunSpec {
        RunSpec {
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: "/".to_string(),
            user: String::new(),
            network: Network::Host,
            hostname: DEFAULT_HOSTNAME.to_string(),
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            privileged: false,
            emulator: None,
        }
    }

    /// The command as BuildKit names it in errors: the argv joined by spaces.
    pub fn command_line(&self) -> String {
        self.args.join(" ")
    }
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives a process's output as it arrives (chunks, not lines).
pub trait OutputSink {
    fn output(&mut self, stream: Stream, bytes: &[u8]);
}

/// Runs build processes.
pub trait Executor: Send + Sync {
    /// Runs the process in `rootfs` (a writable directory: the caller's overlay mount) and
    /// streams its output.
    fn run(
        &self,
        rootfs: &Path,
        spec: &RunSpec,
        sink: &mut dyn OutputSink,
    ) -> Result<(), ExecError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process ran and exited with a non-zero code.
    #[error("{}", failure_message(command, &format!("exit code: {exit_code}"), last_lines))]
    Failed {
        /// The argv joined by spaces.
        command: String,
        exit_code: i32,
        /// The last [`ERROR_TAIL_LINES`] lines of stdout and stderr, in arrival order.
        last_lines: Vec<String>,
    },
    /// The runtime itself was killed by a signal (an interrupt, the OOM killer).
    #[error("{}", failure_message(command, &format!("killed by signal {signal}"), last_lines))]
    Signaled {
        command: String,
        signal: i32,
        last_lines: Vec<String>,
    },
    /// The USER could not be resolved in the rootfs' /etc/passwd and /etc/group.
    #[error(transparent)]
    UnknownUser(#[from] UserError),
    /// The runtime is not installed.
    #[error(
        "the OCI runtime {name:?} was not found on PATH (nor in /usr/local/sbin, /usr/sbin, \
         /sbin); RUN needs it: install it (Debian/Ubuntu: apt-get install runc)"
    )]
    RuntimeNotFound { name: String },
    /// The runtime failed before or around the process (bad spec, mount failure, missing
    /// executable, delete failure).
    #[error("{action} {command:?}: {message}")]
    Runtime {
        /// What was being done: "starting", "deleting container", …
        action: String,
        /// The argv joined by spaces, or the container id.
        command: String,
        message: String,
    },
    /// The RunSpec cannot be run as given (relative cwd, empty argv, …).
    #[error("invalid RUN spec: {0}")]
    InvalidSpec(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ExecError {
        let path = path.into();
        move |source| ExecError::Io { path, source }
    }
}

/// `process "/bin/sh -c false" did not complete successfully: exit code: 1`, then the tail.
fn failure_message(command: &str, why: &str, last_lines: &[String]) -> String {
    let mut s = format!(
        "process {} did not complete successfully: {why}",
        GoQuoted(command)
    );
    for line in last_lines {
        s.push('\n');
        s.push_str(line);
    }
    s
}

/// A string quoted as Go's `%q` quotes it (BuildKit formats the command that way).
struct GoQuoted<'a>(&'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                '\u{7}' => f.write_str("\\a")?,
                '\u{8}' => f.write_str("\\b")?,
                '\u{c}' => f.write_str("\\f")?,
                '\u{b}' => f.write_str("\\v")?,
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_buildkit_writes_them() {
        let err = ExecError::Failed {
            command: "/bin/sh -c false".to_string(),
            exit_code: 1,
            last_lines: vec![],
        };
        assert_eq!(
            err.to_string(),
            r#"process "/bin/sh -c false" did not complete successfully: exit code: 1"#
        );
        let err = ExecError::Failed {
            command: "/bin/sh -c echo \"a\\b\"\n".to_string(),
            exit_code: 3,
            last_lines: vec!["one".to_string(), "two".to_string()],
        };
        assert_eq!(
            err.to_string(),
            "process \"/bin/sh -c echo \\\"a\\\\b\\\"\\n\" did not complete successfully: \
             exit code: 3\none\ntwo"
        );
    }

    #[test]
    fn run_spec_defaults_are_buildkits() {
        let spec = RunSpec::new(["/bin/sh", "-c", "true"]);
        assert_eq!(spec.cwd, "/");
        assert_eq!(spec.hostname, "buildkitsandbox");
        assert_eq!(spec.network, Network::Host);
        assert_eq!(spec.command_line(), "/bin/sh -c true");
    }
}
