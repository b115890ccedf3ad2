//! Image formats: fixtures parse and re-serialize exactly; OCI layouts and docker archives
//! round-trip; and other tools (skopeo, umoci) accept what we write.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_cache::image::config::validate;
use rbuild_cache::image::docker_archive::{
    read_docker_archive, write_docker_archive, ArchiveImage,
};
use rbuild_cache::image::media_types::{self, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP};
use rbuild_cache::image::oci_layout::{
    read_oci_tar, write_oci_dir, write_oci_tar, LayoutImage, OciDir, Selector,
};
use rbuild_cache::image::{
    Blob, BlobSource, ContainerConfig, Descriptor, History, ImageConfig, ImageError, Index,
    Manifest, MemBlobs, Platform,
};
use rbuild_cache::layer::Compression;
use rbuild_cache::Digest;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn as_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn parsed_documents_keep_their_exact_bytes() {
    for name in ["oci-manifest.json", "docker-manifest.json"] {
        let bytes = fixture(name);
        let m = Blob::<Manifest>::parse(bytes.clone()).unwrap();
        assert_eq!(
            (m.bytes(), m.digest()),
            (&bytes[..], Digest::of(&bytes)),
            "{name}"
        );
    }
    let bytes = fixture("manifest-list.json");
    assert_eq!(
        Blob::<Index>::parse(bytes.clone()).unwrap().bytes(),
        &bytes[..]
    );
    let bytes = fixture("config-buildkit.json");
    assert_eq!(
        Blob::<ImageConfig>::parse(bytes.clone()).unwrap().bytes(),
        &bytes[..]
    );
}

