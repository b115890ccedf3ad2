//! The content store, state lock and database as a build uses them: many threads, several
//! processes, and processes killed at arbitrary moments.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbuild_cache::db::{Database, ImageRecord};
use rbuild_cache::store::{BlobInfo, ContentStore, StoreError};
use rbuild_cache::Digest;

/// splitmix64: enough randomness for test data and kill times without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Rng(nanos.as_nanos() as u64 ^ u64::from(std::process::id()) << 32)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[test]
fn handles_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ContentStore>();
    shareable::<Database>();
    fn movable<T: Send>() {}
    movable::<rbuild_cache::store::BlobWriter>();
    movable::<rbuild_cache::lock::StateLock>();
}

fn new_store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("content")).unwrap();
    (dir, store)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Hashes every file in blobs/sha256 independently of the store and panics on a mismatch.
fn assert_every_blob_matches_its_name(store: &ContentStore) -> usize {
    let names = dir_entries(store.blobs_dir());
    for name in &names {
        let bytes = fs::read(store.blobs_dir().join(name)).unwrap();
        assert_eq!(
            Digest::of(&bytes).hex(),
            *name,
            "blob file {name} is corrupt"
        );
    }
    names.len()
}

#[test]
fn put_read_size_list_remove_round_trip() {
    let (_dir, store) = new_store();
    let config = br#"{"architecture":"amd64"}"#;
    let manifest = br#"{"schemaVersion":2}"#;
    let c = store.put(config).unwrap();
    let m = store.put(manifest).unwrap();
    assert_eq!(c, Digest::of(config));
    assert_eq!(store.put(config).unwrap(), c, "putting twice is a no-op");
    assert!(store.contains(&c) && store.contains(&m));
    assert_eq!(store.read(&m).unwrap(), manifest);
    assert_eq!(store.size(&c).unwrap(), config.len() as u64);
    assert_eq!(
        store.path(&c),
        store.dir().join("blobs/sha256").join(c.hex())
    );
    let mut expected = vec![
        BlobInfo {
            digest: c,
            size: config.len() as u64,
        },
        BlobInfo {
            digest: m,
            size: manifest.len() as u64,
        },
    ];
    expected.sort();
    assert_eq!(store.list().unwrap(), expected);

    assert!(store.remove(&c).unwrap());
    assert!(!store.remove(&c).unwrap());
    assert!(!store.contains(&c));
    assert!(matches!(store.read(&c), Err(StoreError::NotFound { .. })));
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn put_verified_accepts_matching_content() {
    let (_dir, store) = new_store();
    let data = Rng(7).bytes(300_000);
    let digest = Digest::of(&data);
    let size = store
        .put_verified(&digest, Some(data.len() as u64), &data[..])
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(store.read(&digest).unwrap(), data);
    // Without a size, too.
    let small = b"no size given";
    assert_eq!(
        store
            .put_verified(&Digest::of(small), None, &small[..])
            .unwrap(),
        small.len() as u64
    );
}

#[test]
fn put_verified_rejects_wrong_digest_and_wrong_size_leaving_nothing() {
    let (_dir, store) = new_store();
    let data = b"what the registry actually sent";
    let claimed = Digest::of(b"what the manifest promised");
    let actual = Digest::of(data);

    let err = store
        .put_verified(&claimed, Some(data.len() as u64), &data[..])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&claimed.to_string()), "{msg}");
    assert!(msg.contains(&actual.to_string()), "{msg}");
    assert!(msg.contains(&format!("({} bytes)", data.len())), "{msg}");

    let err = store.put_verified(&actual, Some(3), &data[..]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&actual.to_string()), "{msg}");
    assert!(msg.contains("3 bytes"), "{msg}");

    let err = store
        .put_verified(&actual, Some(1000), &data[..])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("1000 bytes"), "{msg}");
    assert!(msg.contains(&format!("{} bytes", data.len())), "{msg}");

    assert!(dir_entries(store.blobs_dir()).is_empty());
    assert!(dir_entries(store.ingest_dir()).is_empty());
}

#[test]
fn eight_threads_writing_same_and_different_blobs_all_succeed() {
    let (_dir, store) = new_store();
    let shared = Rng(1).bytes(1 << 20);
    let shared_digest = Digest::of(&shared);
    let own: Vec<Vec<u8>> = (0..8).map(|i| Rng(100 + i).bytes(200_000)).collect();
    let start = Barrier::new(8);
    std::thread::scope(|s| {
        for data in &own {
            let (store, shared, start) = (&store, &shared, &start);
            s.spawn(move || {
                start.wait();
                // Small chunks so the threads' writes interleave.
                let mut w = store.writer().unwrap();
                for chunk in shared.chunks(4096) {
                    w.write_all(chunk).unwrap();
                }
                let info = w.commit(Some(&shared_digest), Some(1 << 20)).unwrap();
                assert_eq!(info.digest, shared_digest);
                let digest = Digest::of(data);
                let size = store.put_verified(&digest, None, &data[..]).unwrap();
                assert_eq!(size, data.len() as u64);
            });
        }
    });
    assert_eq!(assert_every_blob_matches_its_name(&store), 9);
    assert_eq!(store.read(&shared_digest).unwrap(), shared);
    for data in &own {
        assert_eq!(store.read(&Digest::of(data)).unwrap(), *data);
    }
    assert!(dir_entries(store.ingest_dir()).is_empty());
}

