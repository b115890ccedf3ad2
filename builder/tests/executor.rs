//! The runc executor against real runc, in a busybox rootfs made from Debian's busybox-static.
//!
//! Needs root, `runc` and `/bin/busybox`. Locally a missing prerequisite skips a test with a
//! printed reason; under `CI=true` it fails it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild::executor::{
    CollectOutput, ExecError, Executor, Network, OutputSink, RunSpec, Runc, Stream,
};

const BUSYBOX: &str = "/bin/busybox";

/// `Some(reason)` when this machine cannot run the tests.
fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (runc needs it)".to_string());
    }
    if let Err(e) = Runc::new(Path::new("/tmp"), Path::new("/tmp")) {
        return Some(e.to_string());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} is missing (install the Debian package busybox-static)"
        ));
    }
    None
}

/// A busybox rootfs, a runc state dir and a scratch dir, all temporary.
struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    state: PathBuf,
    scratch: PathBuf,
    runc: Runc,
}

fn fixture() -> Option<Fixture> {
    if let Some(reason) = missing_prerequisite() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and a prerequisite is missing: {reason}");
        }
        eprintln!("skipping: {reason}");
        return None;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let (rootfs, state, scratch, runc) = make_rootfs(dir.path());
    Some(Fixture {
        _dir: dir,
        rootfs,
        state,
        scratch,
        runc,
    })
}

/// A busybox rootfs, runc's state dir and the scratch dir under `dir`.
fn make_rootfs(dir: &Path) -> (PathBuf, PathBuf, PathBuf, Runc) {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    // `busybox --install -s` would point the links at the host's path; relative links work
    // in any root.
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for name in String::from_utf8(list.stdout).unwrap().lines() {
        if name != "busybox" && !name.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(name)).unwrap();
        }
    }
    fs::create_dir(rootfs.join("etc")).unwrap();
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:\n",
    )
    .unwrap();
    let state = dir.join("state");
    let scratch = dir.join("scratch");
    let runc = Runc::new(&state, &scratch).unwrap();
    (rootfs, state, scratch, runc)
}

impl Fixture {
    fn run(&self, spec: &RunSpec) -> (Result<(), ExecError>, CollectOutput) {
        let mut out = CollectOutput::default();
        let result = self.runc.run(&self.rootfs, spec, &mut out);
        (result, out)
    }

    fn sh(&self, script: &str) -> RunSpec {
        RunSpec::new(["/bin/sh", "-c", script])
    }

    /// Runs `script` and returns its stdout, failing the test on an error.
    fn stdout(&self, spec: &RunSpec) -> String {
        let (result, out) = self.run(spec);
        if let Err(e) = result {
            panic!("{e}\nstderr: {}", out.stderr_text());
        }
        out.stdout_text()
    }

    /// No container in runc's state and no bundle left behind.
    fn assert_nothing_left(&self) {
        let list = Command::new(self.runc.binary())
            .arg("--root")
            .arg(&self.state)
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert!(list.status.success());
        assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");
        let bundles: Vec<_> = fs::read_dir(&self.scratch).unwrap().collect();
        assert!(bundles.is_empty(), "bundles left: {bundles:?}");
    }

    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = walk(&self.rootfs, &self.rootfs);
        names.sort();
        names
    }
}

fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.starts_with(root.join("bin")) {
            continue;
        }
        out.push(path.strip_prefix(root).unwrap().display().to_string());
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(root, &path));
        }
    }
    out
}

#[test]
fn stdout_and_stderr_arrive_on_their_streams() {
    let Some(f) = fixture() else { return };
    struct Chunks(Vec<(Stream, Vec<u8>)>);
    impl OutputSink for Chunks {
        fn output(&mut self, stream: Stream, bytes: &[u8]) {
            self.0.push((stream, bytes.to_vec()));
        }
    }
    let mut chunks = Chunks(Vec::new());
    f.runc
        .run(&f.rootfs, &f.sh("echo hi; echo err >&2"), &mut chunks)
        .unwrap();
    let text = |s: Stream| -> String {
        chunks
            .0
            .iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    };
    assert_eq!(text(Stream::Stdout), "hi\n");
    assert_eq!(text(Stream::Stderr), "err\n");
    f.assert_nothing_left();
}

#[test]
fn env_cwd_and_defaults_are_applied() {
    let Some(f) = fixture() else { return };
    let mut spec = f.sh("pwd; echo $FOO; echo $HOME; echo $PATH; hostname");
    spec.env = vec!["FOO=bar baz".to_string()];
    spec.cwd = "/etc".to_string();
    assert_eq!(
        f.stdout(&spec),
        "/etc\nbar baz\n/root\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         buildkitsandbox\n"
    );
}

#[test]
fn a_missing_working_directory_is_created() {
    let Some(f) = fixture() else { return };
    let mut spec = f.sh("pwd; stat -c %u:%g /work /work/sub");
    spec.cwd = "/work/sub".to_string();
    spec.user = "app".to_string();
    assert_eq!(f.stdout(&spec), "/work/sub\n1000:1000\n1000:1000\n");
    assert!(f.rootfs.join("work/sub").is_dir());
}

