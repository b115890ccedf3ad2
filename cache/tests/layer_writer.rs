//! The layer writer end to end: trees on disk → layer blobs → read back with the `tar` crate,
//! flate2, and the system `gzip`/`zstd`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rbuild_cache::layer::{
    compress_layer, write_layer, Change, ChangeSet, Compression, LayerInfo, LayerOptions,
};
use rbuild_cache::Digest;
use tar::EntryType;

/// Returns from the test with a printed reason when a prerequisite is missing, except under
/// `CI=true`, where a missing prerequisite fails the run.
macro_rules! require {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            let reason = format!($($reason)+);
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("prerequisite missing under CI=true: {reason}");
            }
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn has_tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[derive(Debug)]
struct Entry {
    name: String,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
    dev: Option<(u32, u32)>,
    pax: Vec<(String, Vec<u8>)>,
}

fn read_tar(bytes: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let pax = match entry.pax_extensions().unwrap() {
            Some(exts) => exts
                .map(|e| {
                    let e = e.unwrap();
                    (e.key().unwrap().to_string(), e.value_bytes().to_vec())
                })
                .collect(),
            None => Vec::new(),
        };
        let h = entry.header().clone();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let dev = match h.entry_type() {
            EntryType::Char | EntryType::Block => Some((
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            )),
            _ => None,
        };
        out.push(Entry {
            name,
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            link,
            data,
            dev,
            pax,
        });
    }
    out
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

fn find<'a>(entries: &'a [Entry], name: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no entry {name:?} in {:?}", names(entries)))
}

fn layer(set: &ChangeSet, compression: Compression, threads: usize) -> (Vec<u8>, LayerInfo) {
    let opts = LayerOptions {
        compression,
        threads,
        source_date_epoch: None,
    };
    let mut out = Vec::new();
    let info = write_layer(set, &mut out, &opts).unwrap();
    (out, info)
}