#[test]
fn fixtures_parse_into_the_typed_fields() {
    let docker = Blob::<Manifest>::parse(fixture("docker-manifest.json")).unwrap();
    let docker = docker.value();
    assert_eq!(
        docker.media_type.as_deref(),
        Some(media_types::DOCKER_MANIFEST)
    );
    assert_eq!(
        media_types::layer_compression(&docker.layers[0].media_type),
        Some(Compression::Gzip)
    );
    assert_eq!(docker.layers[1].urls, ["https://example.com/layer.tar.gz"]);
    assert_eq!(media_types::to_oci(&docker.config.media_type), OCI_CONFIG);

    let list = Blob::<Index>::parse(fixture("manifest-list.json")).unwrap();
    let platforms: Vec<String> = list
        .value()
        .manifests
        .iter()
        .map(|m| m.platform.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm/v7", "windows/amd64"]);
    let windows = list.value().manifests[2].platform.as_ref().unwrap();
    assert_eq!(windows.os_version.as_deref(), Some("10.0.17763.5458"));
    assert_eq!(windows.extra["features"], serde_json::json!(["sse4"]));

    let config = Blob::<ImageConfig>::parse(fixture("config-buildkit.json")).unwrap();
    let c = config.value();
    let cc = c.config.as_ref().unwrap();
    let hc = cc.healthcheck.as_ref().unwrap();
    assert_eq!((hc.interval, hc.retries), (Some(30_000_000_000), Some(3)));
    assert_eq!(
        cc.on_build.as_deref(),
        Some(&["RUN echo child".to_string()][..])
    );
    assert_eq!(cc.shell.as_ref().unwrap()[0], "/bin/bash");
    assert!(cc.args_escaped);
    assert_eq!(cc.entrypoint, None);
    assert_eq!(c.created.as_deref(), Some("2024-01-02T03:04:05.123456789Z"));
    assert!(c.history[1].empty_layer && !c.history[0].empty_layer);
    for key in [
        "container_config",
        "docker_version",
        "moby.buildkit.buildinfo.v1",
    ] {
        assert!(c.extra.contains_key(key), "{key} kept in extra");
    }
    assert!(cc.extra.contains_key("Hostname") && cc.extra.contains_key("Image"));
}

#[test]
fn canonical_serialization_is_sorted_compact_and_stable() {
    for name in [
        "oci-manifest.json",
        "docker-manifest.json",
        "manifest-list.json",
    ] {
        let original = fixture(name);
        // serde_json's Value sorts keys and prints compactly: exactly our canonical form.
        let expected = serde_json::to_vec(&as_value(&original)).unwrap();
        let canonical = if name == "manifest-list.json" {
            let v = Blob::<Index>::parse(original).unwrap().into_value();
            Blob::canonical(v).unwrap().into_bytes()
        } else {
            let v = Blob::<Manifest>::parse(original).unwrap().into_value();
            Blob::canonical(v).unwrap().into_bytes()
        };
        assert_eq!(
            String::from_utf8(canonical).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }
    let config = Blob::<ImageConfig>::parse(fixture("config-buildkit.json")).unwrap();
    let a = Blob::canonical(config.value().clone()).unwrap();
    let b = Blob::canonical(config.into_value()).unwrap();
    assert_eq!((a.bytes(), a.digest()), (b.bytes(), b.digest()));
    assert!(!a.bytes().ends_with(b"\n") && !a.bytes().starts_with(b"{ "));
}

#[test]
fn unknown_fields_survive_modify_and_reserialize() {
    let config = Blob::<ImageConfig>::parse(fixture("config-buildkit.json")).unwrap();
    let original = as_value(config.bytes());
    let mut c = config.into_value();
    c.config.as_mut().unwrap().cmd = Some(vec!["other".into()]);
    let again = as_value(Blob::canonical(c).unwrap().bytes());
    for key in [
        "container_config",
        "docker_version",
        "moby.buildkit.buildinfo.v1",
        "history",
    ] {
        assert_eq!(again[key], original[key], "{key}");
    }
    for key in [
        "Healthcheck",
        "OnBuild",
        "Shell",
        "ArgsEscaped",
        "Hostname",
        "ExposedPorts",
    ] {
        assert_eq!(
            again["config"][key], original["config"][key],
            "config.{key}"
        );
    }
    assert_eq!(again["config"]["Cmd"], serde_json::json!(["other"]));

    let m = Blob::<Manifest>::parse(fixture("oci-manifest.json")).unwrap();
    let mut m = m.into_value();
    m.annotations.insert("x".into(), "y".into());
    let again = as_value(Blob::canonical(m).unwrap().bytes());
    assert_eq!(
        again["io.example.future-field"],
        serde_json::json!({"kept": true})
    );
    assert_eq!(
        again["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "base"
    );
}

#[test]
fn schema1_and_wrong_kinds_are_refused_by_name() {
    let err = Blob::<Manifest>::parse(fixture("schema1-manifest.json")).unwrap_err();
    assert!(matches!(err, ImageError::Schema1 { .. }), "{err}");
    assert!(err.to_string().contains("schema 1"), "{err}");
    let err = Blob::<Manifest>::parse(fixture("manifest-list.json")).unwrap_err();
    assert!(matches!(err, ImageError::NotAManifest { .. }), "{err}");
    let err = Blob::<Index>::parse(fixture("oci-manifest.json")).unwrap_err();
    assert!(matches!(err, ImageError::NotAnIndex { .. }), "{err}");
}

#[test]
fn validate_names_both_counts_and_digests() {
    let config = Blob::<ImageConfig>::parse(fixture("config-buildkit.json")).unwrap();
    let m = Manifest::new_oci(config.descriptor(OCI_CONFIG), vec![]);
    let m = Blob::canonical(m).unwrap();
    let err = validate(&m, &config).unwrap_err().to_string();
    for part in [
        m.digest().to_string(),
        config.digest().to_string(),
        "0 layers".into(),
        "1 diff_ids".into(),
    ] {
        assert!(err.contains(&part), "{err} lacks {part}");
    }
}

const HELLO: &[u8] = b"hello from rbuild\n";

/// A one-layer image (`/hello.txt`) in `blobs`; returns its manifest and the layer's diff tar.
fn tiny_image(blobs: &MemBlobs) -> (Blob<Manifest>, Vec<u8>) {
    tiny_image_for(blobs, &Platform::new("linux", "amd64", None))
}

fn tiny_image_for(blobs: &MemBlobs, platform: &Platform) -> (Blob<Manifest>, Vec<u8>) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(HELLO.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, "hello.txt", HELLO).unwrap();
    let diff = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&diff).unwrap();
    let gz = gz.finish().unwrap();
    let gz_size = gz.len() as u64;

    let mut config = ImageConfig::new_for(platform);
    config.created = Some("1970-01-01T00:00:00Z".into());
    config.config = Some(ContainerConfig {
        cmd: Some(vec!["/hello.txt".into()]),
        ..ContainerConfig::default()
    });
    config.rootfs.diff_ids.push(Digest::of(&diff));
    config.history.push(History {
        created_by: Some("COPY hello.txt /".into()),
        ..History::default()
    });
    let config = Blob::canonical(config).unwrap();
    blobs.insert(config.bytes().to_vec());
    let layer = Descriptor::new(OCI_LAYER_GZIP, blobs.insert(gz), gz_size);
    let manifest = Blob::canonical(Manifest::new_oci(
        config.descriptor(OCI_CONFIG),
        vec![layer],
    ))
    .unwrap();
    blobs.insert(manifest.bytes().to_vec());
    (manifest, diff)
}

fn tiny_layout_image(blobs: &MemBlobs) -> (Blob<Manifest>, Vec<u8>, LayoutImage) {
    let (manifest, diff) = tiny_image(blobs);
    let desc = manifest.descriptor(media_types::OCI_MANIFEST);
    let image = LayoutImage::named(desc, "docker.io/library/tiny:1.0").unwrap();
    (manifest, diff, image)
}

fn oci_tar_bytes(images: &[LayoutImage], blobs: &MemBlobs) -> Vec<u8> {
    write_oci_tar(Vec::new(), images, blobs).unwrap().0
}

#[test]
fn oci_tar_is_deterministic_sorted_and_root_owned() {
    let blobs = MemBlobs::new();
    let (_, _, image) = tiny_layout_image(&blobs);
    let a = oci_tar_bytes(std::slice::from_ref(&image), &blobs);
    assert_eq!(a, oci_tar_bytes(&[image], &blobs), "same input, same bytes");
    let mut archive = tar::Archive::new(&a[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(
            (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0, 0, 0)
        );
        let want = if h.entry_type().is_dir() {
            0o755
        } else {
            0o644
        };
        assert_eq!(h.mode().unwrap(), want);
        names.push(entry.path().unwrap().to_string_lossy().into_owned());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(&names[names.len() - 2..], ["index.json", "oci-layout"]);
    assert_eq!(
        names.len(),
        2 + 3 + 2,
        "dirs, manifest+config+layer, index and oci-layout"
    );
}

#[test]
fn oci_layout_round_trips_as_tar_and_dir() {
    let blobs = MemBlobs::new();
    let (manifest, _, image) = tiny_layout_image(&blobs);
    let bytes = oci_tar_bytes(std::slice::from_ref(&image), &blobs);

    let back = MemBlobs::new();
    let layout = read_oci_tar(&bytes[..], &back).unwrap();
    let found = layout.select(&Selector::Name("1.0".into())).unwrap();
    assert_eq!(found, image);
    assert_eq!(
        found.image_name.as_deref(),
        Some("docker.io/library/tiny:1.0")
    );
    assert_eq!(back.digests(), blobs.digests());
    for d in blobs.digests() {
        assert_eq!(back.get(&d), blobs.get(&d));
    }

    let dir = tempfile::tempdir().unwrap();
    let index = write_oci_dir(dir.path(), std::slice::from_ref(&image), &blobs).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("index.json")).unwrap(),
        index.bytes()
    );
    assert_eq!(
        layout.index.bytes(),
        index.bytes(),
        "tar and dir write the same index.json"
    );
    let oci = OciDir::open(dir.path()).unwrap();
    for sel in [
        Selector::Only,
        Selector::Name("tiny:1.0".into()),
        Selector::Name("docker.io/library/tiny:1.0".into()),
        Selector::Digest(manifest.digest()),
    ] {
        assert_eq!(oci.layout().select(&sel).unwrap(), image, "{sel}");
    }
    let err = oci
        .layout()
        .select(&Selector::Name("2.0".into()))
        .unwrap_err();
    assert!(
        err.to_string().contains("1.0"),
        "lists what there is: {err}"
    );
    let mut read = Vec::new();
    oci.open(&manifest.digest())
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, manifest.bytes());
}

