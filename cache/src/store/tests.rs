use std::io::Write;

use super::*;

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("content")).unwrap();
    (dir, store)
}

fn ingest_entries(store: &ContentStore) -> usize {
    fs::read_dir(store.ingest_dir()).unwrap().count()
}

#[test]
fn open_creates_the_layout() {
    let (_dir, store) = store();
    assert!(store.dir().join("blobs/sha256").is_dir());
    assert!(store.dir().join("ingest").is_dir());
}

#[test]
fn writer_names_blob_by_what_was_written() {
    let (_dir, store) = store();
    let mut w = store.writer().unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    assert_eq!(w.written(), 11);
    let info = w.commit(None, None).unwrap();
    assert_eq!(info.digest, Digest::of(b"hello world"));
    assert_eq!(info.size, 11);
    assert_eq!(store.read(&info.digest).unwrap(), b"hello world");
    assert_eq!(ingest_entries(&store), 0);
}

#[test]
fn dropping_an_uncommitted_writer_removes_its_temp_file() {
    let (_dir, store) = store();
    let mut w = store.writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    let temp = w.temp_path().to_path_buf();
    assert!(temp.is_file());
    drop(w);
    assert!(!temp.exists());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn temp_names_differ_between_writers() {
    let (_dir, store) = store();
    let a = store.writer().unwrap();
    let b = store.writer().unwrap();
    assert_ne!(a.temp_path(), b.temp_path());
    assert_eq!(ingest_entries(&store), 2);
}

#[test]
fn clean_ingest_spares_live_writers_and_reaps_unlocked_files() {
    let (_dir, store) = store();
    let mut live = store.writer().unwrap();
    live.write_all(b"still going").unwrap();
    // What a SIGKILLed writer leaves: a temp file nobody holds a lock on.
    fs::write(store.ingest_dir().join("1234-0-0.tmp"), b"half a blob").unwrap();
    assert_eq!(store.clean_ingest().unwrap(), 1);
    assert!(live.temp_path().is_file());
    let info = live.commit(None, None).unwrap();
    assert_eq!(store.read(&info.digest).unwrap(), b"still going");
    assert_eq!(store.clean_ingest().unwrap(), 0);
}

#[test]
fn commit_rejects_wrong_digest_and_removes_temp_file() {
    let (_dir, store) = store();
    let wanted = Digest::of(b"wanted");
    let mut w = store.writer().unwrap();
    w.write_all(b"other").unwrap();
    let err = w.commit(Some(&wanted), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&wanted.to_string()), "{msg}");
    assert!(msg.contains(&Digest::of(b"other").to_string()), "{msg}");
    assert_eq!(ingest_entries(&store), 0);
    assert!(!store.contains(&wanted));
    assert!(!store.contains(&Digest::of(b"other")));
}

#[test]
fn commit_rejects_wrong_size_even_with_right_digest() {
    let (_dir, store) = store();
    let digest = Digest::of(b"12345");
    let mut w = store.writer().unwrap();
    w.write_all(b"12345").unwrap();
    let err = w.commit(Some(&digest), Some(4)).unwrap_err();
    assert!(
        matches!(err, StoreError::SizeMismatch { expected_size: 4, actual_size: 5, digest: d } if d == digest),
        "{err}"
    );
    assert!(!store.contains(&digest));
}

#[test]
fn committing_an_existing_blob_keeps_it_and_drops_the_temp_file() {
    let (_dir, store) = store();
    let digest = store.put(b"same").unwrap();
    let mut w = store.writer().unwrap();
    w.write_all(b"same").unwrap();
    let temp = w.temp_path().to_path_buf();
    assert_eq!(w.commit(Some(&digest), Some(4)).unwrap().digest, digest);
    assert!(!temp.exists());
    assert_eq!(store.read(&digest).unwrap(), b"same");
}

#[test]
fn list_skips_names_that_are_not_digests() {
    let (_dir, store) = store();
    let digest = store.put(b"x").unwrap();
    fs::write(store.blobs_dir().join("README"), b"not a blob").unwrap();
    fs::write(store.blobs_dir().join(digest.hex().to_uppercase()), b"x").unwrap();
    fs::create_dir(store.blobs_dir().join(Digest::of(b"dir").hex())).unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed, vec![BlobInfo { digest, size: 1 }]);
}

#[test]
fn missing_blob_errors_name_the_digest() {
    let (_dir, store) = store();
    let digest = Digest::of(b"absent");
    for err in [
        store.read(&digest).unwrap_err(),
        store.size(&digest).unwrap_err(),
        store.open_blob(&digest).unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound { digest: d } if d == digest));
        assert!(err.to_string().contains(&digest.to_string()));
    }
}

#[test]
fn put_verified_stops_reading_past_the_promised_size() {
    let (_dir, store) = store();
    let long = vec![7u8; 10_000];
    let err = store
        .put_verified(&Digest::of(&long), Some(100), &long[..])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLong {
                expected_size: 100,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(ingest_entries(&store), 0);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn put_verified_of_present_blob_checks_size_without_reading() {
    let (_dir, store) = store();
    let digest = store.put(b"present").unwrap();
    let unread = std::io::repeat(0).take(u64::MAX);
    assert_eq!(store.put_verified(&digest, Some(7), unread).unwrap(), 7);
    let err = store.put_verified(&digest, Some(8), &b""[..]).unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
}

#[test]
fn fsck_passes_intact_blobs() {
    let (_dir, store) = store();
    store.put(b"a").unwrap();
    store.put(b"b").unwrap();
    assert!(store.fsck().unwrap().is_empty());
    assert_eq!(store.list().unwrap().len(), 2);
}