fn set_mtime(path: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(700);
    File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn write_file(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

#[test]
fn every_entry_kind_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_file(&root.join("f"), b"hello");
    // Before the chmod: chown clears the setuid bit.
    if is_root() {
        rustix::fs::chown(
            root.join("f"),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
        )
        .unwrap();
    }
    fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_mtime(&root.join("f"), 1_000_000_000);
    fs::create_dir(root.join("d")).unwrap();
    fs::hard_link(root.join("f"), root.join("d/h")).unwrap();
    std::os::unix::fs::symlink("f", root.join("l")).unwrap();
    let long_target = format!("../{}", "t".repeat(150));
    std::os::unix::fs::symlink(&long_target, root.join("long-link")).unwrap();
    let long_name = format!("d/{}", "n".repeat(120));
    write_file(&root.join(&long_name), b"long");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("p"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // Sockets cannot be represented in tar and are left out.
    let _socket = std::os::unix::net::UnixListener::bind(root.join("s")).unwrap();
    let xattr_ok = xattr::set(root.join("f"), "user.b", b"2").is_ok()
        && xattr::set(root.join("f"), "user.a", b"1").is_ok();
    let dev_ok = is_root()
        && rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("c"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .is_ok();
    let mut changes: Vec<Change> = ChangeSet::from_dir(root).unwrap().iter().cloned().collect();
    changes.push(Change::Delete {
        path: "d/gone".into(),
    });
    changes.push(Change::Opaque { path: "d".into() });
    let set = ChangeSet::new(changes).unwrap();
    let (tar_bytes, info) = layer(&set, Compression::None, 1);
    assert_eq!(info.diff_id, Digest::of(&tar_bytes));
    assert_eq!(
        (info.blob_digest, info.size),
        (info.diff_id, tar_bytes.len() as u64)
    );
    assert_eq!(info.media_type(), "application/vnd.oci.image.layer.v1.tar");
    assert!(tar_bytes.ends_with(&[0; 1024]));
    let entries = read_tar(&tar_bytes);

    let mut expected = vec!["c", "d/", "d/.wh..wh..opq", "d/.wh.gone", "d/h"];
    expected.extend([long_name.as_str(), "f", "l", "long-link", "p"]);
    if !dev_ok {
        expected.remove(0);
    }
    assert_eq!(names(&entries), expected);

    // Hardlinks: the first path in layer order carries the content.
    let h = find(&entries, "d/h");
    let st = fs::symlink_metadata(root.join("d/h")).unwrap();
    assert_eq!(
        (h.kind, h.data.as_slice()),
        (EntryType::Regular, &b"hello"[..])
    );
    assert_eq!((h.mode, h.mtime), (0o4755, 1_000_000_000));
    assert_eq!((h.uid, h.gid), (st.uid() as u64, st.gid() as u64));
    let f = find(&entries, "f");
    assert_eq!((f.kind, f.link.as_deref()), (EntryType::Link, Some("d/h")));
    assert!(f.data.is_empty());

    let d = find(&entries, "d/");
    assert_eq!(d.kind, EntryType::Directory);
    let l = find(&entries, "l");
    assert_eq!((l.kind, l.link.as_deref()), (EntryType::Symlink, Some("f")));
    let ll = find(&entries, "long-link");
    assert_eq!(ll.link.as_deref(), Some(long_target.as_str()));
    assert!(ll.pax.iter().any(|(k, _)| k == "linkpath"));
    let long = find(&entries, &long_name);
    assert_eq!(long.data, b"long");
    assert!(long.pax.iter().any(|(k, _)| k == "path"));
    let p = find(&entries, "p");
    assert_eq!((p.kind, p.mode), (EntryType::Fifo, 0o640));

    for marker in ["d/.wh..wh..opq", "d/.wh.gone"] {
        let m = find(&entries, marker);
        assert_eq!(
            (m.kind, m.mode, m.mtime, m.data.len()),
            (EntryType::Regular, 0, 0, 0)
        );
    }

    if dev_ok {
        let c = find(&entries, "c");
        assert_eq!((c.kind, c.dev), (EntryType::Char, Some((1, 3))));
    } else {
        eprintln!("char device part skipped: mknod needs root");
    }
    if xattr_ok {
        let xattrs: Vec<_> = h
            .pax
            .iter()
            .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
            .collect();
        assert_eq!(
            xattrs,
            [
                &("SCHILY.xattr.user.a".to_string(), b"1".to_vec()),
                &("SCHILY.xattr.user.b".to_string(), b"2".to_vec()),
            ]
        );
    } else {
        eprintln!("xattr part skipped: the temp filesystem refuses user.* xattrs");
    }
}

#[test]
fn overlay_upper_whiteouts_and_opaque_dirs() {
    require!(
        is_root(),
        "mknod of a 0/0 whiteout and trusted.* xattrs need root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path();
    fs::create_dir(upper.join("a")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("a/gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    fs::create_dir(upper.join("o")).unwrap();
    let trusted = xattr::set(upper.join("o"), "trusted.overlay.opaque", b"y");
    require!(
        trusted.is_ok(),
        "the temp filesystem refuses trusted.* xattrs: {trusted:?}"
    );
    write_file(&upper.join("o/new"), b"n");
    xattr::set(upper.join("o/new"), "trusted.overlay.origin", b"x").unwrap();
    write_file(&upper.join("z"), b"z");

    let set = ChangeSet::from_overlay_upper(upper).unwrap();
    let (tar_bytes, _) = layer(&set, Compression::None, 1);
    let entries = read_tar(&tar_bytes);
    assert_eq!(
        names(&entries),
        ["a/", "a/.wh.gone", "o/", "o/.wh..wh..opq", "o/new", "z"]
    );
    for e in &entries {
        assert!(
            !e.pax.iter().any(|(k, _)| k.contains("overlay")),
            "{}: overlay xattr leaked: {:?}",
            e.name,
            e.pax
        );
    }
}

/// A tree of `total` bytes over several gzip chunks: half xorshift noise, half words.
fn mixed_tree(root: &Path, total: usize) {
    let mut x = 0x9e37_79b9_u32;
    let words = [
        "layer", "tar", "digest", "overlay", "rbuild", "zstd", "gzip", "blob",
    ];
    let mut written = 0;
    let mut i = 0;
    while written < total {
        let size = [1, 700, 40_000, 300_000, 1_500_000][i % 5];
        let content: Vec<u8> = if i % 2 == 0 {
            (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        } else {
            let mut t = Vec::new();
            let mut n = i;
            while t.len() < size {
                n = n.wrapping_mul(31).wrapping_add(7);
                t.extend_from_slice(words[n % words.len()].as_bytes());
                t.push(if n % 11 == 0 { b'\n' } else { b' ' });
            }
            t.truncate(size);
            t
        };
        write_file(&root.join(format!("dir{}/file{i}", i % 4)), &content);
        written += size;
        i += 1;
    }
}

fn system_decompress(tool: &str, blob: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let blob = blob.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&blob).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "{tool} -dc failed");
    out.stdout
}

#[test]
fn blobs_are_identical_for_any_thread_count_and_decompress_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    mixed_tree(tmp.path(), 8 << 20);
    let set = ChangeSet::from_dir(tmp.path()).unwrap();
    let (tar_bytes, plain) = layer(&set, Compression::None, 1);
    assert!(tar_bytes.len() > 8 << 20);

    let (gz, gz_info) = layer(&set, Compression::Gzip, 1);
    for threads in [2, 4] {
        let (again, info) = layer(&set, Compression::Gzip, threads);
        assert!(
            again == gz,
            "gzip with {threads} threads differs from 1 thread"
        );
        assert_eq!(info, gz_info);
    }
    assert_eq!(gz_info.diff_id, plain.diff_id);
    assert_eq!(gz_info.uncompressed_size, tar_bytes.len() as u64);
    assert_eq!(
        (gz_info.blob_digest, gz_info.size),
        (Digest::of(&gz), gz.len() as u64)
    );
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == tar_bytes, "GzDecoder");
    back.clear();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == tar_bytes, "MultiGzDecoder");
    assert_eq!(Digest::of(&system_decompress("gzip", &gz)), plain.diff_id);

    let (zst, zst_info) = layer(&set, Compression::Zstd, 1);
    for threads in [2, 4] {
        let (again, _) = layer(&set, Compression::Zstd, threads);
        assert!(
            again == zst,
            "zstd with {threads} threads differs from 1 thread"
        );
    }
    assert_eq!(zst_info.diff_id, plain.diff_id);
    assert_eq!(zstd::decode_all(&zst[..]).unwrap(), tar_bytes);
    require!(
        has_tool("zstd"),
        "the zstd CLI is not installed (apt package zstd)"
    );
    assert_eq!(Digest::of(&system_decompress("zstd", &zst)), plain.diff_id);
}

#[test]
fn same_tree_twice_gives_the_same_layer_and_compress_layer_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    mixed_tree(tmp.path(), 3 << 20);
    let first = layer(
        &ChangeSet::from_dir(tmp.path()).unwrap(),
        Compression::Gzip,
        2,
    );
    let second = layer(
        &ChangeSet::from_dir(tmp.path()).unwrap(),
        Compression::Gzip,
        2,
    );
    assert_eq!(first.1, second.1);

    let (tar_bytes, _) = layer(
        &ChangeSet::from_dir(tmp.path()).unwrap(),
        Compression::None,
        1,
    );
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let mut out = Vec::new();
        let info = compress_layer(&tar_bytes[..], &mut out, compression, 2).unwrap();
        let direct = layer(&ChangeSet::from_dir(tmp.path()).unwrap(), compression, 3);
        assert_eq!(info, direct.1, "{compression}");
        assert!(out == direct.0, "{compression}");
    }
}

