//! The build cache: which steps hit, which run again and why, on a state root of each test's
//! own. Steps are COPYs (no container runtime needed) unless a test says otherwise.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::util::{rbuild, run, Output};

/// A context directory and a state root of the test's own.
struct Project {
    dir: TempDir,
}

impl Project {
    fn new(dockerfile: &str, files: &[(&str, &str)]) -> Project {
        let project = Project {
            dir: TempDir::new().unwrap(),
        };
        project.write("ctx/Dockerfile", dockerfile);
        for (path, content) in files {
            project.write(&format!("ctx/{path}"), content);
        }
        project
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn build(&self, extra: &[&str]) -> Steps {
        let out = run(rbuild(self.dir.path())
            .env("RBUILD_ROOT", self.root())
            .args(["build", "--progress=rawjson"])
            .args(extra)
            .arg("ctx"));
        assert_eq!(out.code, 0, "{out}");
        Steps::read(out)
    }
}

/// Each step of a build, from its rawjson progress: name, whether it was CACHED, why it missed.
pub(crate) struct Steps {
    pub(crate) steps: Vec<Step>,
    pub(crate) out: Output,
}

#[derive(Debug)]
pub(crate) struct Step {
    digest: String,
    pub(crate) name: String,
    pub(crate) cached: bool,
    misses: Vec<String>,
}

impl Steps {
    /// Vertices in order of first appearance; FROM and context vertices (which never run a
    /// step) are left out.
    pub(crate) fn read(out: Output) -> Steps {
        let mut steps: Vec<Step> = Vec::new();
        for line in out.stderr.lines() {
            let status: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a rawjson line ({e}): {line}\n{out}"));
            for v in status["vertexes"].as_array().into_iter().flatten() {
                let name = v["name"].as_str().unwrap();
                if name.contains("] FROM ") || name == "[internal] load build context" {
                    continue;
                }
                let digest = v["digest"].as_str().unwrap().to_string();
                let position = match steps.iter().position(|s| s.digest == digest) {
                    Some(p) => p,
                    None => {
                        steps.push(Step {
                            digest,
                            name: v["name"].as_str().unwrap().to_string(),
                            cached: false,
                            misses: Vec::new(),
                        });
                        steps.len() - 1
                    }
                };
                let step = &mut steps[position];
                step.cached |= v["cached"].as_bool().unwrap_or(false);
                if let Some(reasons) = v["rbuildMissReasons"].as_array() {
                    step.misses = reasons
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect();
                }
            }
        }
        Steps { steps, out }
    }

    pub(crate) fn cached(&self) -> Vec<bool> {
        self.steps.iter().map(|s| s.cached).collect()
    }

    pub(crate) fn misses(&self, step: usize) -> &[String] {
        &self.steps[step].misses
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}\n{}", self.steps, self.out)
    }
}

const THREE_COPIES: &str = "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n";

fn three_files() -> [(&'static str, &'static str); 3] {
    [("a", "1\n"), ("b", "2\n"), ("c", "3\n")]
}

#[test]
fn an_unchanged_rebuild_hits_every_step() {
    let project = Project::new(THREE_COPIES, &three_files());
    let first = project.build(&[]);
    assert_eq!(first.cached(), [false, false, false], "{first}");
    assert_eq!(first.misses(0), ["first build of this step"], "{first}");
    let second = project.build(&[]);
    assert_eq!(second.cached(), [true, true, true], "{second}");
}

#[test]
fn one_changed_file_reruns_its_copy_and_what_follows_and_says_why() {
    let project = Project::new(THREE_COPIES, &three_files());
    project.build(&[]);
    project.write("ctx/b", "two\n");
    let steps = project.build(&[]);
    assert_eq!(steps.cached(), [true, false, false], "{steps}");
    assert_eq!(steps.steps[1].name, "[stage-0 2/3] COPY b /b", "{steps}");
    assert_eq!(steps.misses(1), ["file b changed"], "{steps}");
    assert_eq!(
        steps.misses(2),
        ["an earlier step changed: [stage-0 2/3] COPY b /b"],
        "{steps}"
    );
    // The new content is in the image.
    let out = project.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    project.build(&["-o", &dest]);
    assert_eq!(fs::read_to_string(out.join("b")).unwrap(), "two\n");
}

