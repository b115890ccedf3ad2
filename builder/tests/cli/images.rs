//! The local image store and the outputs: load, save, images, rmi, du, prune, and every
//! `--output` type, checked with the tools other people use (skopeo, umoci, tar).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use rbuild_cache::image::oci_layout::{write_oci_tar, LayoutImage};
use rbuild_cache::image::{
    media_types, Blob, Descriptor, ImageConfig, Manifest, MemBlobs, Platform,
};
use rbuild_cache::layer::{write_layer, ChangeSet, Compression, LayerOptions};
use rbuild_cache::Digest;
use tempfile::TempDir;

use crate::util::{rbuild, require_tool, run};

/// A two-layer image made with the library (not with rbuild's CLI), written as an OCI tar.
struct BaseImage {
    tar: PathBuf,
    manifest: Digest,
    config: Digest,
}

fn make_base_image(dir: &Path, name: &str) -> BaseImage {
    let blobs = MemBlobs::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, files) in [
        vec![
            ("etc/os-release", "ID=rbuild-test\n"),
            ("bin/tool", "#!/bin/sh\n"),
        ],
        vec![("app/data.txt", "hello from layer two\n")],
    ]
    .iter()
    .enumerate()
    {
        let tree = dir.join(format!("layer{i}"));
        for (path, content) in files {
            let p = tree.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
        }
        let changes = ChangeSet::from_dir(&tree).unwrap();
        let mut out = Vec::new();
        let info = write_layer(
            &changes,
            &mut out,
            &LayerOptions {
                compression: Compression::Gzip,
                threads: 1,
                source_date_epoch: Some(0),
            },
        )
        .unwrap();
        assert_eq!(blobs.insert(out), info.blob_digest);
        layers.push(Descriptor::new(
            info.media_type(),
            info.blob_digest,
            info.size,
        ));
        diff_ids.push(info.diff_id);
    }
    let mut config = ImageConfig::new_for(&Platform::new("linux", host_arch(), None));
    config.history = (0..diff_ids.len())
        .map(|i| rbuild_cache::image::History {
            created_by: Some(format!("layer {i}")),
            ..Default::default()
        })
        .collect();
    config.rootfs.diff_ids = diff_ids;
    config.created = Some("2024-01-01T00:00:00Z".to_string());
    let config = Blob::canonical(config).unwrap();
    blobs.insert(config.bytes().to_vec());
    let manifest = Manifest::new_oci(config.descriptor(media_types::OCI_CONFIG), layers);
    let manifest = Blob::canonical(manifest).unwrap();
    blobs.insert(manifest.bytes().to_vec());
    let image = LayoutImage::named(manifest.descriptor(media_types::OCI_MANIFEST), name).unwrap();
    let tar = dir.join("base.tar");
    write_oci_tar(fs::File::create(&tar).unwrap(), &[image], &blobs).unwrap();
    BaseImage {
        tar,
        manifest: manifest.digest(),
        config: config.digest(),
    }
}

/// Extracts `tar` into `dir` (created) with the system tar.
fn untar(tar: impl AsRef<Path>, dir: impl AsRef<Path>) {
    fs::create_dir(dir.as_ref()).unwrap();
    let status = Process::new("tar")
        .arg("-xf")
        .arg(tar.as_ref())
        .arg("-C")
        .arg(dir.as_ref())
        .status()
        .unwrap();
    assert!(status.success(), "tar -xf {}", tar.as_ref().display());
}

