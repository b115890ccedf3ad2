//! Snapshots on a real kernel: overlay mounts, the native copy fallback, the layers they commit.
//!
//! These need root (mounts, `trusted.*` xattrs, chown) and overlayfs. Without them the tests
//! skip with a printed reason, except under `CI=true`, where a missing prerequisite fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use rbuild::snapshot::{LayerDir, SnapshotError, Snapshots, SnapshotterKind};
use rbuild_cache::layer::{write_layer, Change, ChangeSet, Compression, LayerOptions};
use rbuild_cache::Digest;

/// Whether the privileged tests can run here; prints why not (or panics under CI=true).
fn prerequisites() -> bool {
    let missing = if !rustix::process::geteuid().is_root() {
        Some("not running as root".to_string())
    } else {
        let root = tempfile::tempdir().unwrap();
        match Snapshots::open(root.path(), SnapshotterKind::Overlay) {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but a prerequisite of the snapshot tests is missing: {why}")
        }
        Some(why) => {
            eprintln!("skipping snapshot test: {why}");
            false
        }
    }
}

const EPOCH: i64 = 1_600_000_000;

fn opts() -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        threads: 1,
        source_date_epoch: Some(EPOCH),
    }
}

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

/// A layer blob from `changes`, unpacked into the snapshots.
fn layer(snaps: &Snapshots, changes: Vec<Change>) -> LayerDir {
    let set = ChangeSet::new(changes).unwrap();
    let mut blob = Vec::new();
    let info = write_layer(&set, &mut blob, &opts()).unwrap();
    snaps.layer_from_blob(&info.diff_id, &blob[..]).unwrap()
}

fn adds(base: &Path, paths: &[&str]) -> Vec<Change> {
    paths
        .iter()
        .map(|p| Change::Add {
            path: p.to_string(),
            source: base.join(p),
        })
        .collect()
}

/// l1: a/{f1,f2}, d/x, gone, r/c, k, keep/deep/file, s -> a/f2.
/// l2: deletes a/f1, makes d opaque with d/y only.
fn base_layers(snaps: &Snapshots) -> (LayerDir, LayerDir) {
    let t1 = tempfile::tempdir().unwrap();
    let b = t1.path();
    write(&b.join("a/f1"), "one");
    write(&b.join("a/f2"), "two");
    write(&b.join("d/x"), "x");
    write(&b.join("gone"), "gone");
    write(&b.join("r/c"), "c");
    write(&b.join("k"), "k");
    write(&b.join("keep/deep/file"), "deep");
    symlink("a/f2", b.join("s")).unwrap();
    let l1 = layer(snaps, ChangeSet::from_dir(b).unwrap().as_slice().to_vec());

    let t2 = tempfile::tempdir().unwrap();
    let b = t2.path();
    write(&b.join("d/y"), "y");
    let mut c = adds(b, &["d", "d/y"]);
    c.push(Change::Opaque { path: "d".into() });
    c.push(Change::Delete {
        path: "a/f1".into(),
    });
    let l2 = layer(snaps, c);
    (l1, l2)
}

/// The tar entries of a gzip layer blob: name → (type, mode, PAX keys).
fn entries(blob: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, Vec<String>)> {
    let gz = flate2_decode(blob);
    let mut ar = tar::Archive::new(&gz[..]);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let keys = match e.pax_extensions().unwrap() {
            Some(exts) => exts
                .map(|x| x.unwrap().key().unwrap().to_string())
                .collect(),
            None => Vec::new(),
        };
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let h = e.header();
        out.insert(name, (h.entry_type(), h.mode().unwrap(), keys));
    }
    out
}

/// gzip → tar through the layer code's own decoder.
fn flate2_decode(blob: &[u8]) -> Vec<u8> {
    let mut d = rbuild_cache::layer::detect::decoder(Compression::Gzip, blob).unwrap();
    let mut v = Vec::new();
    d.read_to_end(&mut v).unwrap();
    v
}