#[test]
fn ignored_files_and_unused_build_args_miss_nothing() {
    let project = Project::new("FROM scratch\nARG USED=1\nCOPY . /src/\n", &three_files());
    project.write("ctx/.dockerignore", "c\n");
    project.build(&[]);
    project.write("ctx/c", "changed but ignored\n");
    let steps = project.build(&["--build-arg", "UNUSED=x"]);
    assert_eq!(steps.cached(), [true], "{steps}");
    // A build arg the step sees is part of its key; COPY does not see ARGs, RUN would.
    project.write("ctx/a", "changed\n");
    let steps = project.build(&[]);
    assert_eq!(steps.cached(), [false], "{steps}");
    assert_eq!(steps.misses(0), ["file a changed"], "{steps}");
}

#[test]
fn mode_changes_miss_and_mtime_changes_do_not() {
    use std::os::unix::fs::PermissionsExt;
    let project = Project::new(THREE_COPIES, &three_files());
    project.build(&[]);
    let a = project.dir.path().join("ctx/a");
    let file = fs::File::options().write(true).open(&a).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(project.build(&[]).cached(), [true, true, true]);
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
    let steps = project.build(&[]);
    assert_eq!(steps.cached(), [false, false, false], "{steps}");
    assert_eq!(steps.misses(0), ["file a changed"], "{steps}");
}

#[test]
fn no_cache_runs_every_step_and_no_cache_filter_those_of_one_stage() {
    let dockerfile =
        "FROM scratch AS one\nCOPY a /a\nFROM scratch\nCOPY --from=one /a /a\nCOPY b /b\n";
    let project = Project::new(dockerfile, &three_files());
    project.build(&[]);
    let all = project.build(&["--no-cache"]);
    assert_eq!(all.cached(), [false, false, false], "{all}");
    assert_eq!(
        all.misses(0),
        ["the cache is off for this step (--no-cache or --no-cache-filter)"]
    );
    let one = project.build(&["--no-cache-filter", "one"]);
    // Stage `one` runs again; its output is the same, so the final stage hits.
    assert_eq!(one.cached(), [false, true, true], "{one}");
}

#[test]
fn a_failed_step_records_nothing() {
    let project = Project::new("FROM scratch\nCOPY a /a\nCOPY missing /m\n", &three_files());
    let out = run(rbuild(project.dir.path())
        .env("RBUILD_ROOT", project.root())
        .args(["build", "ctx"]));
    assert_eq!(out.code, 1, "{out}");
    project.write("ctx/missing", "now here\n");
    let steps = project.build(&[]);
    assert_eq!(steps.cached(), [true, false], "{steps}");
    assert_eq!(steps.misses(1), ["first build of this step"], "{steps}");
}

#[test]
fn a_pruned_layer_is_made_again() {
    let project = Project::new(THREE_COPIES, &three_files());
    project.build(&["-o", "type=tar,dest=rootfs.tar"]);
    // A plain prune keeps the build cache; --all drops the records and, since nothing names
    // the image, its blobs and layers too.
    let out = run(rbuild(project.dir.path())
        .env("RBUILD_ROOT", project.root())
        .args(["prune", "--all"]));
    assert_eq!(out.code, 0, "{out}");
    let steps = project.build(&[]);
    assert_eq!(steps.cached(), [false, false, false], "{steps}");
    assert!(Path::new(&project.root()).exists());
}

#[test]
fn an_unchanged_rebuild_gives_the_same_image_and_no_cache_a_new_one() {
    let project = Project::new(THREE_COPIES, &three_files());
    let image_id = |extra: &[&str]| {
        let out = run(rbuild(project.dir.path())
            .env("RBUILD_ROOT", project.root())
            .args(["build", "-q"])
            .args(extra)
            .arg("ctx"));
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stderr.is_empty(), "quiet prints nothing else: {out}");
        out.stdout.trim().to_string()
    };
    let first = image_id(&[]);
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(image_id(&[]), first);
    let fresh = image_id(&["--no-cache"]);
    assert_ne!(fresh, first, "--no-cache makes a new image (new times)");
    assert_ne!(image_id(&["--label", "a=b"]), fresh);
}

