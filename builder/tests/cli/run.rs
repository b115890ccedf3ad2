//! Builds that run containers: no build mount leaks into a layer, bad input fails clearly and
//! leaves a root the next build uses, Ctrl-C undoes every mount. Root and runc needed (under
//! `CI=true` their absence is a failure, not a skip).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rbuild_cache::image::blobs::decompress_auto;
use tempfile::TempDir;

use crate::util::{can_run_containers, rbuild, run, Output};

/// A state root with `busybox:latest` built by rbuild from Debian's busybox-static.
pub(crate) struct Busybox {
    pub(crate) dir: TempDir,
}

impl Busybox {
    pub(crate) fn new() -> Option<Busybox> {
        if !can_run_containers("the RUN tests") {
            return None;
        }
        let dir = TempDir::new().unwrap();
        let ctx = dir.path().join("busybox-context");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-context.sh");
        let made = Command::new("bash").arg(script).arg(&ctx).output().unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let bb = Busybox { dir };
        let out = bb
            .rbuild()
            .args(["-t", "busybox:latest"])
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(bb)
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn rbuild(&self) -> assert_cmd::Command {
        let mut cmd = rbuild(self.dir.path());
        cmd.env("RBUILD_ROOT", self.root());
        cmd
    }

    pub(crate) fn build(&self, dockerfile: &str, args: &[&str]) -> Output {
        let ctx = self.dir.path().join("ctx");
        let _ = fs::remove_dir_all(&ctx);
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        run(self.rbuild().arg("build").args(args).arg(&ctx))
    }

    /// The ids of the containers runc knows on this root, one per line.
    fn containers(&self) -> String {
        let listed = Command::new("runc")
            .arg("--root")
            .arg(self.root().join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).trim().to_string()
    }

    /// Starts a build whose RUN sleeps a minute and returns once its container runs (its
    /// output arrived), with the child and a thread gathering the rest of its stderr.
    fn start_sleeping_build(&self) -> (std::process::Child, std::thread::JoinHandle<String>) {
        let ctx = self.dir.path().join("ctx-sleep");
        fs::create_dir_all(&ctx).unwrap();
        let dockerfile = "FROM busybox\nRUN echo started && sleep 60\n";
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("rbuild"))
            .env("RBUILD_ROOT", self.root())
            .arg(&ctx)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut seen = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                // The step's output line, not its title (which holds the word too).
                if line.ends_with(" started") && !line.contains("RUN") {
                    let _ = started_tx.send(());
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            seen
        });
        started_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the RUN never started");
        (child, reader)
    }

    /// Nothing of ours is mounted and no container of ours is left.
    pub(crate) fn assert_clean(&self) {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.root();
        let root = root.to_string_lossy();
        assert!(
            !mounts.lines().any(|l| l.contains(root.as_ref())),
            "mounts left under {root}:\n{mounts}"
        );
        assert_eq!(self.containers(), "");
    }
}

/// The paths in the top layer of the OCI layout at `dir`.
fn top_layer_paths(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(digest)).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = layers.last().unwrap()["digest"].as_str().unwrap();
    let reader = decompress_auto(fs::File::open(blob(top)).unwrap()).unwrap();
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn build_mounts_never_land_in_a_layer() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox\nRUN echo made > /made && cat /etc/hosts /etc/resolv.conf /etc/hostname >/dev/null\n";
    let out = bb.build(dockerfile, &["-o", "type=oci,tar=false,dest=out"]);
    assert_eq!(out.code, 0, "{out}");
    let paths = top_layer_paths(&bb.dir.path().join("out"));
    assert!(paths.iter().any(|p| p == "made"), "{paths:?}");
    for leak in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc/",
        "sys/",
        "dev/",
    ] {
        assert!(
            !paths.iter().any(|p| p == leak),
            "{leak} leaked into the layer: {paths:?}"
        );
    }
    bb.assert_clean();
}

