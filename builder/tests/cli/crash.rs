//! A killed rbuild never leaves a trusted blob that is wrong: SIGKILL `rbuild load` while it
//! writes blobs, again and again, then check every blob against its name and load again.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbuild_cache::digest::HashingReader;
use rbuild_cache::image::oci_layout::{write_oci_tar, LayoutImage};
use rbuild_cache::image::{
    media_types, Blob, Descriptor, ImageConfig, Manifest, MemBlobs, Platform,
};
use rbuild_cache::layer::{write_layer, ChangeSet, Compression, LayerOptions};
use tempfile::TempDir;

use crate::util::xorshift_bytes;

/// An OCI tar of an image with three 24 MiB uncompressed layers.
fn big_archive(dir: &Path) -> std::path::PathBuf {
    let blobs = MemBlobs::new();
    let (mut layers, mut diff_ids) = (Vec::new(), Vec::new());
    for i in 0..3u64 {
        let tree = dir.join(format!("tree{i}"));
        fs::create_dir_all(&tree).unwrap();
        fs::write(
            tree.join(format!("noise{i}")),
            xorshift_bytes(i + 1, 24 << 20),
        )
        .unwrap();
        let mut out = Vec::new();
        let options = LayerOptions {
            compression: Compression::None,
            threads: 1,
            source_date_epoch: Some(0),
        };
        let info = write_layer(&ChangeSet::from_dir(&tree).unwrap(), &mut out, &options).unwrap();
        blobs.insert(out);
        layers.push(Descriptor::new(
            info.media_type(),
            info.blob_digest,
            info.size,
        ));
        diff_ids.push(info.diff_id);
    }
    let mut config = ImageConfig::new_for(&Platform::new("linux", "amd64", None));
    config.rootfs.diff_ids = diff_ids;
    let config = Blob::canonical(config).unwrap();
    blobs.insert(config.bytes().to_vec());
    let manifest = Blob::canonical(Manifest::new_oci(
        config.descriptor(media_types::OCI_CONFIG),
        layers,
    ))
    .unwrap();
    blobs.insert(manifest.bytes().to_vec());
    let image =
        LayoutImage::named(manifest.descriptor(media_types::OCI_MANIFEST), "big:1").unwrap();
    let path = dir.join("big.tar");
    write_oci_tar(fs::File::create(&path).unwrap(), &[image], &blobs).unwrap();
    path
}

fn rbuild_load(root: &Path, archive: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rbuild"));
    cmd.env("RBUILD_ROOT", root)
        .args(["load", "-i"])
        .arg(archive)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Every file under blobs/sha256 hashes to its own name.
fn assert_blobs_match_their_names(root: &Path) -> usize {
    let dir = root.join("content/blobs/sha256");
    let mut count = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut reader = HashingReader::new(fs::File::open(entry.path()).unwrap());
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (_, digest, _) = reader.finish();
        assert_eq!(
            digest.hex(),
            name,
            "blob file {name} does not match its content"
        );
        count += 1;
    }
    count
}

#[test]
fn sigkill_while_writing_blobs_never_leaves_a_wrong_blob() {
    let dir = TempDir::new().unwrap();
    let archive = big_archive(dir.path());
    let root = dir.path().join("root");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut interrupted = 0;
    for round in 0..10u64 {
        let mut child = rbuild_load(&root, &archive).spawn().unwrap();
        // Kill at varied moments: early (opening the store) to late (last layer).
        let delay = 20 + (seed.wrapping_mul(round + 7) >> 3) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().ok();
        child.wait().unwrap();
        assert_blobs_match_their_names(&root);
        io::stderr().flush().ok();
    }
    assert!(interrupted > 0, "no round interrupted a running load");
    let status = rbuild_load(&root, &archive).status().unwrap();
    assert!(status.success(), "the load after the kills failed");
    assert_eq!(assert_blobs_match_their_names(&root), 5);
    let out = Command::new(assert_cmd::cargo::cargo_bin("rbuild"))
        .env("RBUILD_ROOT", &root)
        .args(["images", "-q", "--no-trunc"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    // Whatever the killed writers left in ingest/ is garbage that prune removes.
    let prune = Command::new(assert_cmd::cargo::cargo_bin("rbuild"))
        .env("RBUILD_ROOT", &root)
        .arg("prune")
        .status()
        .unwrap();
    assert!(prune.success());
    assert_eq!(
        fs::read_dir(root.join("content/ingest")).unwrap().count(),
        0
    );
}