#[test]
fn a_linked_copy_keeps_its_layer_when_an_earlier_step_changes_and_what_follows_does_not() {
    let project = Project::new(
        "FROM scratch\nCOPY a /a\nCOPY --link --chmod=600 b /dir/b\nCOPY c /c\n",
        &three_files(),
    );
    let layers = |name: &str| -> Vec<String> {
        let dest = project.dir.path().join(name);
        project.build(&["-o", &format!("type=oci,dest={},tar=false", dest.display())]);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
        let manifest = index["manifests"][0]["digest"].as_str().unwrap();
        let path = dest.join("blobs/sha256").join(&manifest[7..]);
        let manifest: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let before = layers("before");
    project.write("ctx/a", "changed\n");
    let steps = project.build(&[]);
    assert_eq!(steps.cached(), [false, true, false], "{steps}");
    let after = layers("after");
    assert_ne!(before[0], after[0]);
    assert_eq!(before[1], after[1], "the linked layer changed");
    // The image holds all three, the linked file with its --chmod.
    let out = project.dir.path().join("rootfs");
    project.build(&["-o", &format!("type=local,dest={}", out.display())]);
    assert_eq!(fs::read_to_string(out.join("a")).unwrap(), "changed\n");
    assert_eq!(fs::read_to_string(out.join("dir/b")).unwrap(), "2\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(out.join("dir/b"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A `git daemon` serving `dir` on a loopback port, stopped on drop.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitDaemon {
    fn serve(dir: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself, not `git daemon`: the wrapper's child would outlive a kill.
        let exec_path = std::process::Command::new("git")
            .arg("--exec-path")
            .output()
            .unwrap();
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = std::process::Command::new(Path::new(&exec_path).join("git-daemon"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.display()))
            .arg(dir)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn add_of_a_git_repository_checks_out_the_resolved_commit_and_reruns_when_it_moves() {
    if !crate::util::require_tool("git") {
        return;
    }
    let project = Project::new("FROM scratch\n", &[]);
    let work = project.dir.path().join("work");
    fs::create_dir_all(work.join("sub")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("sub/f"), "v1\n").unwrap();
    fs::write(work.join("top.txt"), "top\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let served = project.dir.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let bare = served.join("repo.git");
    git(
        &work,
        &["clone", "-q", "--bare", ".", bare.to_str().unwrap()],
    );
    let daemon = GitDaemon::serve(&served);
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    project.write(
        "ctx/Dockerfile",
        &format!("FROM scratch\nADD {url}#main:sub /src\nADD --keep-git-dir=true {url} /full\n"),
    );
    let out = project.dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let first = project.build(&["-o", &dest]);
    assert_eq!(first.cached(), [false, false], "{first}");
    assert_eq!(fs::read_to_string(out.join("src/f")).unwrap(), "v1\n");
    assert!(!out.join("src/top.txt").exists() && !out.join("src/.git").exists());
    assert_eq!(
        fs::read_to_string(out.join("full/top.txt")).unwrap(),
        "top\n"
    );
    assert!(out.join("full/.git").is_dir());
    assert_eq!(project.build(&[]).cached(), [true, true]);

    // The branch moves: both steps run again and get the new commit.
    fs::write(work.join("sub/f"), "v2\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let moved = project.build(&["-o", &dest]);
    assert_eq!(moved.cached(), [false, false], "{moved}");
    assert_eq!(fs::read_to_string(out.join("src/f")).unwrap(), "v2\n");

    // A subdirectory never leaves the checkout: `..` stops at its root.
    project.write(
        "ctx/Dockerfile",
        &format!("FROM scratch\nADD {url}#main:../../../.. /esc\n"),
    );
    let escaped = project.dir.path().join("esc-out");
    project.build(&["-o", &format!("type=local,dest={}", escaped.display())]);
    assert!(escaped.join("esc/top.txt").is_file());
    assert!(!escaped.join("esc/etc").exists() && !escaped.join("esc/proc").exists());

    // --checksum names the commit: another one fails the step, naming both.
    let head = git(&work, &["rev-parse", "HEAD"]);
    project.write(
        "ctx/Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum={} {url}#main /pinned\n",
            &head[..12]
        ),
    );
    project.build(&[]);
    project.write(
        "ctx/Dockerfile",
        &format!("FROM scratch\nADD --checksum=0123456789abcdef {url}#main /pinned\n"),
    );
    let failed = run(rbuild(project.dir.path())
        .env("RBUILD_ROOT", project.root())
        .args(["build", "ctx"]));
    assert_eq!(failed.code, 1, "{failed}");
    assert!(failed.stderr.contains("checksum mismatch"), "{failed}");
    assert!(failed.stderr.contains(&head), "{failed}");
}