/// `umoci unpack` of `image` (`LAYOUT:TAG`) into `bundle`, which must succeed.
fn umoci_unpack(image: String, bundle: &Path) {
    let unpack = Process::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(image)
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A work dir with a state root, and the base image loaded as `base:1`.
struct Workspace {
    dir: TempDir,
    base: BaseImage,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = TempDir::new().unwrap();
        let base = make_base_image(dir.path(), "base:1");
        let ws = Workspace { dir, base };
        let out = run(ws.rbuild().args(["load", "-i"]).arg(&ws.base.tar));
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(out.stdout, "Loaded image: base:1\n", "{out}");
        ws
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn rbuild(&self) -> assert_cmd::Command {
        let mut cmd = rbuild(self.path());
        cmd.env("RBUILD_ROOT", self.path().join("root"));
        cmd
    }

    /// Builds `dockerfile` in a context of its own with extra arguments.
    fn build(&self, dockerfile: &str, args: &[&str]) -> crate::util::Output {
        let ctx = self.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        run(self.rbuild().arg("build").args(args).arg("ctx"))
    }

    fn blob_files(&self) -> BTreeSet<String> {
        let dir = self.path().join("root/content/blobs/sha256");
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

const APP: &str = "FROM base:1\nENV GREETING=hi\nLABEL org.example=yes\nCMD [\"/bin/tool\"]\n";

fn config_of(oci_dir: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(oci_dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob_json(oci_dir, index["manifests"][0]["digest"].as_str().unwrap());
    blob_json(oci_dir, manifest["config"]["digest"].as_str().unwrap())
}

fn blob_json(oci_dir: &Path, digest: &str) -> serde_json::Value {
    let path = oci_dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_build_goes_to_the_store_with_the_config_and_history_buildkit_writes() {
    let ws = Workspace::new();
    let out = ws.build(APP, &["-t", "app:1.0", "--label", "from=cli"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("naming to docker.io/library/app:1.0 done"),
        "{out}"
    );
    let out = run(ws.rbuild().args(["images"]));
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("app ") && l.contains(" 1.0 ")),
        "{out}"
    );
    let out = run(ws.rbuild().args(["save", "app:1.0", "-o", "app.tar"]));
    assert_eq!(out.code, 0, "{out}");
    let layout = ws.path().join("layout");
    untar(ws.path().join("app.tar"), &layout);
    let config = config_of(&layout);
    assert_eq!(config["config"]["Env"][1], "GREETING=hi");
    assert_eq!(config["config"]["Labels"]["org.example"], "yes");
    assert_eq!(config["config"]["Labels"]["from"], "cli");
    assert_eq!(config["config"]["Cmd"][0], "/bin/tool");
    assert_eq!(config["architecture"], host_arch());
    let history: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "layer 0",
            "layer 1",
            "ENV GREETING=hi",
            "LABEL org.example=yes",
            "CMD [\"/bin/tool\"]"
        ]
    );
    assert_eq!(config["history"][2]["comment"], "buildkit.dockerfile.v0");
    assert_eq!(config["history"][2]["empty_layer"], true);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
}

#[test]
fn oci_output_is_accepted_by_skopeo_and_umoci() {
    let ws = Workspace::new();
    let out = ws.build(
        APP,
        &["-t", "app:1.0", "--output", "type=oci,dest=app-oci.tar"],
    );
    assert_eq!(out.code, 0, "{out}");
    let tar = ws.path().join("app-oci.tar");
    if require_tool("skopeo") {
        let inspect = Process::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}:1.0", tar.display()))
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(json["Layers"].as_array().unwrap().len(), 2);
        assert_eq!(json["Env"][1], "GREETING=hi");
    }
    if require_tool("umoci") {
        let layout = ws.path().join("layout");
        untar(&tar, &layout);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "1.0"
        );
        let bundle = ws.path().join("bundle");
        umoci_unpack(format!("{}:1.0", layout.display()), &bundle);
        assert_eq!(
            fs::read_to_string(bundle.join("rootfs/app/data.txt")).unwrap(),
            "hello from layer two\n"
        );
    }
}

