//! The harness: run the real `rbuild` binary in a fixture directory and capture what a user
//! sees (exit code, stdout, stderr) as one text that snapshots compare.

use std::fmt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// `testdata/cli/NAME` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/cli")
        .join(name);
    assert!(dir.is_dir(), "missing fixture {}", dir.display());
    dir
}

/// `rbuild` with `dir` as working directory, so file names in messages are the short ones a
/// user types, and with an environment that does not change the output.
pub fn rbuild(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("rbuild").expect("the rbuild binary is built");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("BUILDKIT_PROGRESS");
    cmd
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