#[test]
fn a_failing_run_shows_its_command_exit_code_and_last_lines() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox\nRUN for i in $(seq 1 25); do echo line$i; done; exit 7\n";
    let out = bb.build(dockerfile, &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "process \"/bin/sh -c for i in $(seq 1 25); do echo line$i; done; exit 7\" did not complete successfully: exit code: 7"
        ),
        "{out}"
    );
    let tail = out.stderr.split("exit code: 7").nth(1).unwrap();
    assert!(
        tail.contains("line25") && tail.contains("line6") && !tail.contains("line5\n"),
        "{out}"
    );
    bb.assert_clean();
    // The root stays usable: the next build runs and tags.
    let out = bb.build("FROM busybox\nRUN echo fine\n", &["-t", "next:1"]);
    assert_eq!(out.code, 0, "{out}");
    let out = run(bb.rbuild().args(["images", "-q"]));
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
}

#[test]
fn missing_sources_unknown_users_and_stage_cycles_are_clear_errors() {
    let Some(bb) = Busybox::new() else { return };
    let out = bb.build("FROM busybox\nCOPY missing.txt /\n", &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("\"missing.txt\": not found"), "{out}");
    let out = bb.build("FROM busybox\nUSER nosuchuser\nRUN true\n", &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("unable to find user nosuchuser: no matching entries in passwd file"),
        "{out}"
    );
    let out = bb.build("FROM busybox AS a\nCOPY --from=b /x /x\nFROM a AS b\n", &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Dockerfile:2"), "{out}");
    bb.assert_clean();
    assert_eq!(bb.build("FROM busybox\nRUN true\n", &[]).code, 0);
}

#[test]
fn ctrl_c_kills_the_container_and_undoes_every_mount() {
    let Some(bb) = Busybox::new() else { return };
    let (mut child, reader) = bb.start_sleeping_build();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Killed and unwound by the build itself (the step reports itself CANCELED), not left to
    // finish its sleep or to the signal thread's last-resort cleanup (which reports no step).
    let run = stderr
        .lines()
        .find(|l| l.contains("RUN echo started"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the RUN step is shown");
    assert!(stderr.contains(&format!("{run} CANCELED")), "{stderr}");
    bb.assert_clean();
    assert_eq!(bb.build("FROM busybox\nRUN true\n", &[]).code, 0);
}

#[test]
fn a_context_tar_on_stdin_builds_like_a_directory() {
    let Some(bb) = Busybox::new() else { return };
    let ctx = bb.dir.path().join("tar-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /ctx/\n").unwrap();
    fs::write(ctx.join("hello.txt"), "from a tar\n").unwrap();
    // A context file is a file, whatever its name: not a layer whiteout.
    fs::write(ctx.join(".wh.hello.txt"), "kept\n").unwrap();
    for (name, flag) in [
        ("plain.tar", "-cf"),
        ("gz.tar.gz", "-czf"),
        ("xz.tar.xz", "-cJf"),
    ] {
        let tar = bb.dir.path().join(name);
        let made = Command::new("tar")
            .arg(flag)
            .arg(&tar)
            .arg("-C")
            .arg(&ctx)
            .arg(".")
            .status();
        assert!(made.unwrap().success());
        let dest = bb.dir.path().join(format!("out-{name}"));
        let out = run(bb
            .rbuild()
            .args(["build", "-o"])
            .arg(format!("type=oci,tar=false,dest={}", dest.display()))
            .arg("-")
            .pipe_stdin(&tar)
            .unwrap());
        assert_eq!(out.code, 0, "{name}: {out}");
        let paths = top_layer_paths(&dest);
        for want in ["ctx/hello.txt", "ctx/.wh.hello.txt", "ctx/Dockerfile"] {
            assert!(
                paths.iter().any(|p| p == want),
                "{name}: {want} missing in {paths:?}"
            );
        }
    }
}

/// As BuildKit's exporter: a step that changes nothing adds no layer, and its history entry
/// says `empty_layer`.
#[test]
fn steps_that_change_nothing_add_no_layer() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox\nRUN true\nRUN echo 1 > /one\nWORKDIR /tmp\n";
    let out = bb.build(dockerfile, &["-o", "type=oci,tar=false,dest=out"]);
    assert_eq!(out.code, 0, "{out}");
    let dir = bb.dir.path().join("out");
    let read = |d: &str| -> serde_json::Value {
        let path = dir
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap());
    let history = config["history"].as_array().unwrap();
    let last: Vec<(String, bool)> = history[history.len() - 3..]
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"] == true,
            )
        })
        .collect();
    assert_eq!(
        last,
        [
            ("RUN /bin/sh -c true # buildkit".to_string(), true),
            ("RUN /bin/sh -c echo 1 > /one # buildkit".to_string(), false),
            ("WORKDIR /tmp".to_string(), true),
        ]
    );
    let layers = manifest["layers"].as_array().unwrap().len();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layers, non_empty);
    assert_eq!(top_layer_paths(&dir), ["one"]);
}

