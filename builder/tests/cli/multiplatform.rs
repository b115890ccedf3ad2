//! Multi-platform builds (issue 7) against Debian's docker-registry on loopback: a busybox
//! index for linux/amd64 and linux/arm64 (the arm64 binary from Debian's
//! `busybox-static:arm64`, run through qemu-user-static and binfmt_misc) is the base; one
//! `--platform linux/amd64,linux/arm64` build gives an image per platform under an OCI index in
//! the registry, an OCI tar, a platform-split local directory and the store; a
//! `FROM --platform=$BUILDPLATFORM` stage runs once; a base without a wanted platform is an
//! error listing the platforms it has. Looked at from outside with skopeo and umoci.
//!
//! Root, runc, qemu-user-static, skopeo, umoci, docker-registry and both busybox binaries are
//! needed: missing, a test is skipped with the reason, and under `CI=true` it fails instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use crate::arm64::arm64_busybox;
use crate::registry_fixture::{
    checked, have_tools, index_of, oci_layout_config, oci_layout_manifest_digest, platform_entry,
    read_blob, umoci_unpack, TestRegistry,
};
use crate::registry_harness::{ok, Workspace, OCI_INDEX};
use crate::util::{can_run_containers, run, Output};

const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// A registry serving `busybox:1`, an OCI index of a busybox image for linux/amd64 and one for
/// linux/arm64 (`busybox:amd64`, `busybox:arm64`), and a workspace to build in.
struct Fixture {
    registry: TestRegistry,
    ws: Workspace,
}

impl Fixture {
    /// The fixture, or `None` (the reason printed) when a prerequisite is missing outside CI.
    /// `runs` says whether the test runs containers (root, runc, qemu-user-static).
    fn new(runs: bool) -> Option<Fixture> {
        if std::env::consts::ARCH != "x86_64" {
            // The amd64 busybox is the host's: the fixture is written for x86_64 hosts (CI's).
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the multi-platform tests need an x86_64 host under CI=true"
            );
            eprintln!("skipping: the multi-platform tests are written for an x86_64 host");
            return None;
        }
        let registry = TestRegistry::plain().filter(|_| have_tools(&["skopeo", "umoci"]))?;
        if runs
            && !(can_run_containers("the multi-platform RUN tests")
                && have_tools(&["qemu-aarch64-static"]))
        {
            return None;
        }
        let amd64 = crate::util::host_static_busybox()?;
        let arm64 = arm64_busybox()?;
        let fixture = Fixture {
            registry,
            ws: Workspace::new(),
        };
        fixture.push_busybox_index(&[("amd64", &amd64), ("arm64", &arm64)]);
        Some(fixture)
    }

    /// Builds `busybox:ARCH` for each (arch, binary) without running anything (`FROM scratch`,
    /// `COPY bin /bin`: the binary and its applet links), pushes them, and puts an OCI index
    /// over them as `busybox:1`.
    fn push_busybox_index(&self, arches: &[(&str, &Path)]) {
        let mut manifests = Vec::new();
        for (arch, busybox) in arches {
            let ctx = self.ws.context(
                &format!("busybox-{arch}"),
                "FROM scratch\nCOPY bin /bin\n",
                &[],
            );
            let bin = ctx.join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::copy(busybox, bin.join("busybox")).unwrap();
            fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
            for applet in ["sh", "uname", "echo", "cat"] {
                symlink("busybox", bin.join(applet)).unwrap();
            }
            let tag = format!("busybox:{arch}");
            let platform = format!("linux/{arch}");
            let name = self.registry.image(&tag);
            ok(self
                .ws
                .build(&ctx, &["--platform", &platform, "-t", &name, "--push"]));
            let raw = self.registry.raw_manifest(&tag);
            let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            let config = self.registry.raw_config(&tag);
            assert_eq!(config["architecture"], *arch, "{config}");
            manifests.push(platform_entry(manifest["mediaType"].clone(), &raw, arch));
        }
        let index = serde_json::to_vec(&index_of(OCI_INDEX, manifests)).unwrap();
        self.registry.put_manifest("busybox:1", OCI_INDEX, &index);
    }

    /// `REG/busybox:1`.
    fn base(&self) -> String {
        self.registry.image("busybox:1")
    }

    /// `rbuild setup-binfmt linux/arm64`, which must succeed: CI machines start without the
    /// qemu-aarch64 handler. Once per test process (the tests run in parallel and binfmt_misc
    /// is the machine's); a test after a failed one fails too.
    fn setup_binfmt(&self) {
        static DONE: Mutex<Option<bool>> = Mutex::new(None);
        let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match *done {
            Some(true) => {}
            Some(false) => panic!("rbuild setup-binfmt linux/arm64 failed in another test"),
            None => {
                *done = Some(false);
                ok(run(self.ws.rbuild().args(["setup-binfmt", "linux/arm64"])));
                *done = Some(true);
            }
        }
    }

    /// `skopeo copy --override-arch ARCH` of `NAME` from the registry into the OCI layout
    /// `layout` as `tag`.
    fn copy_arch_to_oci(&self, name: &str, arch: &str, layout: &Path, tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--override-os", "linux", "--override-arch", arch])
            .arg("--src-tls-verify=false")
            .arg(format!("docker://{}", self.registry.image(name)))
            .arg(format!("oci:{}:{tag}", layout.display()));
        checked(&mut cmd, "skopeo copy --override-arch");
    }
}

