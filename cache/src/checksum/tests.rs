use std::fs::{self, File, FileTimes, Permissions};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{FileType, Mode, CWD};
use tempfile::TempDir;

use super::*;

const TREE: &[&str] = &[".", "a.txt", "sub", "sub/b.txt", "link"];

/// A context `ctx` (a.txt, sub/b.txt, link -> a.txt) beside its cache.db.
struct Fixture {
    _dir: TempDir,
    root: PathBuf,
    db: Database,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("a.txt"), "alpha").unwrap();
        fs::write(root.join("sub/b.txt"), "beta").unwrap();
        symlink("a.txt", root.join("link")).unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        Fixture {
            _dir: dir,
            root,
            db,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Without the racy window, so that files just written are remembered.
    fn sum(&self, paths: &[&str]) -> ContentChecksum {
        self.try_sum(paths).unwrap()
    }

    fn try_sum(&self, paths: &[&str]) -> Result<ContentChecksum, ChecksumError> {
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        checksum_with(&self.root, &paths, &self.db, Duration::ZERO)
    }

    fn rows(&self) -> i64 {
        let conn = self.db.conn();
        conn.query_row("SELECT count(*) FROM stat_cache", [], |r| r.get(0))
            .unwrap()
    }
}

/// Sets a file's mtime to `secs` after the epoch; its ctime moves to now.
fn set_mtime(path: &Path, secs: u64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let file = File::options().write(true).open(path).unwrap();
    file.set_times(FileTimes::new().set_modified(time)).unwrap();
}

fn entry(sum: &ContentChecksum, path: &str) -> Digest {
    sum.files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} not in {:?}", sum.files))
        .digest
}