#[test]
fn multi_platform_index_round_trips_with_every_child_blob() {
    let blobs = MemBlobs::new();
    let mut children = Vec::new();
    for platform in [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm", Some("v7")),
    ] {
        let (manifest, _) = tiny_image_for(&blobs, &platform);
        let mut desc = manifest.descriptor(media_types::OCI_MANIFEST);
        desc.platform = Some(platform);
        children.push(desc);
    }
    let index = Blob::canonical(Index::new_oci(children)).unwrap();
    blobs.insert(index.bytes().to_vec());
    let image = LayoutImage::named(index.descriptor(media_types::OCI_INDEX), "app:multi").unwrap();
    let bytes = oci_tar_bytes(std::slice::from_ref(&image), &blobs);
    let back = MemBlobs::new();
    let layout = read_oci_tar(&bytes[..], &back).unwrap();
    assert_eq!(
        layout.select(&Selector::Name("app:multi".into())).unwrap(),
        image
    );
    // One index, two manifests, two configs, one shared layer.
    assert_eq!(back.digests(), blobs.digests());
    assert_eq!(back.digests().len(), 6);
}

#[test]
fn oci_tar_reading_rejects_a_corrupt_blob() {
    let blobs = MemBlobs::new();
    let (_, _, image) = tiny_layout_image(&blobs);
    let mut bytes = oci_tar_bytes(&[image], &blobs);
    // Flip a byte inside the first blob's data (the entry after the two directory headers).
    bytes[3 * 512 + 10] ^= 0xff;
    let err = read_oci_tar(&bytes[..], &MemBlobs::new()).unwrap_err();
    assert!(err.to_string().contains("sha256:"), "{err}");
}