/// `os/architecture` of each entry of an index, sorted.
fn index_platforms(index: &serde_json::Value) -> Vec<String> {
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {index}"))
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    platforms.sort();
    platforms
}

/// The entry of `index` for linux/`arch`.
fn entry_for<'a>(index: &'a serde_json::Value, arch: &str) -> &'a serde_json::Value {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no linux/{arch} in {index}"))
}

/// What the rawjson progress says of the vertices whose name holds `text`: each vertex
/// digest with the distinct `started` times it was given and whether any event said cached.
fn vertices_named(stderr: &str, text: &str) -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let mut found: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let status: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a rawjson line ({e}): {line}"));
        for v in status["vertexes"].as_array().into_iter().flatten() {
            if !v["name"].as_str().is_some_and(|n| n.contains(text)) {
                continue;
            }
            let digest = v["digest"].as_str().expect("a vertex digest").to_string();
            let entry = found.entry(digest).or_default();
            if let Some(started) = v["started"].as_str() {
                entry.0.insert(started.to_string());
            }
            entry.1 |= v["cached"].as_bool() == Some(true);
        }
    }
    found
}

/// Reads `name` of the directory `dir`.
#[track_caller]
fn text(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// Asserts the build failed, with exit code 1.
#[track_caller]
fn failed(out: &Output) {
    assert_eq!(out.code, 1, "{out}");
}

#[test]
fn a_two_platform_push_builds_each_platform_and_runs_the_build_platform_stage_once() {
    let Some(fx) = Fixture::new(true) else {
        return;
    };
    fx.setup_binfmt();
    let base = fx.base();
    let dockerfile = format!(
        "FROM --platform=$BUILDPLATFORM {base} AS tool\n\
         RUN echo \"tool built on $(uname -m)\" > /tool\n\
         FROM {base}\n\
         ARG TARGETARCH\n\
         COPY --from=tool /tool /tool\n\
         RUN uname -m > /arch && echo \"$TARGETARCH\" > /targetarch\n"
    );
    let ctx = fx.ws.context("app", &dockerfile, &[]);
    let app = fx.registry.image("app:1");
    let out = ok(fx.ws.build(
        &ctx,
        &[
            "--platform",
            PLATFORMS,
            "-t",
            &app,
            "--push",
            "--progress=rawjson",
        ],
    ));

    // The registry has an OCI index over exactly the two platforms.
    let index = fx.registry.manifest_json("app:1");
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    assert_eq!(
        index_platforms(&index),
        ["linux/amd64", "linux/arm64"],
        "{index}"
    );

    // Each platform's image, pulled by skopeo for that architecture and unpacked by umoci,
    // ran its RUN on its own architecture (natively or through qemu) with its own
    // TARGETARCH, and holds the tool the build platform made.
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let layout = fx.ws.path().join(format!("pulled-{arch}"));
        fx.copy_arch_to_oci("app:1", arch, &layout, arch);
        assert_eq!(
            oci_layout_manifest_digest(&layout, arch),
            entry_for(&index, arch)["digest"].as_str().unwrap(),
            "skopeo picked another manifest than the index's for {arch}"
        );
        let config = oci_layout_config(&layout, arch);
        assert_eq!(config["os"], "linux", "{config}");
        assert_eq!(config["architecture"], arch, "{config}");
        let bundle = fx.ws.path().join(format!("bundle-{arch}"));
        umoci_unpack(&layout, arch, &bundle);
        let rootfs = bundle.join("rootfs");
        assert_eq!(text(&rootfs, "arch"), format!("{machine}\n"), "{arch}");
        assert_eq!(text(&rootfs, "targetarch"), format!("{arch}\n"), "{arch}");
        assert_eq!(text(&rootfs, "tool"), "tool built on x86_64\n", "{arch}");
    }

    // The $BUILDPLATFORM stage's RUN is one vertex, run once; the target stage's RUN is one
    // vertex per platform.
    let tool = vertices_named(&out.stderr, "tool built on");
    assert_eq!(tool.len(), 1, "the tool RUN as vertices {tool:?}\n{out}");
    let (started, cached) = tool.values().next().unwrap();
    assert_eq!(started.len(), 1, "the tool RUN started {started:?}\n{out}");
    assert!(!cached, "a fresh root had the tool RUN cached\n{out}");
    let target = vertices_named(&out.stderr, "uname -m > /arch");
    assert_eq!(
        target.len(),
        2,
        "the target RUN as vertices {target:?}\n{out}"
    );
    for (digest, (started, cached)) in &target {
        assert_eq!(started.len(), 1, "{digest} started {started:?}\n{out}");
        assert!(!cached, "{digest} was cached on a fresh root\n{out}");
    }
}