/// The entries whose digests differ between two checksums of the same paths.
fn changed(a: &ContentChecksum, b: &ContentChecksum) -> Vec<String> {
    let pairs = a.files.iter().zip(&b.files);
    pairs
        .filter(|(x, y)| x.digest != y.digest)
        .map(|(x, _)| x.path.display().to_string())
        .collect()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn an_unchanged_tree_gives_the_same_digest_without_reading_anything() {
    let fx = Fixture::new();
    let first = fx.sum(TREE);
    assert_eq!(first.hashed, 2);
    let second = fx.sum(TREE);
    assert_eq!(second, ContentChecksum { hashed: 0, ..first });
    let kinds: Vec<_> = second
        .files
        .iter()
        .map(|f| (f.path.clone(), f.kind))
        .collect();
    let expected = [
        (".", FileKind::Dir),
        ("a.txt", FileKind::Regular),
        ("link", FileKind::Symlink),
        ("sub", FileKind::Dir),
        ("sub/b.txt", FileKind::Regular),
    ];
    assert_eq!(kinds, expected.map(|(p, k)| (PathBuf::from(p), k)));
}

#[test]
fn touching_one_file_rereads_only_that_file() {
    let fx = Fixture::new();
    let first = fx.sum(TREE);
    set_mtime(&fx.path("sub/b.txt"), 1_000_000);
    let second = fx.sum(TREE);
    assert_eq!(second.hashed, 1);
    // Only the stat changed: the same checksum.
    assert_eq!(second.digest, first.digest);
    assert_eq!(fx.sum(TREE).hashed, 0);
}

#[test]
fn a_content_change_changes_that_entry_only() {
    let fx = Fixture::new();
    let before = fx.sum(TREE);
    fs::write(fx.path("a.txt"), "ALPHA").unwrap();
    // Same size; a distinct mtime so the change cannot hide in the same timestamp tick.
    set_mtime(&fx.path("a.txt"), 1_000_000);
    let after = fx.sum(TREE);
    assert_ne!(after.digest, before.digest);
    assert_eq!(changed(&before, &after), ["a.txt"]);
    // The symlink is not followed: its entry is its target's name only.
    assert_eq!(entry(&after, "link"), entry(&before, "link"));
    fs::write(fx.path("a.txt"), "alpha").unwrap();
    assert_eq!(fx.sum(TREE).digest, before.digest);
}

#[test]
fn mode_and_link_target_changes_change_the_digest_and_owners_do_not() {
    let fx = Fixture::new();
    let base = fx.sum(TREE);
    fs::set_permissions(fx.path("a.txt"), Permissions::from_mode(0o600)).unwrap();
    let chmod = fx.sum(TREE);
    assert_eq!(changed(&base, &chmod), ["a.txt"]);
    fs::set_permissions(fx.path("sub"), Permissions::from_mode(0o2755)).unwrap();
    let setgid = fx.sum(TREE);
    assert_eq!(changed(&chmod, &setgid), ["sub"]);
    fs::remove_file(fx.path("link")).unwrap();
    symlink("sub/b.txt", fx.path("link")).unwrap();
    let relink = fx.sum(TREE);
    assert_eq!(changed(&setgid, &relink), ["link"]);
    if is_root() {
        // A COPY writes context files as 0:0 (or --chown's owner), whoever owns them here:
        // another runner's checkout, owned by another user, has the same keys.
        std::os::unix::fs::lchown(fx.path("link"), Some(1000), None).unwrap();
        std::os::unix::fs::chown(fx.path("sub/b.txt"), None, Some(1000)).unwrap();
        assert_eq!(fx.sum(TREE).digest, relink.digest);
    }
}

#[test]
fn a_copy_of_the_tree_elsewhere_has_the_same_digest() {
    // New inodes, new times, another root: none of it is content.
    let (fx, other) = (Fixture::new(), Fixture::new());
    set_mtime(&other.path("a.txt"), 1_000_000);
    assert_eq!(fx.sum(TREE).digest, other.sum(TREE).digest);
}

#[test]
fn order_duplicates_and_dot_spellings_do_not_matter() {
    let fx = Fixture::new();
    let plain = fx.sum(&["a.txt", "sub/b.txt"]);
    let messy = fx.sum(&[
        "./sub/b.txt",
        "a.txt",
        "sub/./b.txt",
        "a.txt",
        "sub//b.txt/",
    ]);
    assert_eq!((messy.digest, &messy.files), (plain.digest, &plain.files));
    assert_eq!((messy.files.len(), messy.hashed), (2, 0));
    assert_eq!(fx.sum(&["./", "."]).files.len(), 1);
}

#[test]
fn the_selection_is_part_of_the_digest() {
    let fx = Fixture::new();
    let both = fx.sum(&["a.txt", "sub/b.txt"]);
    assert_ne!(fx.sum(&["a.txt"]).digest, both.digest);
    assert_ne!(fx.sum(&[]).digest, both.digest);
}

#[test]
fn a_vanished_path_is_an_error_naming_it() {
    let fx = Fixture::new();
    fs::remove_file(fx.path("sub/b.txt")).unwrap();
    let err = fx.try_sum(TREE).unwrap_err();
    assert!(matches!(err, ChecksumError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("sub/b.txt"), "{err}");
    // Below a path that is now a file.
    let err = fx.try_sum(&["a.txt/x"]).unwrap_err();
    assert!(err.to_string().contains("a.txt/x"), "{err}");
}

#[test]
fn paths_leaving_the_root_are_refused() {
    let fx = Fixture::new();
    for bad in ["../ctx/a.txt", "sub/../../x", "/etc/passwd"] {
        let err = fx.try_sum(&[bad]).unwrap_err();
        assert!(
            matches!(err, ChecksumError::InvalidPath { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn special_files_are_described_not_opened() {
    let fx = Fixture::new();
    let fifo = fx.path("fifo");
    rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
    // Opening a fifo would block until a writer came.
    let sum = fx.sum(&["fifo"]);
    assert_eq!((sum.files[0].kind, sum.hashed), (FileKind::Fifo, 0));
    if is_root() {
        let dev = |minor| rustix::fs::makedev(1, minor);
        let null = fx.path("null");
        rustix::fs::mknodat(
            CWD,
            &null,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            dev(3),
        )
        .unwrap();
        let before = fx.sum(&["null"]);
        assert_eq!(before.files[0].kind, FileKind::CharDevice);
        fs::remove_file(&null).unwrap();
        rustix::fs::mknodat(
            CWD,
            &null,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            dev(5),
        )
        .unwrap();
        assert_ne!(fx.sum(&["null"]).digest, before.digest);
    }
}

#[test]
fn fresh_files_are_not_remembered_within_the_racy_window() {
    let fx = Fixture::new();
    let paths: Vec<PathBuf> = TREE.iter().map(PathBuf::from).collect();
    let hour = Duration::from_secs(3600);
    // Just written, so a same-tick rewrite could go unseen: hashed every time.
    for _ in 0..2 {
        let sum = checksum_with(&fx.root, &paths, &fx.db, hour).unwrap();
        assert_eq!(sum.hashed, 2);
    }
    assert_eq!(fx.rows(), 0);
    assert_eq!(fx.sum(TREE).hashed, 2);
    assert_eq!(fx.rows(), 2);
}

#[test]
fn rows_of_removed_files_are_dropped_by_a_selection_covering_them() {
    let fx = Fixture::new();
    fx.sum(TREE);
    assert_eq!(fx.rows(), 2);
    fs::remove_file(fx.path("sub/b.txt")).unwrap();
    // A selection that does not cover sub/ leaves its rows alone...
    fx.sum(&["a.txt"]);
    assert_eq!(fx.rows(), 2);
    // ...one that covers it drops the row of the file it no longer lists.
    fx.sum(&["sub"]);
    assert_eq!(fx.rows(), 1);
    // A file turned into a directory loses its row when seen.
    fs::remove_file(fx.path("a.txt")).unwrap();
    fs::create_dir(fx.path("a.txt")).unwrap();
    fx.sum(&["a.txt"]);
    assert_eq!(fx.rows(), 0);
}

#[test]
fn rows_of_a_sibling_root_sharing_a_name_prefix_are_separate() {
    let fx = Fixture::new();
    let sibling = fx.root.with_file_name("ctx2");
    fs::create_dir(&sibling).unwrap();
    fs::write(sibling.join("a.txt"), "other").unwrap();
    let paths = [PathBuf::from("a.txt")];
    checksum_with(&sibling, &paths, &fx.db, Duration::ZERO).unwrap();
    let root = fs::canonicalize(&fx.root).unwrap();
    assert_eq!(fx.db.stat_rows_under(&root).unwrap().len(), 0);
    // A selection covering all of ctx must not mistake ctx2's row for one of its own.
    fx.sum(TREE);
    assert_eq!(fx.rows(), 3);
    let again = checksum_with(&sibling, &paths, &fx.db, Duration::ZERO).unwrap();
    assert_eq!(again.hashed, 0);
}