fn write_archive(path: &Path, blobs: &MemBlobs, manifest: &Blob<Manifest>, names: &[&str]) {
    let image = ArchiveImage {
        manifest: manifest.clone(),
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    let file = std::fs::File::create(path).unwrap();
    write_docker_archive(file, &[image], blobs).unwrap();
}

#[test]
fn docker_archive_round_trip_keeps_config_digest_and_diff_ids() {
    let blobs = MemBlobs::new();
    let (manifest, diff) = tiny_image(&blobs);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    write_archive(&a, &blobs, &manifest, &["tiny:1.0"]);
    write_archive(&b, &blobs, &manifest, &["tiny:1.0"]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "deterministic"
    );

    let back = MemBlobs::new();
    let images = read_docker_archive(&a, &back).unwrap();
    assert_eq!(images.len(), 1);
    let loaded = &images[0];
    assert_eq!(loaded.names, ["tiny:1.0"]);
    assert_eq!(loaded.config.digest(), manifest.value().config.digest);
    let diff_id = Digest::of(&diff);
    assert_eq!(loaded.config.value().rootfs.diff_ids, [diff_id]);
    let layer = &loaded.manifest.value().layers[0];
    assert_eq!(
        (layer.media_type.as_str(), layer.digest, layer.size),
        (OCI_LAYER, diff_id, diff.len() as u64)
    );
    assert_eq!(back.get(&diff_id).unwrap().as_slice(), &diff[..]);
    assert!(back.get(&loaded.manifest.digest()).is_some());
    validate(&loaded.manifest, &loaded.config).unwrap();

    // manifest.json as docker load reads it, and the OCI layout inside the same archive.
    let layout = read_oci_tar(std::fs::File::open(&a).unwrap(), &MemBlobs::new()).unwrap();
    let image = layout.select(&Selector::Name("1.0".into())).unwrap();
    assert_eq!(
        image.image_name.as_deref(),
        Some("docker.io/library/tiny:1.0")
    );
    assert_eq!(
        image.descriptor.digest,
        loaded.manifest.digest(),
        "same OCI manifest both ways"
    );
}

// ---- other tools -------------------------------------------------------------------------

/// Whether `name` runs; a missing tool skips the test locally and fails it under `CI=true`.
fn have_tool(name: &str) -> bool {
    let ok = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required under CI=true (apt-get install {name})"
        );
        eprintln!("skipping: {name} is not installed (apt-get install {name})");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn arg(prefix: &str, path: &Path, suffix: &str) -> String {
    format!("{prefix}{}{suffix}", path.display())
}

#[test]
fn skopeo_inspects_our_oci_archive() {
    if !have_tool("skopeo") {
        return;
    }
    let blobs = MemBlobs::new();
    let (manifest, _, image) = tiny_layout_image(&blobs);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.tar");
    std::fs::write(&file, oci_tar_bytes(&[image], &blobs)).unwrap();
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(arg("oci-archive:", &file, ":1.0")));
    let info = as_value(out.as_bytes());
    let layer = manifest.value().layers[0].digest.to_string();
    assert_eq!(info["Layers"], serde_json::json!([layer]), "{out}");
    assert_eq!(info["Digest"], manifest.digest().to_string());
}