#[test]
fn source_date_epoch_clamps_only_later_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("old"), b"o");
    write_file(&tmp.path().join("new"), b"n");
    set_mtime(&tmp.path().join("old"), 100);
    set_mtime(&tmp.path().join("new"), 2_000_000_000);
    let opts = LayerOptions {
        compression: Compression::None,
        threads: 1,
        source_date_epoch: Some(1_000_000_000),
    };
    let mut out = Vec::new();
    write_layer(&ChangeSet::from_dir(tmp.path()).unwrap(), &mut out, &opts).unwrap();
    let entries = read_tar(&out);
    assert_eq!(find(&entries, "old").mtime, 100);
    assert_eq!(find(&entries, "new").mtime, 1_000_000_000);
}

#[test]
fn errors_name_the_path() {
    let set = ChangeSet::new(vec![Change::Add {
        path: "x".into(),
        source: PathBuf::from("/nonexistent/rbuild-test"),
    }])
    .unwrap();
    let err = write_layer(&set, Vec::new(), &LayerOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/rbuild-test"),
        "{err}"
    );
    let err = ChangeSet::new(vec![Change::Delete {
        path: "../x".into(),
    }])
    .unwrap_err();
    assert!(err.to_string().contains("../x"), "{err}");
}

/// The documented layer order: component by component, bytewise; a directory before what is
/// in it.
fn layer_sorted(mut paths: Vec<String>) -> Vec<String> {
    paths.sort_by(|a, b| {
        let key = |p: &str| {
            p.trim_end_matches('/')
                .split('/')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        key(a).cmp(&key(b))
    });
    paths
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]
    #[test]
    fn tar_lists_exactly_the_tree_in_layer_order(
        files in prop::collection::btree_set(
            prop::collection::vec(prop::sample::select(vec!["a", "a.b", "a-b", "B", "z", "é"]), 1..4),
            1..12,
        )
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut expected = std::collections::BTreeSet::new();
        for comps in &files {
            let rel = comps.join("/");
            // A path already created as a directory (or below an existing file) is skipped.
            let target = tmp.path().join(&rel);
            if target.exists() || comps.iter().enumerate().any(|(i, _)| {
                tmp.path().join(comps[..i].join("/")).is_file()
            }) {
                continue;
            }
            write_file(&target, rel.as_bytes());
            for i in 1..comps.len() {
                expected.insert(format!("{}/", comps[..i].join("/")));
            }
            expected.insert(rel);
        }
        // Files that later became parents are directories now.
        let expected: Vec<String> = expected
            .into_iter()
            .filter(|p| p.ends_with('/') || tmp.path().join(p).is_file())
            .collect();
        let (tar_bytes, _) = layer(&ChangeSet::from_dir(tmp.path()).unwrap(), Compression::None, 1);
        let got: Vec<String> = read_tar(&tar_bytes).into_iter().map(|e| e.name).collect();
        prop_assert_eq!(got, layer_sorted(expected));
    }
}
