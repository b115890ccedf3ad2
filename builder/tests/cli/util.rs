//! The harness: run the real `rbuild` binary in a fixture directory and capture what a user
//! sees (exit code, stdout, stderr) as one text that snapshots compare.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use tempfile::TempDir;

/// `testdata/cli/NAME` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/cli")
        .join(name);
    assert!(dir.is_dir(), "missing fixture {}", dir.display());
    dir
}

/// `testdata/examples`, whose images build without a container runtime or the network.
pub fn examples() -> PathBuf {
    fixture("").join("../examples")
}

/// `rbuild` with `dir` as working directory, so file names in messages are the short ones a
/// user types, and with an environment that does not change the output.
pub fn rbuild(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("rbuild").expect("the rbuild binary is built");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("RBUILD_ROOT", shared_root())
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("BUILDKIT_PROGRESS");
    cmd
}

/// A state root for tests that do not care about theirs, so none touches /var/lib/rbuild.
fn shared_root() -> &'static Path {
    static ROOT: OnceLock<TempDir> = OnceLock::new();
    ROOT.get_or_init(|| TempDir::new().expect("a temporary directory"))
        .path()
}

/// Whether `tool` is on PATH. Missing, a test skips the checks that need it, saying so; under
/// `CI=true` a missing tool fails the test instead, since CI must run everything.
pub fn require_tool(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping the {tool} checks: {tool} is not installed");
    }
    found
}

/// What one run showed the user.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion. No run may panic, whatever its input: that is checked here, for
/// every test.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("rbuild starts");
    let output = Output {
        code: out
            .status
            .code()
            .expect("rbuild exits rather than dying by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    };
    assert!(
        !output.stderr.contains("panicked"),
        "rbuild panicked:\n{output}"
    );
    assert_ne!(output.code, 101, "exit code 101 is a panic:\n{output}");
    output
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout")?;
        f.write_str(&self.stdout)?;
        writeln!(f, "--- stderr")?;
        f.write_str(&self.stderr)
    }
}

/// Whether RUN can work here: root (for mounts and runc) and runc. Missing, `what` is
/// skipped with the reason; under `CI=true` that is a failure instead.
pub fn can_run_containers(what: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} need root under CI=true"
        );
        eprintln!("skipping {what}: they need root (RUN through runc)");
        return false;
    }
    require_tool("runc")
}

/// Incompressible bytes: xorshift64 from `seed` (made odd, so never all zero), `len` of them.
pub fn xorshift_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The host's static busybox (Debian's busybox-static), which runs in a scratch image.
/// Missing, `None` (with the reason), or a failure under `CI=true`.
pub fn host_static_busybox() -> Option<PathBuf> {
    let listed = std::process::Command::new("dpkg")
        .args(["-L", "busybox-static"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| listed.lines().any(|l| l == *p) && Path::new(p).is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "busybox-static is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: busybox-static is not installed");
    }
    found.map(PathBuf::from)
}
