//! RUN steps for a foreign platform (issue 7): `rbuild setup-binfmt` registers qemu's handlers
//! with the F flag; a build without any emulator says how to get one; an `--emulator` hook (or
//! the config file's) runs the step through qemu-user bound into the container. Root, runc,
//! qemu-user-static and the arm64 busybox are needed (under `CI=true` their absence is a
//! failure, not a skip).

use std::fs;
use std::path::{Path, PathBuf};

use rbuild_frontend::platform::Platform;
use tempfile::TempDir;

use crate::arm64::arm64_busybox;
use crate::util::{can_run_containers, rbuild, require_tool, run, Output};

const QEMU_AARCH64: &str = "/usr/bin/qemu-aarch64-static";

/// The RUN records the machine it runs on and what the process at the container's root runs:
/// the emulator hook, when there is one. Applets by name run inside the one busybox process
/// (busybox-static prefers its applets), so no second foreign program is executed: with a
/// hook and no binfmt_misc handler, a new foreign program could not start.
const DOCKERFILE: &str = "FROM scratch\n\
    COPY busybox /bin/busybox\n\
    RUN [\"/bin/busybox\",\"sh\",\"-c\",\"readlink /proc/1/exe > /emulator; uname -m > /arch\"]\n";

/// Whether arm64 is foreign here: on an arm64 host these tests have nothing to emulate.
fn arm64_is_foreign(what: &str) -> bool {
    let foreign = Platform::host().architecture != "arm64";
    if !foreign {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} needs a host that does not run arm64 natively; CI runs on amd64"
        );
        eprintln!("skipping {what}: this host runs arm64 natively");
    }
    foreign
}

/// Root, qemu-user-static, and a foreign arm64; missing, `what` is skipped with the reason
/// (under `CI=true` a missing prerequisite fails instead).
fn can_setup_binfmt(what: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} need root under CI=true"
        );
        eprintln!("skipping {what}: they need root");
        return false;
    }
    require_tool("qemu-aarch64-static") && arm64_is_foreign(what)
}

/// A context holding the Dockerfile and the arm64 busybox, and a state root of its own (so no
/// other test's cached step stands in for this one's run); `None` when the tests are skipped.
struct Arm64Build {
    dir: TempDir,
}

