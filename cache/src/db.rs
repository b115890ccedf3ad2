//! `cache.db`: image references and remembered layer compressions, in one SQLite file.
//!
//! SQLite in WAL mode lets readers run beside one writer, and a busy timeout makes a second
//! rbuild process on the same root wait for a write lock instead of failing. The schema is
//! versioned with `PRAGMA user_version`: each entry of [`MIGRATIONS`] brings it one version up.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::digest::Digest;

/// How long a write waits for another process's transaction before giving up. Generous, since
/// transactions here are short and failing a build over a busy lock is worse than waiting.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Schema steps; version N is reached by applying the first N. Append only, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: image references and compressed blobs per layer.
    "CREATE TABLE images (
        name TEXT PRIMARY KEY NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE layer_blobs (
        diff_id TEXT NOT NULL,
        compression TEXT NOT NULL,
        blob TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (diff_id, compression)
    ) STRICT;
    CREATE INDEX layer_blobs_by_blob ON layer_blobs (blob);",
    // 2: registries: where blobs are known to exist (for cross-repository mounts), and which
    // image names came from a pull (re-resolved against their registry by every build).
    "CREATE TABLE blob_sources (
        digest TEXT NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    ) STRICT;
    CREATE TABLE pulled_images (
        name TEXT PRIMARY KEY NOT NULL,
        digest TEXT NOT NULL
    ) STRICT;",
    // 3: the build cache: what each cache key produced, what each step's key was made of
    // last time (to explain a miss), and file digests by stat (to checksum a context without
    // reading unchanged files).
    "CREATE TABLE cache_records (
        key TEXT PRIMARY KEY NOT NULL,
        diff_id TEXT,
        blob TEXT,
        media_type TEXT,
        size INTEGER,
        created_at INTEGER NOT NULL,
        last_used INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE step_history (
        step TEXT PRIMARY KEY NOT NULL,
        key TEXT NOT NULL,
        inputs TEXT NOT NULL
    ) STRICT;
    CREATE TABLE stat_cache (
        path BLOB PRIMARY KEY NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        digest TEXT NOT NULL
    ) STRICT;",
    // 4: the image config a build made, by everything in it but its times, so an unchanged
    // rebuild gives the same image.
    "CREATE TABLE built_configs (
        key TEXT PRIMARY KEY NOT NULL,
        config TEXT NOT NULL
    ) STRICT;",
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {op}: {source}")]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this rbuild knows; \
         use a newer rbuild or another --root"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path}: {what} holds {value:?}, which is not valid: {reason}")]
    BadValue {
        path: PathBuf,
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("database {path}: size {size} of {digest} is too large to store")]
    SizeTooLarge {
        path: PathBuf,
        digest: Digest,
        size: u64,
    },
}

/// What an image name points at: the image's top-level descriptor (manifest or index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Unix seconds when the name was set.
    pub created_at: i64,
}

/// What a cache key produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRecord {
    /// `None`: the step changed nothing and added no layer.
    pub layer: Option<RecordedLayer>,
    pub created_at: i64,
}

/// A cache record as garbage collection sees it: its key, what it produced, when last used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: Digest,
    pub layer: Option<RecordedLayer>,
    /// Unix seconds when a build last hit (or wrote) the record.
    pub last_used: i64,
}