#[test]
fn umoci_unpacks_our_oci_dir() {
    if !have_tool("umoci") {
        return;
    }
    let blobs = MemBlobs::new();
    let (_, _, image) = tiny_layout_image(&blobs);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_oci_dir(&layout, &[image], &blobs).unwrap();
    let bundle = dir.path().join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !rustix::process::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    run(cmd
        .arg("--image")
        .arg(arg("", &layout, ":1.0"))
        .arg(&bundle));
    assert_eq!(
        std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(),
        HELLO
    );
}

fn oci_dir_config_digest(dir: &Path, tag: &str) -> Digest {
    let oci = OciDir::open(dir).unwrap();
    let image = oci.layout().select(&Selector::Name(tag.into())).unwrap();
    let mut bytes = Vec::new();
    oci.open(&image.descriptor.digest)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    Blob::<Manifest>::parse(bytes)
        .unwrap()
        .value()
        .config
        .digest
}

/// `docker-archive:` → `dir:` keeps every byte, so the config digest (the image ID) must be
/// ours. `docker-archive:` → `oci:` makes c/image convert the Docker schema 2 manifest it
/// synthesizes to OCI, and that conversion re-marshals the config (new key order, new digest)
/// for any archive, Docker's own included; there we check the content. The OCI layout inside
/// our archive, copied as `oci-archive:`, keeps the digest.
#[test]
fn skopeo_copies_our_docker_archive_keeping_the_config() {
    if !have_tool("skopeo") {
        return;
    }
    let blobs = MemBlobs::new();
    let (manifest, _) = tiny_image(&blobs);
    let config_digest = manifest.value().config.digest;
    let config = blobs.get(&config_digest).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("docker.tar");
    write_archive(&archive, &blobs, &manifest, &["tiny:1.0"]);
    let copy = |from: String, to: String| {
        run(Command::new("skopeo")
            .args(["--insecure-policy", "copy"])
            .arg(from)
            .arg(to))
    };

    let plain = dir.path().join("plain");
    copy(
        arg("docker-archive:", &archive, ""),
        arg("dir:", &plain, ""),
    );
    let copied = std::fs::read(plain.join(config_digest.hex())).unwrap();
    assert_eq!(copied, *config, "dir: keeps the config bytes");

    let oci = dir.path().join("oci");
    copy(
        arg("docker-archive:", &archive, ""),
        arg("oci:", &oci, ":tag"),
    );
    let converted = OciDir::open(&oci).unwrap();
    let converted_config = read_all(&converted, &oci_dir_config_digest(&oci, "tag"));
    assert_eq!(
        as_value(&converted_config),
        as_value(&config),
        "same config content"
    );

    let via_layout = dir.path().join("via-layout");
    copy(
        arg("oci-archive:", &archive, ":1.0"),
        arg("oci:", &via_layout, ":tag"),
    );
    assert_eq!(oci_dir_config_digest(&via_layout, "tag"), config_digest);
}