#[test]
fn users_are_resolved_in_the_rootfs() {
    let Some(f) = fixture() else { return };
    let mut spec = f.sh("id -u; id -g; echo $HOME");
    spec.user = "app".to_string();
    assert_eq!(f.stdout(&spec), "1000\n1000\n/home/app\n");
    spec.user = "1000:50".to_string();
    assert_eq!(f.stdout(&spec), "1000\n50\n/home/app\n");

    spec.user = "nobody".to_string();
    let (result, _) = f.run(&spec);
    let err = result.unwrap_err();
    assert!(matches!(err, ExecError::UnknownUser(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "unable to find user nobody: no matching entries in passwd file"
    );
    f.assert_nothing_left();
}

#[test]
fn network_none_has_only_loopback() {
    let Some(f) = fixture() else { return };
    let mut spec = f.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    spec.network = Network::None;
    assert_eq!(f.stdout(&spec), "lo\n");
}

#[test]
fn etc_files_are_provided_and_never_left_in_the_rootfs() {
    let Some(f) = fixture() else { return };
    let before = f.listing();
    let mut spec =
        f.sh("cat /etc/hosts; cat /etc/hostname; test -s /etc/resolv.conf && echo resolv");
    spec.hostname = "box".to_string();
    let out = f.stdout(&spec);
    assert!(out.contains("127.0.0.1\tlocalhost box\n"), "{out}");
    assert!(out.contains("\nbox\nresolv\n"), "{out}");
    // The default hostname too.
    let out = f.stdout(&f.sh("cat /etc/hosts"));
    assert!(out.contains("buildkitsandbox"), "{out}");
    assert_eq!(f.listing(), before, "stubs left in the rootfs");
    for stub in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc",
        "sys",
        "dev",
    ] {
        assert!(!f.rootfs.join(stub).exists(), "{stub} left behind");
    }
    f.assert_nothing_left();
}

#[test]
fn a_failure_carries_its_exit_code_and_last_lines() {
    let Some(f) = fixture() else { return };
    let script = "for i in $(seq 1 30); do echo line$i; done; exit 3";
    let (result, out) = f.run(&f.sh(script));
    assert_eq!(out.stdout_text().lines().count(), 30);
    let err = result.unwrap_err();
    let text = err.to_string();
    match err {
        ExecError::Failed {
            command,
            exit_code,
            last_lines,
        } => {
            assert_eq!(command, format!("/bin/sh -c {script}"));
            assert_eq!(exit_code, 3);
            let expected: Vec<String> = (11..=30).map(|i| format!("line{i}")).collect();
            assert_eq!(last_lines, expected);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        text.starts_with(&format!(
            "process \"/bin/sh -c {script}\" did not complete successfully: exit code: 3\nline11\n"
        )),
        "{text}"
    );
    f.assert_nothing_left();
    assert!(!f.rootfs.join("proc").exists());
}

#[test]
fn a_missing_executable_is_a_runtime_error() {
    let Some(f) = fixture() else { return };
    let (result, _) = f.run(&RunSpec::new(["/no/such/binary"]));
    let err = result.unwrap_err();
    assert!(matches!(err, ExecError::Runtime { .. }), "{err:?}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    f.assert_nothing_left();
}

#[test]
fn written_files_land_in_the_rootfs_and_binds_work() {
    let Some(f) = fixture() else { return };
    let host = tempfile::TempDir::new().unwrap();
    fs::write(host.path().join("input"), "from the host\n").unwrap();
    let mut spec = f.sh("cat /mnt/in/input > /out.txt; echo made > /mnt/in/output");
    spec.mounts.push(rbuild::executor::BindMount {
        source: host.path().to_path_buf(),
        target: "/mnt/in".to_string(),
        readonly: false,
    });
    f.stdout(&spec);
    assert_eq!(
        fs::read_to_string(f.rootfs.join("out.txt")).unwrap(),
        "from the host\n"
    );
    assert_eq!(
        fs::read_to_string(host.path().join("output")).unwrap(),
        "made\n"
    );
    // The mount target was a stub: gone again.
    assert!(!f.rootfs.join("mnt").exists());
    f.assert_nothing_left();
}

#[test]
fn parallel_runs_do_not_collide() {
    let Some(f) = fixture() else { return };
    // One rootfs per run, as the solver gives each RUN its own snapshot; one runc state.
    let roots: Vec<PathBuf> = (0..4)
        .map(|i| {
            let root = f.scratch.with_file_name(format!("rootfs{i}"));
            let status = Command::new("cp")
                .arg("-a")
                .arg(&f.rootfs)
                .arg(&root)
                .status()
                .unwrap();
            assert!(status.success());
            root
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                let f = &f;
                s.spawn(move || {
                    let mut out = CollectOutput::default();
                    f.runc
                        .run(root, &f.sh(&format!("echo run{i}")), &mut out)
                        .unwrap();
                    out.stdout_text()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), format!("run{i}\n"));
        }
    });
    f.assert_nothing_left();
}

/// Set by `an_interrupt_kills_and_deletes_the_container` for the copy of this test binary it
/// runs and interrupts.
const CHILD_DIR: &str = "RBUILD_EXECUTOR_INTERRUPT_CHILD";

/// In the child only: runs a long process until the parent sends SIGINT.
#[test]
fn interrupted_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let (rootfs, _, _, runc) = make_rootfs(Path::new(&dir));
    rbuild::interrupt::install();
    let mut out = CollectOutput::default();
    let result = runc.run(&rootfs, &RunSpec::new(["sleep", "600"]), &mut out);
    // The signal killed the container, the run returned and cleaned up: exit as main does.
    if rbuild::interrupt::interrupted() {
        std::process::exit(130);
    }
    panic!("the run was not interrupted: {result:?}");
}

#[test]
fn an_interrupt_kills_and_deletes_the_container() {
    let Some(f) = fixture() else { return };
    let dir = f.scratch.with_file_name("child");
    fs::create_dir(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "interrupted_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (state, scratch) = (dir.join("state"), dir.join("scratch"));
    let running = || {
        let list = Command::new(f.runc.binary())
            .arg("--root")
            .arg(&state)
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&list.stdout).trim().to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while running().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    assert_eq!(running(), "", "container left after the interrupt");
    let bundles: Vec<_> = fs::read_dir(&scratch).unwrap().collect();
    assert!(bundles.is_empty(), "bundles left: {bundles:?}");
}