/// A layer a cached step made: its diffID and the blob it was stored as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedLayer {
    pub diff_id: Digest,
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A handle on `cache.db`. Safe to share between threads; several handles (and processes) may
/// use one file at once.
#[derive(Debug)]
pub struct Database {
    // rusqlite connections are Send but not Sync; the mutex makes the handle shareable.
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Database {
    /// Opens or creates the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Database, DbError> {
        let fail = |op| move |source| sqlite_error(path, op, source);
        let mut conn = Connection::open(path).map_err(fail("open"))?;
        // Before anything that may need a lock, so that even setup waits for other processes.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(fail("set busy timeout"))?;
        enable_wal(&conn).map_err(fail("enable WAL"))?;
        // In WAL mode NORMAL still commits atomically; a power cut may lose the newest commits
        // but never corrupts. Blobs are fsynced before rows name them, so a lost row only costs
        // a re-tag or a recompression.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail("set synchronous"))?;
        migrate(&mut conn, path)?;
        Ok(Database {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Points `name` at `image`, replacing what it pointed at before. The name is now a local
    /// one (built, loaded or tagged here), no longer tracking a registry.
    pub fn set_image(&self, name: &str, image: &ImageRecord) -> Result<(), DbError> {
        self.write_image(name, image, false)
    }

    /// Points `name` at an image just pulled from its registry, which later builds re-resolve.
    pub fn set_pulled_image(&self, name: &str, image: &ImageRecord) -> Result<(), DbError> {
        self.write_image(name, image, true)
    }

    /// The name and its pulled mark in one transaction, so a crash cannot leave a pulled name
    /// looking local (never re-resolved) or a local one looking pulled.
    fn write_image(&self, name: &str, image: &ImageRecord, pulled: bool) -> Result<(), DbError> {
        let size = self.size_to_sql(&image.digest, image.size)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error("set image", e))?;
        tx.execute(
            "INSERT OR REPLACE INTO images (name, digest, media_type, size, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name,
                image.digest.to_string(),
                image.media_type,
                size,
                image.created_at
            ],
        )
        .map_err(|e| self.error("set image", e))?;
        if pulled {
            tx.execute(
                "INSERT OR REPLACE INTO pulled_images (name, digest) VALUES (?1, ?2)",
                params![name, image.digest.to_string()],
            )
        } else {
            tx.execute("DELETE FROM pulled_images WHERE name = ?1", [name])
        }
        .map_err(|e| self.error("set image", e))?;
        tx.commit().map_err(|e| self.error("set image", e))
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, DbError> {
        let row = self
            .conn()
            .query_row(
                "SELECT digest, media_type, size, created_at FROM images WHERE name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(|e| self.error("read image", e))?;
        row.map(|row| self.image_record(row)).transpose()
    }

    /// Every image name with its record, sorted by name.
    pub fn images(&self) -> Result<Vec<(String, ImageRecord)>, DbError> {
        let rows: Vec<(String, RawImage)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT name, digest, media_type, size, created_at FROM images ORDER BY name",
                )
                .map_err(|e| self.error("list images", e))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
                    ))
                })
                .map_err(|e| self.error("list images", e))?;
            rows.collect::<Result<_, _>>()
                .map_err(|e| self.error("list images", e))?
        };
        rows.into_iter()
            .map(|(name, raw)| Ok((name, self.image_record(raw)?)))
            .collect()
    }

    /// Removes the name; `false` if it did not exist.
    pub fn remove_image(&self, name: &str) -> Result<bool, DbError> {
        let removed = self
            .conn()
            .execute("DELETE FROM images WHERE name = ?1", [name])
            .map_err(|e| self.error("remove image", e))?;
        self.conn()
            .execute("DELETE FROM pulled_images WHERE name = ?1", [name])
            .map_err(|e| self.error("remove image", e))?;
        Ok(removed > 0)
    }

    /// Remembers that compressing layer `diff_id` with `compression` gave `blob` of `size` bytes.
    pub fn set_layer_blob(
        &self,
        diff_id: &Digest,
        compression: &str,
        blob: &Digest,
        size: u64,
    ) -> Result<(), DbError> {
        let size = self.size_to_sql(blob, size)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO layer_blobs (diff_id, compression, blob, size)
                 VALUES (?1, ?2, ?3, ?4)",
                params![diff_id.to_string(), compression, blob.to_string(), size],
            )
            .map_err(|e| self.error("set layer blob", e))?;
        Ok(())
    }

    pub fn layer_blob(
        &self,
        diff_id: &Digest,
        compression: &str,
    ) -> Result<Option<(Digest, u64)>, DbError> {
        let row: Option<(String, i64)> = self
            .conn()
            .query_row(
                "SELECT blob, size FROM layer_blobs WHERE diff_id = ?1 AND compression = ?2",
                params![diff_id.to_string(), compression],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error("read layer blob", e))?;
        row.map(|(blob, size)| Ok((self.digest("layer_blobs.blob", blob)?, self.size(size)?)))
            .transpose()
    }

    /// Every remembered compression as (diff_id, compression, blob, size), sorted.
    pub fn layer_blobs(&self) -> Result<Vec<(Digest, String, Digest, u64)>, DbError> {
        let rows: Vec<(String, String, String, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT diff_id, compression, blob, size FROM layer_blobs
                     ORDER BY diff_id, compression",
                )
                .map_err(|e| self.error("list layer blobs", e))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(|e| self.error("list layer blobs", e))?;
            rows.collect::<Result<_, _>>()
                .map_err(|e| self.error("list layer blobs", e))?
        };
        rows.into_iter()
            .map(|(diff_id, compression, blob, size)| {
                Ok((
                    self.digest("layer_blobs.diff_id", diff_id)?,
                    compression,
                    self.digest("layer_blobs.blob", blob)?,
                    self.size(size)?,
                ))
            })
            .collect()
    }

    /// Forgets every compression that produced `blob`, once GC has removed it.
    pub fn forget_blob(&self, blob: &Digest) -> Result<(), DbError> {
        self.conn()
            .execute(
                "DELETE FROM layer_blobs WHERE blob = ?1",
                [blob.to_string()],
            )
            .map_err(|e| self.error("forget blob", e))?;
        Ok(())
    }

    /// Remembers that `registry` holds `digest` in `repository`.
    pub fn add_blob_source(
        &self,
        digest: &Digest,
        registry: &str,
        repository: &str,
    ) -> Result<(), DbError> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO blob_sources (digest, registry, repository)
                 VALUES (?1, ?2, ?3)",
                params![digest.to_string(), registry, repository],
            )
            .map_err(|e| self.error("add blob source", e))?;
        Ok(())
    }

    /// The repositories of `registry` known to hold `digest`, sorted.
    pub fn blob_sources(&self, digest: &Digest, registry: &str) -> Result<Vec<String>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT repository FROM blob_sources WHERE digest = ?1 AND registry = ?2
                 ORDER BY repository",
            )
            .map_err(|e| self.error("read blob sources", e))?;
        let rows = stmt
            .query_map(params![digest.to_string(), registry], |row| row.get(0))
            .map_err(|e| self.error("read blob sources", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.error("read blob sources", e))
    }

    /// The digest `name` had when it was last pulled, if it still tracks its registry.
    pub fn pulled(&self, name: &str) -> Result<Option<Digest>, DbError> {
        let row: Option<String> = self
            .conn()
            .query_row(
                "SELECT digest FROM pulled_images WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error("read pulled image", e))?;
        row.map(|d| self.digest("pulled_images.digest", d))
            .transpose()
    }

    /// What `key` produced, if it was recorded; marks the record used now.
    pub fn cache_record(&self, key: &Digest) -> Result<Option<CacheRecord>, DbError> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            i64,
        );
        let row: Option<Row> = self
            .conn()
            .query_row(
                "UPDATE cache_records SET last_used = ?2 WHERE key = ?1
                 RETURNING diff_id, blob, media_type, size, created_at",
                params![key.to_string(), unix_now()],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error("read cache record", e))?;
        let Some((diff_id, blob, media_type, size, created_at)) = row else {
            return Ok(None);
        };
        let layer = self.recorded_layer((diff_id, blob, media_type, size))?;
        Ok(Some(CacheRecord { layer, created_at }))
    }

    /// A record's layer columns; all NULL (or any NULL) is a step that made no layer.
    fn recorded_layer(&self, raw: RawLayer) -> Result<Option<RecordedLayer>, DbError> {
        let (Some(diff_id), Some(blob), Some(media_type), Some(size)) = raw else {
            return Ok(None);
        };
        Ok(Some(RecordedLayer {
            diff_id: self.digest("cache_records.diff_id", diff_id)?,
            blob: self.digest("cache_records.blob", blob)?,
            media_type,
            size: self.size(size)?,
        }))
    }

    /// Records what `key` produced: a layer, or nothing (a step that changed no file).
    pub fn set_cache_record(
        &self,
        key: &Digest,
        layer: Option<&RecordedLayer>,
    ) -> Result<(), DbError> {
        let size = layer
            .map(|l| self.size_to_sql(&l.blob, l.size))
            .transpose()?;
        let now = unix_now();
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO cache_records
                 (key, diff_id, blob, media_type, size, created_at, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![
                    key.to_string(),
                    layer.map(|l| l.diff_id.to_string()),
                    layer.map(|l| l.blob.to_string()),
                    layer.map(|l| l.media_type.clone()),
                    size,
                    now
                ],
            )
            .map_err(|e| self.error("set cache record", e))?;
        Ok(())
    }

    /// Every cache record, least recently used first (ties by key, so the order is stable).
    /// Reading does not mark them used.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, DbError> {
        let rows: Vec<(String, RawLayer, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT key, diff_id, blob, media_type, size, last_used FROM cache_records
                     ORDER BY last_used, key",
                )
                .map_err(|e| self.error("list cache records", e))?;
            let rows = stmt
                .query_map([], |row| {
                    let layer = (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
                    Ok((row.get(0)?, layer, row.get(5)?))
                })
                .map_err(|e| self.error("list cache records", e))?;
            rows.collect::<Result<_, _>>()
                .map_err(|e| self.error("list cache records", e))?
        };
        rows.into_iter()
            .map(|(key, layer, last_used)| {
                Ok(CacheEntry {
                    key: self.digest("cache_records.key", key)?,
                    layer: self.recorded_layer(layer)?,
                    last_used,
                })
            })
            .collect()
    }

    /// Deletes the records of `keys` in one transaction; returns how many existed.
    pub fn remove_cache_records(&self, keys: &[Digest]) -> Result<usize, DbError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error("remove cache records", e))?;
        let mut removed = 0;
        for key in keys {
            removed += tx
                .execute(
                    "DELETE FROM cache_records WHERE key = ?1",
                    [key.to_string()],
                )
                .map_err(|e| self.error("remove cache records", e))?;
        }
        tx.commit()
            .map_err(|e| self.error("remove cache records", e))?;
        Ok(removed)
    }

    /// The config a build made for `key` (its config without times), if recorded.
    pub fn built_config(&self, key: &Digest) -> Result<Option<Digest>, DbError> {
        let row: Option<String> = self
            .conn()
            .query_row(
                "SELECT config FROM built_configs WHERE key = ?1",
                [key.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error("read built config", e))?;
        row.map(|d| self.digest("built_configs.config", d))
            .transpose()
    }

    pub fn set_built_config(&self, key: &Digest, config: &Digest) -> Result<(), DbError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO built_configs (key, config) VALUES (?1, ?2)",
                params![key.to_string(), config.to_string()],
            )
            .map_err(|e| self.error("set built config", e))?;
        Ok(())
    }

    /// What a step's key was made of last time, as the caller wrote it (JSON).
    pub fn step_inputs(&self, step: &str) -> Result<Option<(Digest, String)>, DbError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT key, inputs FROM step_history WHERE step = ?1",
                [step],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error("read step history", e))?;
        row.map(|(key, inputs)| Ok((self.digest("step_history.key", key)?, inputs)))
            .transpose()
    }

    pub fn set_step_inputs(&self, step: &str, key: &Digest, inputs: &str) -> Result<(), DbError> {
        self.conn()
            .execute(
                // A step that kept its key (a cache hit) keeps its row: no write per hit.
                "INSERT INTO step_history (step, key, inputs) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (step) DO UPDATE SET key = excluded.key, inputs = excluded.inputs \
                 WHERE step_history.key != excluded.key",
                params![step, key.to_string(), inputs],
            )
            .map_err(|e| self.error("set step history", e))?;
        Ok(())
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (its transactions
        // roll back), so a poisoned mutex is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn error(&self, op: &'static str, source: rusqlite::Error) -> DbError {
        sqlite_error(&self.path, op, source)
    }

    fn image_record(&self, raw: RawImage) -> Result<ImageRecord, DbError> {
        let (digest, media_type, size, created_at) = raw;
        Ok(ImageRecord {
            digest: self.digest("images.digest", digest)?,
            media_type,
            size: self.size(size)?,
            created_at,
        })
    }

    pub(crate) fn digest(&self, what: &'static str, value: String) -> Result<Digest, DbError> {
        value
            .parse()
            .map_err(|e: crate::digest::DigestError| DbError::BadValue {
                path: self.path.clone(),
                what,
                reason: e.to_string(),
                value,
            })
    }

    pub(crate) fn size(&self, value: i64) -> Result<u64, DbError> {
        u64::try_from(value).map_err(|e| DbError::BadValue {
            path: self.path.clone(),
            what: "size",
            value: value.to_string(),
            reason: e.to_string(),
        })
    }

    /// SQLite integers are signed 64-bit; no real blob is 8 EiB, but say so rather than wrap.
    pub(crate) fn size_to_sql(&self, digest: &Digest, size: u64) -> Result<i64, DbError> {
        i64::try_from(size).map_err(|_| DbError::SizeTooLarge {
            path: self.path.clone(),
            digest: *digest,
            size,
        })
    }
}