/// RUN is filtered as Docker's default seccomp profile filters it: no new namespaces, no
/// kernel keyrings — the attack surface an untrusted Dockerfile in CI must not get.
#[test]
fn run_has_a_seccomp_filter_that_refuses_namespaces() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox\nRUN grep 'Seccomp:.*2' /proc/self/status && \\\n    if unshare -U true; then exit 9; fi\n";
    let out = bb.build(dockerfile, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("unshare(0x10000000): Operation not permitted"),
        "{out}"
    );
}

/// `kill -9` gives rbuild no chance to clean up: its container keeps running and its
/// scratch and snapshot stay. The next rbuild on the root reaps all of it.
#[test]
fn after_a_sigkill_the_next_build_reaps_what_was_left() {
    let Some(bb) = Busybox::new() else { return };
    let (mut child, _reader) = bb.start_sleeping_build();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(
        bb.containers(),
        "",
        "the orphaned container runs until the reap"
    );
    assert_eq!(bb.build("FROM busybox\nRUN true\n", &[]).code, 0);
    bb.assert_clean();
    let left: Vec<_> = fs::read_dir(bb.root().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "scratch left in tmp/: {left:?}");
}

/// Each vertex's last rawjson state: name → (started, completed) in seconds of the day.
fn rawjson_times(stderr: &str) -> std::collections::BTreeMap<String, (f64, f64)> {
    let seconds = |t: &serde_json::Value| -> Option<f64> {
        let time = t.as_str()?.split_once('T')?.1.trim_end_matches('Z');
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    };
    let mut times = std::collections::BTreeMap::new();
    for line in stderr.lines() {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for v in status["vertexes"].as_array().into_iter().flatten() {
            if let (Some(start), Some(end)) = (seconds(&v["started"]), seconds(&v["completed"])) {
                times.insert(
                    v["name"].as_str().unwrap_or_default().to_string(),
                    (start, end),
                );
            }
        }
    }
    times
}

const FOUR_SLEEPS: &str = "FROM busybox AS a\nRUN sleep 1 && echo a > /a\n\
    FROM busybox AS b\nRUN sleep 1 && echo b > /b\n\
    FROM busybox AS c\nRUN sleep 1 && echo c > /c\n\
    FROM busybox AS d\nRUN sleep 1 && echo d > /d\n\
    FROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\nCOPY --from=d /d /d\n";