#[test]
fn a_two_platform_build_writes_an_index_to_an_oci_tar_a_split_local_dir_and_the_store() {
    let Some(fx) = Fixture::new(true) else {
        return;
    };
    fx.setup_binfmt();
    let ctx = fx.ws.context(
        "app",
        &format!("FROM {}\nRUN uname -m > /arch\n", fx.base()),
        &[],
    );
    let arches = [("amd64", "x86_64"), ("arm64", "aarch64")];

    // An OCI tar: index.json names one image index, which lists both platforms, each entry
    // the manifest of an image of that platform.
    let tar = fx.ws.path().join("out.tar");
    let oci = format!("type=oci,dest={}", tar.display());
    ok(fx.ws.build(&ctx, &["--platform", PLATFORMS, "-o", &oci]));
    let layout = fx.ws.path().join("out-layout");
    fs::create_dir(&layout).unwrap();
    let mut untar = Command::new("tar");
    untar.arg("-xf").arg(&tar).arg("-C").arg(&layout);
    checked(&mut untar, "tar -xf");
    let top: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{top}");
    assert_eq!(entries[0]["mediaType"], OCI_INDEX, "{top}");
    let index: serde_json::Value =
        serde_json::from_slice(&read_blob(&layout, entries[0]["digest"].as_str().unwrap()))
            .unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    assert_eq!(
        index_platforms(&index),
        ["linux/amd64", "linux/arm64"],
        "{index}"
    );
    for (arch, _) in arches {
        let digest = entry_for(&index, arch)["digest"].as_str().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&read_blob(&layout, digest)).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&read_blob(
            &layout,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(config["os"], "linux", "{config}");
        assert_eq!(config["architecture"], arch, "{config}");
    }
    // skopeo reads the tar as an index of those two platforms too.
    let mut inspect = Command::new("skopeo");
    inspect
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", tar.display()));
    let raw = checked(&mut inspect, "skopeo inspect --raw oci-archive:").stdout;
    let seen: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index_platforms(&seen),
        ["linux/amd64", "linux/arm64"],
        "{seen}"
    );

    // A local directory: one subdirectory per platform, as BuildKit splits them.
    let dest = fx.ws.path().join("split");
    ok(fx
        .ws
        .build_local("root", &["--platform", PLATFORMS], &dest, &ctx));
    for (arch, machine) in arches {
        assert_eq!(
            text(&dest, &format!("linux_{arch}/arch")),
            format!("{machine}\n")
        );
    }

    // The store: the index under a local name, from which a later single-platform build
    // takes that platform's image.
    ok(fx
        .ws
        .build(&ctx, &["--platform", PLATFORMS, "-t", "app:multi"]));
    let later = fx
        .ws
        .context("later", "FROM app:multi\nRUN cat /arch > /seen\n", &[]);
    for (arch, machine) in arches {
        let dest = fx.ws.path().join(format!("later-{arch}"));
        let platform = format!("linux/{arch}");
        ok(fx
            .ws
            .build_local("root", &["--platform", &platform], &dest, &later));
        assert_eq!(text(&dest, "seen"), format!("{machine}\n"), "{platform}");
    }
}