#[test]
fn oci_directory_docker_archive_local_and_tar_outputs() {
    let ws = Workspace::new();
    let out = ws.build(
        APP,
        &[
            "-t",
            "app:1.0",
            "-o",
            "type=oci,dest=oci-dir,tar=false",
            "-o",
            "type=docker,dest=docker.tar",
            "-o",
            "type=local,dest=rootfs",
            "-o",
            "type=tar,dest=rootfs.tar",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    let oci_dir = ws.path().join("oci-dir");
    assert!(oci_dir.join("oci-layout").is_file());
    let config = config_of(&oci_dir);
    assert_eq!(config["config"]["Cmd"][0], "/bin/tool");
    if require_tool("umoci") {
        let bundle = ws.path().join("bundle");
        umoci_unpack(format!("{}:1.0", oci_dir.display()), &bundle);
        assert!(bundle.join("rootfs/bin/tool").is_file());
    }
    assert_eq!(
        fs::read_to_string(ws.path().join("rootfs/etc/os-release")).unwrap(),
        "ID=rbuild-test\n"
    );
    let listing = Process::new("tar")
        .arg("-tf")
        .arg(ws.path().join("rootfs.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.lines().any(|l| l == "app/data.txt"), "{listing}");
    assert!(listing.lines().any(|l| l == "bin/tool"), "{listing}");
    if require_tool("skopeo") {
        let copy = Process::new("skopeo")
            .arg("copy")
            .arg(format!(
                "docker-archive:{}",
                ws.path().join("docker.tar").display()
            ))
            .arg(format!("oci:{}:copied", ws.path().join("copied").display()))
            .output()
            .unwrap();
        assert!(
            copy.status.success(),
            "{}",
            String::from_utf8_lossy(&copy.stderr)
        );
        let copied = config_of(&ws.path().join("copied"));
        assert_eq!(copied["rootfs"], config["rootfs"]);
        assert_eq!(copied["config"], config["config"]);
    }
}

/// `-o type=tar,dest=/dev/null` once renamed a regular file over the host's /dev/null. A
/// named pipe stands in for the device: it must stay a pipe and its reader get the archive;
/// a symlinked destination is written through, the link kept.
#[test]
fn an_output_to_a_pipe_or_a_symlink_writes_into_it_and_leaves_it_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let ws = Workspace::new();
    let pipe = ws.path().join("pipe");
    let made = Process::new("mkfifo").arg(&pipe).status().unwrap();
    assert!(made.success());
    let reader = {
        let pipe = pipe.clone();
        std::thread::spawn(move || fs::read(pipe).unwrap())
    };
    fs::create_dir(ws.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real/out.tar", ws.path().join("link.tar")).unwrap();
    let out = ws.build(
        APP,
        &[
            "-o",
            &format!("type=tar,dest={}", pipe.display()),
            "-o",
            "type=tar,dest=link.tar",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    // Before joining: had the pipe been replaced, its reader would wait for a writer forever.
    assert!(fs::symlink_metadata(&pipe).unwrap().file_type().is_fifo());
    let through_pipe = reader.join().unwrap();
    let through_link = fs::read(ws.path().join("real/out.tar")).unwrap();
    assert!(through_pipe.len() > 1024, "{} bytes", through_pipe.len());
    assert_eq!(through_pipe, through_link);
    assert!(fs::symlink_metadata(ws.path().join("link.tar"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn load_then_save_keeps_every_digest() {
    let ws = Workspace::new();
    let before = ws.blob_files();
    assert!(before.contains(&ws.base.manifest.hex()));
    assert!(before.contains(&ws.base.config.hex()));
    let out = run(ws.rbuild().args(["save", "base:1", "-o", "again.tar"]));
    assert_eq!(out.code, 0, "{out}");
    let (a, b) = (ws.path().join("a"), ws.path().join("b"));
    for (dir, tar) in [(&a, &ws.base.tar), (&b, &ws.path().join("again.tar"))] {
        untar(tar, dir);
    }
    assert_eq!(
        fs::read(a.join("index.json")).unwrap(),
        fs::read(b.join("index.json")).unwrap()
    );
    let blobs = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(blobs(&a), blobs(&b));

    // Through a docker archive: the config digest and the layers' diffIDs survive.
    let out = run(ws
        .rbuild()
        .args(["save", "--format", "docker", "base:1", "-o", "docker.tar"]));
    assert_eq!(out.code, 0, "{out}");
    let other = ws.path().join("other-root");
    let out = run(ws
        .rbuild()
        .env("RBUILD_ROOT", &other)
        .args(["load", "-i", "docker.tar"]));
    assert_eq!(out.code, 0, "{out}");
    let out = run(ws
        .rbuild()
        .env("RBUILD_ROOT", &other)
        .args(["images", "--no-trunc", "-q"]));
    assert_eq!(out.stdout.trim(), ws.base.config.to_string(), "{out}");
}

#[test]
fn rmi_du_and_prune_free_exactly_the_unreferenced_blobs() {
    let ws = Workspace::new();
    assert_eq!(ws.build(APP, &["-t", "app:1.0"]).code, 0);
    let with_app = ws.blob_files();
    let out = run(ws.rbuild().args(["rmi", "app:1.0"]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "Untagged: app:1.0\n"),
        "{out}"
    );
    let out = run(ws.rbuild().args(["du"]));
    // The app's manifest and config are unreferenced now; the base's four blobs are not.
    assert_eq!(du_row(&out, "Images")[0], "1", "{out}");
    assert_eq!(du_row(&out, "Unreferenced")[0], "2", "{out}");
    let out = run(ws.rbuild().args(["prune"]));
    assert!(
        out.stdout.starts_with("Deleted 0 cache records, 2 blobs"),
        "{out}"
    );
    let after = ws.blob_files();
    assert_eq!(after.len(), with_app.len() - 2);
    assert!(after.contains(&ws.base.manifest.hex()));
    let out = run(ws.rbuild().args(["rmi", "app:1.0"]));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no such image: app:1.0"), "{out}");
    // The base still builds after the prune.
    assert_eq!(ws.build(APP, &["-t", "app:2"]).code, 0);
}

#[test]
fn a_base_image_that_is_not_in_the_store_is_a_clear_error() {
    let ws = Workspace::new();
    // Not in the store, so asked of its registry, which is not there.
    let out = ws.build("FROM 127.0.0.1:9/nothere:3\nENV A=1\n", &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error: base image 127.0.0.1:9/nothere:3: resolve tag: ")
            && out.stderr.contains("Connection refused"),
        "{out}"
    );
}

#[test]
fn a_base_may_come_from_an_oci_layout_directory() {
    let ws = Workspace::new();
    let layout = ws.path().join("layout");
    untar(&ws.base.tar, &layout);
    let fresh = ws.path().join("fresh-root");
    let ctx = ws.path().join("ctx2");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM oci-layout://{}:1\nUSER nobody\n", layout.display()),
    )
    .unwrap();
    let out = run(ws.rbuild().env("RBUILD_ROOT", &fresh).args([
        "build",
        "-t",
        "x",
        "-o",
        "type=local,dest=x-rootfs",
        "ctx2",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        fs::read_to_string(ws.path().join("x-rootfs/app/data.txt")).unwrap(),
        "hello from layer two\n"
    );
}

#[test]
fn force_compression_recompresses_base_layers_once() {
    let ws = Workspace::new();
    let spec = "type=oci,dest=z,tar=false,compression=zstd,force-compression=true";
    let args = ["--build-arg", "SOURCE_DATE_EPOCH=0", "-o", spec];
    let out = ws.build(APP, &args);
    assert_eq!(out.code, 0, "{out}");
    let layout = ws.path().join("z");
    let config = config_of(&layout);
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob_json(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (layer, diff_id) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let digest = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let blob = fs::File::open(layout.join("blobs/sha256").join(digest)).unwrap();
        let tar = rbuild_cache::image::blobs::decompress_auto(blob).unwrap();
        let mut reader = rbuild_cache::digest::HashingReader::new(tar);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        assert_eq!(reader.finish().1.to_string(), diff_id.as_str().unwrap());
    }
    // The same build again: same config (SOURCE_DATE_EPOCH), and the zstd blobs are reused.
    let blobs = ws.blob_files();
    let out = ws.build(APP, &args);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ws.blob_files(), blobs);
}

#[test]
fn compression_applies_to_the_builds_own_layers_and_leaves_the_base_alone() {
    let ws = Workspace::new();
    let spec = "type=oci,dest=zl,tar=false,compression=zstd";
    let out = ws.build("FROM base:1\nCOPY Dockerfile /d\n", &["-o", spec]);
    assert_eq!(out.code, 0, "{out}");
    let layout = ws.path().join("zl");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob_json(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
}

/// The fields after `kind` in `rbuild du`'s table: COUNT, SIZE, RECLAIMABLE.
fn du_row(out: &crate::util::Output, kind: &str) -> Vec<String> {
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(kind).filter(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {kind} row:\n{out}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// A scratch image of one file, whose COPY step needs no container runtime.
const COPY_ONLY: &str = "FROM scratch\nCOPY a.txt /a.txt\n";

impl Workspace {
    /// Builds [`COPY_ONLY`] as `c:1` with `a.txt` holding `content`, `env` set.
    fn build_copy(&self, content: &str, env: &[(&str, &str)]) -> crate::util::Output {
        let ctx = self.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), COPY_ONLY).unwrap();
        fs::write(ctx.join("a.txt"), content).unwrap();
        let mut cmd = self.rbuild();
        cmd.env("RBUILD_GC_KEEP_STORAGE", "off");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(cmd.args(["build", "-t", "c:1", "ctx"]));
        assert_eq!(out.code, 0, "{out}");
        out
    }

    /// Unpacked layer directories under `snapshots/layers/`.
    fn layer_dirs(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.path().join("root/snapshots/layers")) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().contains('.'))
            .count()
    }

    fn prune(&self, args: &[&str]) -> crate::util::Output {
        let out = run(self.rbuild().arg("prune").args(args));
        assert_eq!(out.code, 0, "{out}");
        out
    }
}

#[test]
fn the_build_cache_survives_prune_until_keep_storage_0_takes_it() {
    let ws = Workspace::new();
    ws.build_copy("one\n", &[]);
    ws.build_copy("two\n", &[]);
    assert_eq!(ws.layer_dirs(), 2);
    assert_eq!(run(ws.rbuild().args(["rmi", "c:1"])).code, 0);
    let out = run(ws.rbuild().args(["du"]));
    let cache = du_row(&out, "Build cache");
    assert_eq!(cache[0], "2", "one record per version of the COPY:\n{out}");
    assert_ne!(cache[1], "0B", "{out}");
    assert_eq!(
        cache[1], cache[2],
        "all of the cache is reclaimable:\n{out}"
    );
    assert_eq!(du_row(&out, "Unpacked layers")[0], "2", "{out}");

    let out = ws.prune(&["--filter", "until=1h"]);
    assert!(out.stdout.starts_with("Deleted 0 cache records"), "{out}");
    let out = ws.prune(&[]);
    assert!(out.stdout.starts_with("Deleted 0 cache records"), "{out}");
    assert_eq!(ws.layer_dirs(), 2, "records still use both layers");
    assert!(ws.build_copy("one\n", &[]).stderr.contains("CACHED"));

    assert_eq!(run(ws.rbuild().args(["rmi", "c:1"])).code, 0);
    let out = ws.prune(&["--keep-storage", "0"]);
    assert!(out.stdout.starts_with("Deleted 2 cache records"), "{out}");
    assert_eq!(ws.layer_dirs(), 0);
    let out = run(ws.rbuild().args(["du"]));
    assert_eq!(du_row(&out, "Build cache")[..2], ["0", "0B"], "{out}");
    // The base image loaded at the start is not cache: it stays.
    assert!(ws.blob_files().contains(&ws.base.manifest.hex()));
    assert!(!ws.build_copy("one\n", &[]).stderr.contains("CACHED"));
}

#[test]
fn prune_all_drops_the_cache_but_keeps_images_and_their_layers() {
    let ws = Workspace::new();
    ws.build_copy("one\n", &[]);
    ws.build_copy("two\n", &[]);
    let out = ws.prune(&["--all"]);
    assert!(out.stdout.starts_with("Deleted 2 cache records"), "{out}");
    // c:1 (the "two" version) keeps its layer; the "one" version had only the cache.
    assert_eq!(ws.layer_dirs(), 1);
    let out = run(ws.rbuild().args(["save", "c:1", "-o", "c.tar"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(!ws.build_copy("two\n", &[]).stderr.contains("CACHED"));
}

#[test]
fn automatic_gc_shrinks_the_store_past_its_limit_after_a_build() {
    let ws = Workspace::new();
    ws.build_copy("one\n", &[]);
    ws.build_copy("two\n", &[]);
    let (blobs, layers) = (ws.blob_files().len(), ws.layer_dirs());
    let out = ws.build_copy("three\n", &[("RBUILD_GC_KEEP_STORAGE", "1")]);
    assert!(out.stderr.contains("automatic GC: "), "{out}");
    // Left: the base image, and c:1 ("three") with its one layer. Without GC the third build
    // would have added a layer and blobs; with it, the two older versions are gone.
    assert_eq!(ws.layer_dirs(), 1, "had {layers}");
    assert!(ws.blob_files().len() < blobs, "{out}");
    assert!(ws.blob_files().contains(&ws.base.manifest.hex()));
    let out = ws.build_copy("two\n", &[]);
    assert!(!out.stderr.contains("CACHED"), "{out}");
}

#[test]
fn prune_waits_for_a_running_build_and_auto_gc_skips_it() {
    let ws = Workspace::new();
    ws.build_copy("one\n", &[]);
    ws.build_copy("two\n", &[]);
    // What a running build holds: the root's lock, shared.
    let build = rbuild_cache::lock::StateLock::shared(ws.path().join("root/lock")).unwrap();
    let out = ws.build_copy("three\n", &[("RBUILD_GC_KEEP_STORAGE", "1")]);
    assert!(!out.stderr.contains("automatic GC"), "{out}");
    assert_eq!(ws.layer_dirs(), 3, "GC ran beside a build");

    let mut prune = std::process::Command::new(assert_cmd::cargo::cargo_bin("rbuild"))
        .env("RBUILD_ROOT", ws.path().join("root"))
        .args(["prune", "--all"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(prune.try_wait().unwrap().is_none(), "prune did not wait");
    assert_eq!(ws.layer_dirs(), 3, "prune removed layers under a build");
    drop(build);
    let out = prune.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("Deleted 3 cache records"), "{stdout}");
    assert_eq!(ws.layer_dirs(), 1);
}