fn read_all(source: &dyn BlobSource, digest: &Digest) -> Vec<u8> {
    let mut bytes = Vec::new();
    source
        .open(digest)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn we_read_a_docker_archive_written_by_skopeo() {
    if !have_tool("skopeo") {
        return;
    }
    let blobs = MemBlobs::new();
    let (manifest, diff) = tiny_image(&blobs);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let desc = manifest.descriptor(media_types::OCI_MANIFEST);
    write_oci_dir(
        &layout,
        &[LayoutImage::named(desc, "tiny:1.0").unwrap()],
        &blobs,
    )
    .unwrap();
    let archive: PathBuf = dir.path().join("skopeo.tar");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy"])
        .arg(arg("oci:", &layout, ":1.0"))
        .arg(arg("docker-archive:", &archive, ":tiny:1.0")));
    let back = MemBlobs::new();
    let images = read_docker_archive(&archive, &back).unwrap();
    assert_eq!(images[0].names, ["docker.io/library/tiny:1.0"]);
    assert_eq!(images[0].config.digest(), manifest.value().config.digest);
    assert_eq!(back.get(&Digest::of(&diff)).unwrap().as_slice(), &diff[..]);
}

/// The pre-25 `docker save` shape: `<id>/layer.tar` entries, one a symlink to another
/// image's layer, the target gzip-compressed (`docker load` accepts that too).
#[test]
fn legacy_archive_with_symlinked_compressed_layer_loads() {
    let blobs = MemBlobs::new();
    let (manifest, diff) = tiny_image(&blobs);
    let config = blobs.get(&manifest.value().config.digest).unwrap();
    let gz = blobs.get(&manifest.value().layers[0].digest).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut file = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, path, data).unwrap();
    };
    file("./aaa/layer.tar", &gz);
    file("cfg.json", &config);
    let items = br#"[{"Config":"cfg.json","RepoTags":null,"Layers":["bbb/layer.tar"]}]"#;
    file("manifest.json", items);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(&mut link, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.tar");
    std::fs::write(&path, tar.into_inner().unwrap()).unwrap();

    let back = MemBlobs::new();
    let images = read_docker_archive(&path, &back).unwrap();
    assert!(images[0].names.is_empty());
    assert_eq!(images[0].config.bytes(), &config[..]);
    assert_eq!(back.get(&Digest::of(&diff)).unwrap().as_slice(), &diff[..]);
}

#[test]
fn writing_into_a_layout_replaces_a_wrong_blob_of_the_right_size() {
    let blobs = MemBlobs::new();
    let (manifest, _, image) = tiny_layout_image(&blobs);
    let dir = tempfile::tempdir().unwrap();
    write_oci_dir(dir.path(), std::slice::from_ref(&image), &blobs).unwrap();
    let layer = &manifest.value().layers[0];
    let path = dir
        .path()
        .join(format!("blobs/sha256/{}", layer.digest.hex()));
    std::fs::write(&path, vec![b'!'; layer.size as usize]).unwrap();
    write_oci_dir(dir.path(), std::slice::from_ref(&image), &blobs).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        *blobs.get(&layer.digest).unwrap()
    );
}

#[test]
fn an_oversized_index_json_in_a_layout_dir_is_refused() {
    let blobs = MemBlobs::new();
    let (_, _, image) = tiny_layout_image(&blobs);
    let dir = tempfile::tempdir().unwrap();
    write_oci_dir(dir.path(), std::slice::from_ref(&image), &blobs).unwrap();
    let index = dir.path().join("index.json");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes.resize(17 << 20, b' ');
    std::fs::write(&index, bytes).unwrap();
    let err = OciDir::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("index.json") && err.contains("larger than"),
        "{err}"
    );
}