/// An `images` row as stored: digest, media type, size, created_at.
type RawImage = (String, String, i64, i64);

/// A `cache_records` row's layer columns as stored: diff_id, blob, media_type, size.
type RawLayer = (Option<String>, Option<String>, Option<String>, Option<i64>);

/// WAL mode is stored in the file, so it is switched on once. Switching takes a lock that
/// SQLite does not wait for with the busy timeout; rbuild processes opening a new root at once
/// may see SQLITE_BUSY for it, so it is retried for a while.
fn enable_wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let switch = || -> Result<(), rusqlite::Error> {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        Ok(())
    };
    let mut attempts = 0;
    loop {
        match switch() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && attempts < 200 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Applies the migrations the file has not seen yet, in one write transaction so that two
/// processes opening a fresh file at once do not both create the tables.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let fail = |op| move |source| sqlite_error(path, op, source);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail("begin migration"))?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail("read schema version"))?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(DbError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for migration in &MIGRATIONS[found.max(0) as usize..] {
        tx.execute_batch(migration)
            .map_err(fail("migrate schema"))?;
    }
    tx.pragma_update(None, "user_version", supported)
        .map_err(fail("set schema version"))?;
    tx.commit().map_err(fail("commit migration"))
}

fn sqlite_error(path: &Path, op: &'static str, source: rusqlite::Error) -> DbError {
    DbError::Sqlite {
        path: path.to_path_buf(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: &str, created_at: i64) -> ImageRecord {
        ImageRecord {
            digest: Digest::of(tag.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: tag.len() as u64 * 100,
            created_at,
        }
    }

    #[test]
    fn images_round_trip_replace_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        assert_eq!(db.image("docker.io/library/app:1.0").unwrap(), None);
        db.set_image("docker.io/library/b:1", &record("b", 1))
            .unwrap();
        db.set_image("docker.io/library/a:1", &record("a", 2))
            .unwrap();
        db.set_image("docker.io/library/a:1", &record("a2", 3))
            .unwrap();
        assert_eq!(
            db.image("docker.io/library/a:1").unwrap(),
            Some(record("a2", 3))
        );
        let names: Vec<String> = db.images().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["docker.io/library/a:1", "docker.io/library/b:1"]);
        assert!(db.remove_image("docker.io/library/a:1").unwrap());
        assert!(!db.remove_image("docker.io/library/a:1").unwrap());
        assert_eq!(db.images().unwrap().len(), 1);
    }

    #[test]
    fn layer_blobs_are_per_compression_and_forgotten_by_blob() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        let diff = Digest::of(b"layer tar");
        let (gz, zst) = (Digest::of(b"gz"), Digest::of(b"zst"));
        db.set_layer_blob(&diff, "gzip", &gz, 10).unwrap();
        db.set_layer_blob(&diff, "zstd", &zst, 8).unwrap();
        assert_eq!(db.layer_blob(&diff, "gzip").unwrap(), Some((gz, 10)));
        assert_eq!(db.layer_blob(&diff, "zstd").unwrap(), Some((zst, 8)));
        assert_eq!(db.layer_blob(&gz, "gzip").unwrap(), None);
        db.forget_blob(&gz).unwrap();
        assert_eq!(db.layer_blob(&diff, "gzip").unwrap(), None);
        assert_eq!(
            db.layer_blobs().unwrap(),
            vec![(diff, "zstd".to_string(), zst, 8)]
        );
    }

    #[test]
    fn blob_sources_and_pulled_names_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        let blob = Digest::of(b"layer");
        db.add_blob_source(&blob, "r:5000", "b/app").unwrap();
        db.add_blob_source(&blob, "r:5000", "a/app").unwrap();
        db.add_blob_source(&blob, "r:5000", "a/app").unwrap();
        db.add_blob_source(&blob, "other", "c").unwrap();
        assert_eq!(
            db.blob_sources(&blob, "r:5000").unwrap(),
            ["a/app", "b/app"]
        );
        assert!(db
            .blob_sources(&Digest::of(b"x"), "r:5000")
            .unwrap()
            .is_empty());
        assert_eq!(db.pulled("r:5000/app:1").unwrap(), None);
        let pulled = record("pulled", 1);
        db.set_pulled_image("r:5000/app:1", &pulled).unwrap();
        assert_eq!(db.pulled("r:5000/app:1").unwrap(), Some(pulled.digest));
        assert_eq!(db.image("r:5000/app:1").unwrap(), Some(pulled));
        // Built or loaded over: a local name again.
        db.set_image("r:5000/app:1", &record("built", 2)).unwrap();
        assert_eq!(db.pulled("r:5000/app:1").unwrap(), None);
        db.set_pulled_image("r:5000/app:1", &record("pulled", 1))
            .unwrap();
        db.remove_image("r:5000/app:1").unwrap();
        assert_eq!(db.pulled("r:5000/app:1").unwrap(), None);
    }

    #[test]
    fn cache_records_and_step_history_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        let (key, empty_key) = (Digest::of(b"k"), Digest::of(b"e"));
        assert_eq!(db.cache_record(&key).unwrap(), None);
        let layer = RecordedLayer {
            diff_id: Digest::of(b"tar"),
            blob: Digest::of(b"gz"),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 42,
        };
        db.set_cache_record(&key, Some(&layer)).unwrap();
        db.set_cache_record(&empty_key, None).unwrap();
        assert_eq!(db.cache_record(&key).unwrap().unwrap().layer, Some(layer));
        assert_eq!(db.cache_record(&empty_key).unwrap().unwrap().layer, None);
        assert_eq!(db.step_inputs("[s 1/2] RUN x").unwrap(), None);
        db.set_step_inputs("[s 1/2] RUN x", &key, "{}").unwrap();
        assert_eq!(db.built_config(&key).unwrap(), None);
        db.set_built_config(&key, &empty_key).unwrap();
        assert_eq!(db.built_config(&key).unwrap(), Some(empty_key));
        assert_eq!(
            db.step_inputs("[s 1/2] RUN x").unwrap(),
            Some((key, "{}".to_string()))
        );
    }

    #[test]
    fn cache_entries_list_least_recently_used_first_and_removal_is_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        let (old, new, empty) = (Digest::of(b"old"), Digest::of(b"new"), Digest::of(b"e"));
        let layer = RecordedLayer {
            diff_id: Digest::of(b"tar"),
            blob: Digest::of(b"gz"),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 7,
        };
        for key in [&new, &old] {
            db.set_cache_record(key, Some(&layer)).unwrap();
        }
        db.set_cache_record(&empty, None).unwrap();
        // Set the clock by hand: written in the same second, the order would rest on keys.
        for (key, when) in [(&old, 100), (&empty, 200), (&new, 300)] {
            db.conn()
                .execute(
                    "UPDATE cache_records SET last_used = ?2 WHERE key = ?1",
                    params![key.to_string(), when],
                )
                .unwrap();
        }
        let entries = db.cache_entries().unwrap();
        let order: Vec<(Digest, i64)> = entries.iter().map(|e| (e.key, e.last_used)).collect();
        assert_eq!(order, [(old, 100), (empty, 200), (new, 300)]);
        assert_eq!(entries[0].layer, Some(layer.clone()));
        assert_eq!(entries[1].layer, None);
        // Listing is not a use: the clock stays where it was.
        assert_eq!(db.cache_entries().unwrap()[0].last_used, 100);

        let gone = Digest::of(b"never recorded");
        assert_eq!(db.remove_cache_records(&[old, gone]).unwrap(), 1);
        assert_eq!(db.cache_record(&old).unwrap(), None);
        assert_eq!(db.cache_record(&new).unwrap().unwrap().layer, Some(layer));
        assert_eq!(db.cache_entries().unwrap().len(), 2);
    }

    #[test]
    fn newer_schema_is_refused_with_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        drop(Database::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Database::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DbError::NewerSchema {
                    found: 99,
                    supported: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("cache.db"), "{err}");
    }

    #[test]
    fn a_mangled_digest_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let db = Database::open(&path).unwrap();
        db.set_image("x", &record("x", 0)).unwrap();
        db.conn()
            .execute("UPDATE images SET digest = 'md5:abc'", [])
            .unwrap();
        let err = db.image("x").unwrap_err();
        assert!(err.to_string().contains("md5:abc"), "{err}");
    }

    #[test]
    fn sizes_beyond_i64_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("cache.db")).unwrap();
        let mut rec = record("huge", 0);
        rec.size = u64::MAX;
        assert!(matches!(
            db.set_image("huge", &rec),
            Err(DbError::SizeTooLarge { .. })
        ));
    }
}