#[test]
fn independent_stages_run_at_once() {
    let Some(bb) = Busybox::new() else { return };
    let out = bb.build(
        FOUR_SLEEPS,
        &["--no-cache", "-j", "4", "--progress=rawjson"],
    );
    assert_eq!(out.code, 0, "{out}");
    let times = rawjson_times(&out.stderr);
    let sleeps: Vec<(f64, f64)> = times
        .iter()
        .filter(|(name, _)| name.contains("RUN sleep 1"))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(sleeps.len(), 4, "{times:?}");
    let last_start = sleeps.iter().map(|t| t.0).fold(f64::MIN, f64::max);
    let first_end = sleeps.iter().map(|t| t.1).fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "the four RUNs did not all run at once: {times:?}"
    );
    // -j 1: one RUN at a time, no two overlap.
    let out = bb.build(
        FOUR_SLEEPS,
        &["--no-cache", "-j", "1", "--progress=rawjson"],
    );
    assert_eq!(out.code, 0, "{out}");
    let mut sleeps: Vec<(f64, f64)> = rawjson_times(&out.stderr)
        .into_iter()
        .filter(|(name, _)| name.contains("RUN sleep 1"))
        .map(|(_, t)| t)
        .collect();
    sleeps.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        sleeps.windows(2).all(|w| w[0].1 <= w[1].0 + 0.05),
        "-j 1 overlapped: {sleeps:?}"
    );
}