/// Mount points under `root` in this process's mount namespace.
fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.canonicalize().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&root))
        .map(str::to_string)
        .collect()
}

fn assert_clean(root: &Path) {
    assert_eq!(mounts_under(root), Vec::<String>::new(), "mounts left");
    let active: Vec<_> = fs::read_dir(root.join("snapshots/active"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(active.is_empty(), "active dirs left: {active:?}");
}

/// The root-level script: new file, delete a lower file, replace a lower dir by a file, chmod.
fn script_root_level(root: &Path) {
    fs::write(root.join("new"), "new").unwrap();
    fs::remove_file(root.join("gone")).unwrap();
    fs::remove_dir_all(root.join("r")).unwrap();
    fs::write(root.join("r"), "now a file").unwrap();
    fs::set_permissions(root.join("k"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// Changes below the root: in a copied-up dir, a recreated dir, a deleted subtree, a
/// file replaced by a dir, a new symlink and hardlink, a chmod in an opaque dir.
fn script_nested(root: &Path) {
    fs::write(root.join("a/new2"), "n2").unwrap();
    fs::remove_file(root.join("a/f2")).unwrap();
    fs::remove_dir_all(root.join("keep/deep")).unwrap();
    fs::create_dir(root.join("keep/deep")).unwrap();
    fs::write(root.join("keep/deep/other"), "o").unwrap();
    fs::remove_dir_all(root.join("r")).unwrap();
    fs::remove_file(root.join("k")).unwrap();
    fs::create_dir(root.join("k")).unwrap();
    fs::write(root.join("k/inside"), "i").unwrap();
    fs::set_permissions(root.join("d/y"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("../d/y", root.join("a/link")).unwrap();
    fs::create_dir_all(root.join("n/m")).unwrap();
    fs::write(root.join("n/m/file"), "f").unwrap();
    fs::hard_link(root.join("n/m/file"), root.join("n/hard")).unwrap();
}

fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let st = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            use std::os::unix::fs::MetadataExt;
            let what = if st.is_dir() {
                "dir".to_string()
            } else if st.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else {
                format!("{:?}", fs::read_to_string(&p).unwrap_or_default())
            };
            out.push(format!("{rel} {:o} {what}", st.mode()));
            if st.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// Runs `script` on a snapshot over the base layers with `kind`; returns the committed layer's
/// blob, diffID, and the listing of a snapshot on top of the committed layer.
fn run(kind: SnapshotterKind, script: fn(&Path)) -> (Vec<u8>, Digest, Vec<String>) {
    let state = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(state.path(), kind).unwrap();
    assert_eq!(snaps.kind(), kind);
    let (l1, l2) = base_layers(&snaps);
    let active = snaps.prepare(&[l1.clone(), l2.clone()]).unwrap();
    script(active.root());
    let mut blob = Vec::new();
    let (info, l3) = active.commit(&mut blob, &opts()).unwrap();
    assert_eq!(info.diff_id, l3.diff_id);
    assert_eq!(snaps.layer(&info.diff_id), Some(l3.clone()));
    let view = snaps.view(&[l1, l2, l3]).unwrap();
    let list = listing(view.root());
    drop(view);
    assert_clean(state.path());
    (blob, info.diff_id, list)
}

#[test]
fn overlay_merges_and_commits_exactly_the_changes() {
    if !prerequisites() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(state.path(), SnapshotterKind::Overlay).unwrap();
    let (l1, l2) = base_layers(&snaps);
    let active = snaps.prepare(&[l1, l2]).unwrap();
    let root = active.root();
    assert!(!root.join("a/f1").exists(), "deleted by the upper layer");
    assert_eq!(fs::read_to_string(root.join("a/f2")).unwrap(), "two");
    assert!(!root.join("d/x").exists(), "hidden by the opaque dir");
    assert_eq!(fs::read_to_string(root.join("d/y")).unwrap(), "y");
    assert_eq!(fs::read_to_string(root.join("s")).unwrap(), "two");
    assert_eq!(mounts_under(state.path()).len(), 1);

    script_root_level(root);
    let mut blob = Vec::new();
    let (info, _) = active.commit(&mut blob, &opts()).unwrap();
    assert_clean(state.path());
    let entries = entries(&blob);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(names, [".wh.gone", "k", "new", "r"]);
    assert_eq!(entries["k"].1, 0o600);
    assert_eq!(entries["r"].0, tar::EntryType::Regular);
    for (name, (_, _, keys)) in &entries {
        assert!(
            keys.iter().all(|k| !k.contains("overlay")),
            "{name} carries overlay xattrs: {keys:?}"
        );
    }
    assert_eq!(info.compression, Compression::Gzip);
}

#[test]
fn native_and_overlay_give_the_same_layers() {
    if !prerequisites() {
        return;
    }
    for script in [script_root_level as fn(&Path), script_nested] {
        let (blob_o, id_o, list_o) = run(SnapshotterKind::Overlay, script);
        let (blob_n, id_n, list_n) = run(SnapshotterKind::Native, script);
        assert_eq!(
            entries(&blob_o).keys().collect::<Vec<_>>(),
            entries(&blob_n).keys().collect::<Vec<_>>()
        );
        assert_eq!(id_o, id_n);
        assert_eq!(list_o, list_n);
    }
    // The nested script's layer: what overlay's upperdir says, in OCI form.
    let (blob, _, list) = run(SnapshotterKind::Native, script_nested);
    let names: Vec<String> = entries(&blob).into_keys().collect();
    assert_eq!(
        names,
        [
            ".wh.r",
            "a/",
            "a/.wh.f2",
            "a/link",
            "a/new2",
            "d/",
            "d/y",
            "k/",
            "k/.wh..wh..opq",
            "k/inside",
            "keep/",
            "keep/deep/",
            "keep/deep/.wh..wh..opq",
            "keep/deep/other",
            "n/",
            "n/hard",
            "n/m/",
            "n/m/file"
        ]
    );
    assert!(
        list.contains(&"keep/deep/other 100644 \"o\"".to_string()),
        "{list:#?}"
    );
    assert!(!list.iter().any(|l| l.starts_with("keep/deep/file")));
}

#[test]
fn many_layers_fit_the_mount_options() {
    if !prerequisites() {
        return;
    }
    for count in [45, 110] {
        let state = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(state.path(), SnapshotterKind::Overlay).unwrap();
        let src = tempfile::tempdir().unwrap();
        let mut parents = Vec::new();
        for i in 0..count {
            let dir = src.path().join(i.to_string());
            write(&dir.join(format!("f{i}")), &i.to_string());
            write(&dir.join("top"), &i.to_string());
            parents.push(layer(&snaps, adds(&dir, &[&format!("f{i}"), "top"])));
        }
        let active = snaps.prepare(&parents).unwrap();
        // Absolute lowerdirs while they fit, `/proc/self/fd/N/<name>` beyond.
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.contains(active.root().to_str().unwrap()))
            .unwrap();
        assert_eq!(
            line.contains("lowerdir=/proc/self/fd/"),
            count > 100,
            "{line}"
        );
        for i in 0..count {
            assert!(active.root().join(format!("f{i}")).exists());
        }
        let top = fs::read_to_string(active.root().join("top")).unwrap();
        assert_eq!(top, (count - 1).to_string());
        active.discard().unwrap();
        let view = snaps.view(&parents).unwrap();
        assert!(view.root().join("f0").exists());
        drop(view);
        assert_clean(state.path());
    }
    // One layer listed many times is one lowerdir (overlay refuses repeats).
    let state = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(state.path(), SnapshotterKind::Overlay).unwrap();
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("same"), "x");
    let same = layer(&snaps, adds(src.path(), &["same"]));
    let active = snaps.prepare(&vec![same; 200]).unwrap();
    assert!(active.root().join("same").exists());
    active.discard().unwrap();
    // Far too many distinct layers: a clear error, nothing left mounted.
    let mut many = Vec::new();
    for i in 0..200 {
        let dir = src.path().join(i.to_string());
        write(&dir.join("f"), &i.to_string());
        many.push(layer(&snaps, adds(&dir, &["f"])));
    }
    let err = snaps.prepare(&many).err().unwrap();
    assert!(matches!(err, SnapshotError::TooManyLayers { .. }), "{err}");
    assert_clean(state.path());
}

#[test]
fn nothing_stays_mounted() {
    if !prerequisites() {
        return;
    }
    for kind in [SnapshotterKind::Overlay, SnapshotterKind::Native] {
        let state = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(state.path(), kind).unwrap();
        let (l1, l2) = base_layers(&snaps);
        let parents = [l1, l2];

        let a = snaps.prepare(&parents).unwrap();
        fs::write(a.root().join("x"), "x").unwrap();
        a.discard().unwrap();
        assert_clean(state.path());

        let a = snaps.prepare(&parents).unwrap();
        fs::write(a.root().join("x"), "x").unwrap();
        drop(a);
        assert_clean(state.path());

        let a = snaps.prepare(&[]).unwrap();
        fs::write(a.root().join("x"), "x").unwrap();
        a.commit(io::sink(), &opts()).unwrap();
        assert_clean(state.path());

        // The output fails mid-commit.
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let a = snaps.prepare(&parents).unwrap();
        fs::write(a.root().join("x"), "x").unwrap();
        assert!(a.commit(Broken, &opts()).is_err());
        assert_clean(state.path());

        // A parent that is not there.
        let bogus = LayerDir {
            diff_id: Digest::of(b"nothing"),
            dir: state.path().join("nowhere"),
        };
        assert!(snaps.prepare(std::slice::from_ref(&bogus)).is_err());
        assert!(snaps.view(&[bogus]).is_err());
        assert_clean(state.path());
    }
}

#[test]
fn a_crashed_run_is_swept_on_open() {
    if !prerequisites() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(state.path(), SnapshotterKind::Overlay).unwrap();
    let a = snaps.prepare(&[]).unwrap();
    // What a killed process leaves: the mount and its dir, and no lock holder once the
    // process is gone (here: close the leaked descriptor that holds the lock).
    std::mem::forget(a);
    assert_eq!(mounts_under(state.path()).len(), 1);
    drop(snaps);
    close_fds_under(&state.path().join("snapshots/active"));
    let _again = Snapshots::open(state.path(), SnapshotterKind::Overlay).unwrap();
    assert_clean(state.path());
}

fn close_fds_under(dir: &Path) {
    let dir = dir.canonicalize().unwrap();
    for e in fs::read_dir("/proc/self/fd").unwrap() {
        let e = e.unwrap();
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        if target.starts_with(&dir) {
            let fd: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            // SAFETY: the fd was leaked by mem::forget above; nothing else owns it.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
}

#[test]
fn views_are_read_only_and_merged() {
    if !prerequisites() {
        return;
    }
    for kind in [SnapshotterKind::Overlay, SnapshotterKind::Native] {
        let state = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(state.path(), kind).unwrap();
        let (l1, l2) = base_layers(&snaps);
        for parents in [vec![l1.clone(), l2.clone()], vec![l1.clone()], vec![]] {
            let view = snaps.view(&parents).unwrap();
            let err = fs::write(view.root().join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(30), "{kind}: {err}"); // EROFS
            if parents.len() == 2 {
                assert!(!view.root().join("a/f1").exists());
                assert!(!view.root().join("d/x").exists());
                assert_eq!(fs::read_to_string(view.root().join("d/y")).unwrap(), "y");
            }
            if parents.len() == 1 {
                assert!(view.root().join("a/f1").exists());
                assert!(view.root().join("d/x").exists());
            }
            drop(view);
        }
        assert_clean(state.path());
    }
}

#[test]
fn concurrent_unpacks_of_one_layer_agree() {
    if !prerequisites() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(state.path(), SnapshotterKind::Auto).unwrap();
    assert_eq!(snaps.kind(), SnapshotterKind::Overlay);
    assert!(snaps.note().is_none());
    let src = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(&src.path().join(format!("d/{i}")), &"x".repeat(i * 100));
    }
    let set = ChangeSet::from_dir(src.path()).unwrap();
    let mut blob = Vec::new();
    let info = write_layer(&set, &mut blob, &opts()).unwrap();
    let dirs: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| snaps.layer_from_blob(&info.diff_id, &blob[..]).unwrap().dir))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(dirs.windows(2).all(|w| w[0] == w[1]));
    assert!(dirs[0].join("d/49").exists());
    // A wrong diffID is refused and leaves nothing.
    let wrong = Digest::of(b"wrong");
    assert!(snaps.layer_from_blob(&wrong, &blob[..]).is_err());
    assert!(snaps.layer(&wrong).is_none());
    let left: Vec<_> = fs::read_dir(state.path().join("snapshots/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Ctrl-C while snapshots are mounted and the build does not unwind (the child sleeps): a
/// second Ctrl-C makes the interrupt handler unmount and remove them itself. The test runs
/// itself again as the child that gets the signals.
#[test]
fn an_interrupt_undoes_every_mount() {
    const CHILD: &str = "RBUILD_SNAPSHOT_TEST_CHILD";
    if let Some(root) = std::env::var_os(CHILD) {
        let root = PathBuf::from(root);
        rbuild::interrupt::install();
        let snaps = Snapshots::open(&root, SnapshotterKind::Overlay).unwrap();
        let _active = snaps.prepare(&[]).unwrap();
        let _view = snaps.view(&[]).unwrap();
        fs::write(root.join("ready"), "").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
        panic!("not interrupted");
    }
    if !prerequisites() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "an_interrupt_undoes_every_mount", "--nocapture"])
        .env(CHILD, state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = state.path().join("ready");
    for _ in 0..2000 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(ready.exists(), "the child never got its snapshots mounted");
    assert_eq!(mounts_under(state.path()).len(), 2);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "one signal only stops, it does not exit"
    );
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_clean(state.path());
}

/// The native copy keeps what a layer can carry: owners, modes, xattrs, hardlinks, symlinks
/// and devices; and an untouched snapshot commits an empty layer in both snapshotters.
#[test]
fn native_copies_keep_metadata() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !prerequisites() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let b = src.path();
    write(&b.join("f"), "data");
    rustix::fs::setxattr(
        b.join("f"),
        "user.test",
        b"value",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::chown(
        b.join("f"),
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(5678)),
    )
    .unwrap();
    fs::set_permissions(b.join("f"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::hard_link(b.join("f"), b.join("g")).unwrap();
    symlink("f", b.join("s")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        b.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let mut ids = Vec::new();
    for kind in [SnapshotterKind::Native, SnapshotterKind::Overlay] {
        let state = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(state.path(), kind).unwrap();
        let l = layer(&snaps, ChangeSet::from_dir(b).unwrap().as_slice().to_vec());
        let a = snaps.prepare(std::slice::from_ref(&l)).unwrap();
        let r = a.root();
        let f = fs::symlink_metadata(r.join("f")).unwrap();
        let g = fs::symlink_metadata(r.join("g")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o4751));
        assert_eq!((f.ino(), f.nlink()), (g.ino(), 2));
        let mut value = [0u8; 16];
        let n = rustix::fs::lgetxattr(r.join("f"), "user.test", &mut value).unwrap();
        assert_eq!(&value[..n], b"value");
        assert_eq!(fs::read_link(r.join("s")).unwrap(), Path::new("f"));
        let null = fs::symlink_metadata(r.join("null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        let (info, _) = a.commit(io::sink(), &opts()).unwrap();
        assert_eq!(info.uncompressed_size, 1024, "{kind}: an empty layer");
        ids.push(info.diff_id);
        assert_clean(state.path());
    }
    assert_eq!(ids[0], ids[1]);
}