impl Arm64Build {
    fn new(what: &str) -> Option<Arm64Build> {
        if !arm64_is_foreign(what) || !can_run_containers(what) {
            return None;
        }
        let busybox = arm64_busybox()?;
        let dir = TempDir::new().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        fs::copy(busybox, ctx.join("busybox")).unwrap();
        fs::create_dir(dir.path().join("binfmt_misc")).unwrap();
        Some(Arm64Build { dir })
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `rbuild build --platform linux/arm64 -o type=local,dest=out ctx`, with a binfmt_misc
    /// that has no handler at all (an empty, unmounted directory), plus `args`.
    fn build(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = rbuild(self.dir.path());
        cmd.env("RBUILD_ROOT", self.dir.path().join("state"))
            .env("RBUILD_BINFMT_MISC", self.dir.path().join("binfmt_misc"))
            .env("RBUILD_CONFIG", self.dir.path().join("no-config.toml"))
            .args(["build", "--progress=plain", "--platform", "linux/arm64"])
            .arg(format!("--output=type=local,dest={}", self.out().display()));
        for (key, value) in env {
            cmd.env(key, value);
        }
        run(cmd.args(args).arg("ctx"))
    }

    /// The build ran its RUN through the hook: it reports an arm64 machine, and the process
    /// at the container's root was the emulator bound at /dev/.rbuild-emulator (through
    /// binfmt_misc it would be the registered interpreter).
    fn assert_ran_through_the_hook(&self, out: &Output) {
        assert_eq!(out.code, 0, "{out}");
        let read = |name: &str| fs::read_to_string(self.out().join(name)).unwrap();
        assert_eq!(read("arch").trim(), "aarch64", "{out}");
        assert_eq!(read("emulator").trim(), "/dev/.rbuild-emulator", "{out}");
        assert!(!self.out().join("dev/.rbuild-emulator").exists());
    }
}

#[test]
fn setup_binfmt_registers_qemu_with_the_fix_binary_flag() {
    if !can_setup_binfmt("the setup-binfmt tests") {
        return;
    }
    let dir = TempDir::new().unwrap();
    let first = run(rbuild(dir.path()).args(["setup-binfmt", "linux/arm64"]));
    assert_eq!(first.code, 0, "{first}");
    // Registered now, or before (by the system, or by a test running beside this one).
    assert!(
        first.stdout.starts_with("arm64: registered qemu-aarch64 (")
            || first.stdout == "arm64: already registered\n",
        "{first}"
    );
    let entry = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap();
    assert!(entry.starts_with("enabled\n"), "{entry}");
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap();
    assert!(flags.contains('F'), "{entry}");
    let second = run(rbuild(dir.path()).args(["setup-binfmt", "aarch64"]));
    assert_eq!(
        (second.code, second.stdout.as_str()),
        (0, "arm64: already registered\n"),
        "{second}"
    );
}

#[test]
fn setup_binfmt_refuses_platforms_it_cannot_serve() {
    if !can_setup_binfmt("the setup-binfmt tests") {
        return;
    }
    let dir = TempDir::new().unwrap();
    let out = run(rbuild(dir.path()).args(["setup-binfmt", "linux/wasm"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("error: linux/wasm: "), "{out}");
    assert!(out.stderr.contains("--emulator wasm=PATH"), "{out}");
    let out = run(rbuild(dir.path()).args(["setup-binfmt", "linux/vax"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("\"vax\""), "{out}");
}

// Needs the build wiring (Emulators::load in build.rs, for_platform in solve.rs).
#[test]
fn a_foreign_run_without_an_emulator_says_how_to_get_one() {
    let Some(build) = Arm64Build::new("the emulation builds") else {
        return;
    };
    let out = build.build(&[], &[]);
    assert_eq!(out.code, 1, "{out}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or("");
    assert!(
        error.contains("RUN for linux/arm64 needs an emulator"),
        "{out}"
    );
    assert!(error.contains("`rbuild setup-binfmt`"), "{out}");
    assert!(
        error.contains("--emulator arm64=/usr/bin/qemu-aarch64-static"),
        "{out}"
    );
}

// Needs the build wiring (Emulators::load in build.rs, for_platform in solve.rs).
#[test]
fn an_emulator_flag_runs_a_foreign_run_without_binfmt() {
    let Some(build) = Arm64Build::new("the emulation builds") else {
        return;
    };
    if !require_tool(QEMU_AARCH64) {
        return;
    }
    let out = build.build(&["--emulator", &format!("aarch64={QEMU_AARCH64}")], &[]);
    build.assert_ran_through_the_hook(&out);
}

// Needs the build wiring (Emulators::load in build.rs, for_platform in solve.rs).
#[test]
fn the_config_file_names_emulators_too() {
    let Some(build) = Arm64Build::new("the emulation builds") else {
        return;
    };
    if !require_tool(QEMU_AARCH64) {
        return;
    }
    let config = build.dir.path().join("config.toml");
    fs::write(
        &config,
        "[emulators]\narm64 = \"/usr/bin/nonexistent-qemu\"\n",
    )
    .unwrap();
    let out = build.build(&[], &[("RBUILD_CONFIG", &config)]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("/usr/bin/nonexistent-qemu")
            && out.stderr.contains(config.to_str().unwrap()),
        "a bad hook is named, with the file that names it:\n{out}"
    );
    fs::write(
        &config,
        format!("[emulators]\narm64 = \"{QEMU_AARCH64}\"\n"),
    )
    .unwrap();
    let out = build.build(&[], &[("RBUILD_CONFIG", &config)]);
    build.assert_ran_through_the_hook(&out);
}