/// Asserts `out` is a failed build (exit 1) whose error names linux/s390x and, on the same
/// line, the base `base` and the platforms its index has.
#[track_caller]
fn assert_base_lacks_s390x(out: &Output, base: &str) {
    failed(out);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("linux/s390x") && l.contains("linux/arm64"))
        .unwrap_or_else(|| panic!("no error naming linux/s390x and the base's platforms\n{out}"));
    assert!(line.contains("linux/amd64"), "{line}\n{out}");
    assert!(line.contains(base), "{line}\n{out}");
}

#[test]
fn a_base_without_a_wanted_platform_fails_listing_the_platforms_it_has() {
    let Some(fx) = Fixture::new(false) else {
        return;
    };
    // No RUN: nothing but the base's resolution can fail.
    let ctx = fx.ws.context(
        "app",
        &format!("FROM {}\nCOPY note /note\n", fx.base()),
        &[("note", b"note\n")],
    );
    for platforms in ["linux/amd64,linux/s390x", "linux/s390x"] {
        let out = fx.ws.build(&ctx, &["--platform", platforms]);
        assert_base_lacks_s390x(&out, &fx.base());
    }
}

/// With a RUN for linux/s390x and no emulator for it, the base's missing platform is still
/// the error (BuildKit resolves the bases first): installing qemu would not help.
#[test]
fn a_base_without_a_wanted_platform_is_reported_before_a_missing_emulator() {
    let Some(fx) = Fixture::new(true) else {
        return;
    };
    let ctx = fx.ws.context(
        "app",
        &format!("FROM {}\nRUN uname -m > /arch\n", fx.base()),
        &[],
    );
    // A binfmt_misc without any handler (an empty directory), so the machine's handlers do
    // not matter.
    let binfmt = fx.ws.path().join("no-binfmt");
    fs::create_dir(&binfmt).unwrap();
    for platforms in ["linux/amd64,linux/s390x", "linux/s390x"] {
        let out = run(fx
            .ws
            .rbuild()
            .env("RBUILD_BINFMT_MISC", &binfmt)
            .args(["build", "--platform", platforms])
            .arg(&ctx));
        assert_base_lacks_s390x(&out, &fx.base());
    }
}

/// `rbuild save` writes what the store holds: of an index pulled for one platform, an index of
/// that platform (OCI) or its image (docker archive); a built two-platform image refuses the
/// docker format, naming its platforms.
#[test]
fn save_writes_the_platforms_the_store_holds() {
    let Some(fx) = Fixture::new(false) else {
        return;
    };
    let pulled = fx
        .ws
        .rbuild_on("pulled")
        .args(["pull", "--platform", "linux/arm64", &fx.base()])
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let tar = fx.ws.path().join("pulled.tar");
    let save = |format: &str, tar: &Path| {
        let out = fx
            .ws
            .rbuild_on("pulled")
            .args(["save", &fx.base(), "--format", format, "-o"])
            .arg(tar)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (saved, stderr) = save("oci", &tar);
    assert!(saved, "{stderr}");
    let mut inspect = Command::new("skopeo");
    inspect
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", tar.display()));
    let raw = checked(&mut inspect, "skopeo inspect --raw oci-archive:").stdout;
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index_platforms(&index), ["linux/arm64"], "{index}");
    let docker_tar = fx.ws.path().join("pulled-docker.tar");
    let (saved, stderr) = save("docker", &docker_tar);
    assert!(saved, "{stderr}");
    let mut list = Command::new("tar");
    list.arg("-tf").arg(&docker_tar);
    let listed = checked(&mut list, "tar -tf").stdout;
    assert!(String::from_utf8_lossy(&listed).contains("manifest.json"));

    // Both platforms, built here: no docker archive, and the error says why.
    let ctx = fx.ws.context("two", &format!("FROM {}\n", fx.base()), &[]);
    ok(fx.ws.build(&ctx, &["--platform", PLATFORMS, "-t", "two:1"]));
    let out = run(fx
        .ws
        .rbuild()
        .args(["save", "two:1", "--format", "docker", "-o", "x.tar"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("holds 2 platforms (linux/amd64, linux/arm64)"),
        "{out}"
    );
}