/// How many cache records the root holds (read with Python's sqlite3, as another tool would).
fn cache_records(root: &Path) -> u64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from cache_records').fetchone()[0])")
        .arg(root.join("cache.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_failed_stage_cancels_the_others_and_records_nothing() {
    let Some(bb) = Busybox::new() else { return };
    let before = cache_records(&bb.root());
    let dockerfile = "FROM busybox AS slow\nRUN sleep 60 && echo never > /x\n\
        FROM busybox AS broken\nRUN sleep 1 && exit 3\n\
        FROM scratch\nCOPY --from=slow /x /x\nCOPY --from=broken / /b/\n";
    let out = bb.build(dockerfile, &["-j", "4"]);
    assert_eq!(out.code, 1, "{out}");
    // The build's error is the broken stage's; the sleeping one was stopped, and shown as
    // BuildKit shows it: `#N CANCELED`, not as an error of its own.
    assert!(
        out.stderr
            .contains("error: [broken 1/1] RUN sleep 1 && exit 3: process \"/bin/sh -c sleep 1 && exit 3\" did not complete successfully: exit code: 3"),
        "{out}"
    );
    let slow = out
        .stderr
        .lines()
        .find(|l| l.contains("[slow 1/1] RUN sleep 60"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the slow step is shown")
        .to_string();
    assert!(out.stderr.contains(&format!("{slow} CANCELED")), "{out}");
    assert!(!out.stderr.contains("exit code: 137"), "{out}");
    bb.assert_clean();
    assert_eq!(cache_records(&bb.root()), before, "{out}");
}

#[test]
fn identical_stages_run_once() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox AS one\nRUN sleep 0.2 && date +%s%N > /t\n\
        FROM busybox AS two\nRUN sleep 0.2 && date +%s%N > /t\n\
        FROM scratch\nCOPY --from=one /t /a\nCOPY --from=two /t /b\n";
    let out_dir = bb.dir.path().join("twins");
    let dest = format!("type=local,dest={}", out_dir.display());
    let out = bb.build(dockerfile, &["--no-cache", "-j", "4", "-o", &dest]);
    assert_eq!(out.code, 0, "{out}");
    let (a, b) = (
        fs::read_to_string(out_dir.join("a")).unwrap(),
        fs::read_to_string(out_dir.join("b")).unwrap(),
    );
    assert_eq!(a, b, "the two identical RUNs ran separately\n{out}");
    let shown = ["[one 1/1] RUN", "[two 1/1] RUN"].map(|name| out.stderr.contains(name));
    assert_eq!(shown.iter().filter(|s| **s).count(), 1, "{out}");
}

#[test]
fn network_none_gives_run_steps_only_loopback() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox\nRUN cat /proc/net/dev > /net\n";
    let out_dir = bb.dir.path().join("net");
    let dest = format!("type=local,dest={}", out_dir.display());
    let out = bb.build(dockerfile, &["--network=none", "-o", &dest]);
    assert_eq!(out.code, 0, "{out}");
    let devices = fs::read_to_string(out_dir.join("net")).unwrap();
    let names: Vec<&str> = devices
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert_eq!(names, ["lo"], "{devices}");
}

/// The distinct vertex digests of the rawjson events whose name holds `text`.
fn vertex_digests(stderr: &str, text: &str) -> std::collections::BTreeSet<String> {
    let mut digests = std::collections::BTreeSet::new();
    for line in stderr.lines() {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for v in status["vertexes"].as_array().into_iter().flatten() {
            if v["name"].as_str().is_some_and(|n| n.contains(text)) {
                digests.insert(v["digest"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    digests
}

/// Two platforms the host runs without emulation (amd64 and 386 on x86_64): the
/// `$BUILDPLATFORM` stage runs once for both, each target stage once per platform with its
/// own TARGETPLATFORM, and the outputs hold one image per platform under an index.
#[test]
fn two_platforms_share_the_build_platform_stage_and_get_an_index() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipping: linux/386 runs natively only on an x86_64 host");
        return;
    }
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM --platform=$BUILDPLATFORM busybox AS tool\n\
        RUN sleep 0.1 && date +%s%N > /stamp\n\
        FROM busybox\nARG TARGETPLATFORM\nCOPY --from=tool /stamp /stamp\n\
        RUN echo \"$TARGETPLATFORM\" > /target\n";
    let out_dir = bb.dir.path().join("split");
    let local = format!("type=local,dest={}", out_dir.display());
    let platforms = ["--platform", "linux/amd64,linux/386"];
    let out = bb.build(
        dockerfile,
        &[&platforms[..], &["--progress=rawjson", "-o", &local]].concat(),
    );
    assert_eq!(out.code, 0, "{out}");
    let read = |dir: &str, file: &str| fs::read_to_string(out_dir.join(dir).join(file)).unwrap();
    assert_eq!(read("linux_amd64", "target"), "linux/amd64\n");
    assert_eq!(read("linux_386", "target"), "linux/386\n");
    assert_eq!(read("linux_amd64", "stamp"), read("linux_386", "stamp"));
    assert_eq!(vertex_digests(&out.stderr, "date +%s%N").len(), 1, "{out}");
    assert_eq!(vertex_digests(&out.stderr, "> /target").len(), 2, "{out}");

    // An OCI tar: index.json names one image index listing both platforms; --iidfile holds
    // the index's digest.
    let tar = bb.dir.path().join("multi.tar");
    let iid = bb.dir.path().join("iid");
    let oci = format!("type=oci,dest={}", tar.display());
    let iid_arg = iid.to_string_lossy().into_owned();
    let out = bb.build(
        dockerfile,
        &[&platforms[..], &["-o", &oci, "--iidfile", &iid_arg]].concat(),
    );
    assert_eq!(out.code, 0, "{out}");
    let layout = bb.dir.path().join("layout");
    fs::create_dir_all(&layout).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let top = json(layout.join("index.json"));
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{top}"
    );
    let digest = entry["digest"].as_str().unwrap();
    assert_eq!(fs::read_to_string(&iid).unwrap(), digest);
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(blob(digest));
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let manifest = json(blob(m["digest"].as_str().unwrap()));
            let config = json(blob(manifest["config"]["digest"].as_str().unwrap()));
            // The index entry and the image's own config agree on the platform.
            assert_eq!(config["architecture"], m["platform"]["architecture"]);
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/386", "linux/amd64"]);
}

/// `--no-cache-filter STAGE` runs that stage again; a `COPY --from` of it must then copy what
/// it made this time, not reuse the copy of what it made before (a wrong image), and a later
/// plain rebuild reuses the new content.
#[test]
fn a_stage_run_again_by_no_cache_filter_is_what_copy_from_copies() {
    let Some(bb) = Busybox::new() else { return };
    let dockerfile = "FROM busybox AS gen\nRUN cat /proc/sys/kernel/random/uuid > /gen.txt\n\
        FROM busybox\nCOPY --from=gen /gen.txt /gen.txt\nRUN cat /gen.txt > /copy.txt\n";
    let out_dir = bb.dir.path().join("gen");
    let dest = format!("type=local,dest={}", out_dir.display());
    let read = |name: &str| fs::read_to_string(out_dir.join(name)).unwrap();
    let first = bb.build(dockerfile, &["-o", &dest]);
    assert_eq!(first.code, 0, "{first}");
    let made_first = read("gen.txt");
    let again = bb.build(
        dockerfile,
        &["--no-cache-filter", "gen", "-o", &dest, "--progress=plain"],
    );
    assert_eq!(again.code, 0, "{again}");
    let made_again = read("gen.txt");
    assert_ne!(
        made_again, made_first,
        "the image has what the gen stage made before it ran again\n{again}"
    );
    assert_eq!(read("copy.txt"), made_again, "{again}");
    // A plain rebuild hits every step and keeps the newer content.
    let plain = bb.build(dockerfile, &["-o", &dest, "--progress=plain"]);
    assert_eq!(plain.code, 0, "{plain}");
    assert!(!plain.stderr.contains("miss:"), "{plain}");
    assert_eq!(read("gen.txt"), made_again);
}

/// A RUN that appends its build arg to a cache mount's log and copies the log into the image.
const CACHE_LOG: &str = "FROM busybox
ARG N
RUN --mount=type=cache,target=/cache,id=log-cache echo $N >> /cache/log && cp /cache/log /seen
";

#[test]
fn a_cache_mount_keeps_its_content_between_builds_and_never_lands_in_a_layer() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    let out_dir = bb.dir.path().join("out");
    let dest = format!("type=local,dest={}", out_dir.display());
    for n in ["1", "2"] {
        let arg = format!("N={n}");
        let out = bb.build(CACHE_LOG, &["--build-arg", &arg, "-o", &dest]);
        assert_eq!(out.code, 0, "{out}");
    }
    assert_eq!(fs::read_to_string(out_dir.join("seen")).unwrap(), "1\n2\n");
    assert!(
        !out_dir.join("cache/log").exists(),
        "the cache's content is in the image"
    );
    bb.assert_clean();
}

#[test]
fn cache_mounts_travel_with_an_exported_cache_to_another_root() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    let cache = bb.dir.path().join("shared-cache");
    let to = format!(
        "type=local,dest={},mode=max,cache-mounts=true",
        cache.display()
    );
    let out = bb.build(CACHE_LOG, &["--build-arg", "N=1", "--cache-to", &to]);
    assert_eq!(out.code, 0, "{out}");
    // Another root with the same busybox image, and none of the first root's caches.
    let saved = bb.dir.path().join("busybox.tar");
    let out = run(bb
        .rbuild()
        .args(["save", "busybox:latest", "-o"])
        .arg(&saved));
    assert_eq!(out.code, 0, "{out}");
    let other = bb.dir.path().join("other-root");
    let out = run(rbuild(bb.dir.path())
        .env("RBUILD_ROOT", &other)
        .args(["load", "-i"])
        .arg(&saved));
    assert_eq!(out.code, 0, "{out}");
    let ctx = bb.dir.path().join("ctx");
    let out_dir = bb.dir.path().join("out-other");
    let from = format!("type=local,src={}", cache.display());
    let out = run(rbuild(bb.dir.path())
        .env("RBUILD_ROOT", &other)
        .args(["build", "--build-arg", "N=2", "--cache-from", &from, "-o"])
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg(&ctx));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(fs::read_to_string(out_dir.join("seen")).unwrap(), "1\n2\n");
}