#[test]
fn fsck_finds_a_blob_corrupted_after_it_was_written_and_untrusts_it() {
    let (_dir, store) = new_store();
    let good = store.put(b"good").unwrap();
    let victim = store.put(b"will be overwritten").unwrap();
    let big = store.put(&Rng(3).bytes(3 << 20)).unwrap();
    assert!(store.fsck().unwrap().is_empty());

    // Flip one byte in the middle of a big blob, and truncate a small one.
    let big_path = store.path(&big);
    let mut bytes = fs::read(&big_path).unwrap();
    bytes[1 << 20] ^= 0x01;
    fs::write(&big_path, bytes).unwrap();
    fs::write(store.path(&victim), b"will be").unwrap();

    let mut expected = vec![victim, big];
    expected.sort();
    assert_eq!(store.fsck().unwrap(), expected);
    assert!(!store.contains(&victim) && !store.contains(&big));
    assert!(store.contains(&good));
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(store.dir().join("corrupt").join(victim.hex()).is_file());
    assert!(store.fsck().unwrap().is_empty(), "second fsck is clean");

    // The blob can be fetched again.
    store.put(b"will be overwritten").unwrap();
    assert!(store.contains(&victim));
}

const CHILD_STORE_ENV: &str = "RBUILD_TEST_STORE_WRITER_DIR";
const CHILD_TEST: &str = "store_writer_child";

/// Not a test on its own: when `killed_writers_leave_garbage_only_in_ingest` re-executes this
/// binary with the env var set, this loops writing blobs until it is SIGKILLed.
#[test]
fn store_writer_child() {
    let Ok(dir) = std::env::var(CHILD_STORE_ENV) else {
        return;
    };
    let store = ContentStore::open(dir).unwrap();
    let mut rng = Rng::seeded();
    loop {
        let data = match rng.below(8) {
            // Already present after the first round: exercises the "exists" path of commit.
            0 => b"the same small blob every time".to_vec(),
            1 | 2 => {
                let len = (1 << 20) + rng.below(3 << 20) as usize;
                rng.bytes(len)
            }
            _ => {
                let len = rng.below(64 << 10) as usize;
                rng.bytes(len)
            }
        };
        let mut w = store.writer().unwrap();
        for chunk in data.chunks(64 << 10) {
            w.write_all(chunk).unwrap();
        }
        w.commit(Some(&Digest::of(&data)), Some(data.len() as u64))
            .unwrap();
    }
}

#[test]
fn killed_writers_leave_garbage_only_in_ingest() {
    let (_dir, store) = new_store();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::seeded();
    let mut leftovers = 0;
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args([CHILD_TEST, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD_STORE_ENV, store.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        child.kill().unwrap(); // SIGKILL: no destructors, no cleanup.
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the writer must have been killed"
        );

        // Blobs are never rewritten once present, so checking them all at the end suffices.
        let in_ingest = dir_entries(store.ingest_dir()).len();
        assert_eq!(store.clean_ingest().unwrap(), in_ingest, "round {round}");
        assert!(dir_entries(store.ingest_dir()).is_empty());
        leftovers += in_ingest;
    }
    // Otherwise the kills never landed mid-write and the test proved nothing.
    assert!(leftovers > 0, "no kill interrupted a write");
    let blobs = assert_every_blob_matches_its_name(&store);
    assert!(blobs > 0, "the writer never committed anything");
    assert!(store.fsck().unwrap().is_empty());

    let after = store.put(b"written after the crashes").unwrap();
    assert_eq!(store.read(&after).unwrap(), b"written after the crashes");
}

fn image(n: u64) -> ImageRecord {
    ImageRecord {
        digest: Digest::of(&n.to_le_bytes()),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        size: 500 + n,
        created_at: 1_700_000_000 + n as i64,
    }
}

#[test]
fn database_persists_across_reopen_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let diff = Digest::of(b"diff");
    {
        let db = Database::open(&path).unwrap();
        db.set_image("docker.io/library/app:1.0", &image(1))
            .unwrap();
        db.set_layer_blob(&diff, "gzip", &Digest::of(b"gz"), 42)
            .unwrap();
    }
    let db = Database::open(&path).unwrap();
    assert_eq!(
        db.image("docker.io/library/app:1.0").unwrap(),
        Some(image(1))
    );
    assert_eq!(
        db.layer_blob(&diff, "gzip").unwrap(),
        Some((Digest::of(b"gz"), 42))
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn two_database_handles_on_one_file_write_concurrently_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let handles = [
        Database::open(&path).unwrap(),
        Database::open(&path).unwrap(),
    ];
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        for (t, db) in handles.iter().enumerate() {
            let start = &start;
            s.spawn(move || {
                start.wait();
                for i in 0..200u64 {
                    let n = t as u64 * 1000 + i;
                    db.set_image(&format!("example.com/t{t}:{i}"), &image(n))
                        .unwrap();
                    let diff = Digest::of(&n.to_be_bytes());
                    db.set_layer_blob(&diff, "zstd", &Digest::of(b"z"), n)
                        .unwrap();
                    assert_eq!(db.layer_blob(&diff, "zstd").unwrap().unwrap().1, n);
                    db.images().unwrap();
                }
            });
        }
    });
    let fresh = Database::open(&path).unwrap();
    assert_eq!(fresh.images().unwrap().len(), 400);
    assert_eq!(fresh.layer_blobs().unwrap().len(), 400);
    fresh.forget_blob(&Digest::of(b"z")).unwrap();
    assert!(fresh.layer_blobs().unwrap().is_empty());
}
