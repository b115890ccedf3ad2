//! The state root (`--root`, `RBUILD_ROOT`): `content/` (blobs), `cache.db` (image names,
//! layer bookkeeping), `tmp/`, and the lock that keeps `prune` away from running builds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rbuild_cache::db::Database;
use rbuild_cache::lock::StateLock;
use rbuild_cache::store::ContentStore;

/// An open state root. Holding it holds the root's lock (shared, or exclusive for GC).
pub struct State {
    pub root: PathBuf,
    pub content: ContentStore,
    pub db: Database,
    _lock: StateLock,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Builds, loads, tags: many at once.
    Shared,
    /// Garbage collection: waits for every shared holder to finish.
    Exclusive,
}

impl State {
    pub fn open(root: Option<&Path>, access: Access) -> anyhow::Result<State> {
        let root = match root {
            Some(root) => root.to_path_buf(),
            None => default_root()?,
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the state root {}", root.display()))?;
        let lock_path = root.join("lock");
        let lock = match access {
            Access::Shared => StateLock::shared(&lock_path),
            Access::Exclusive => StateLock::exclusive(&lock_path),
        }
        .with_context(|| format!("locking the state root {}", root.display()))?;
        let content = ContentStore::open(root.join("content"))?;
        let db = Database::open(&root.join("cache.db"))?;
        std::fs::create_dir_all(root.join("tmp"))
            .with_context(|| format!("creating {}", root.join("tmp").display()))?;
        Ok(State {
            root,
            content,
            db,
            _lock: lock,
        })
    }

    /// A scratch directory on the root's filesystem, removed when dropped.
    pub fn temp_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("rbuild-")
            .tempdir_in(self.root.join("tmp"))
            .context("creating a temporary directory in the state root")
    }
}

/// `/var/lib/rbuild` for root, as daemons keep their state; the XDG data dir otherwise.
fn default_root() -> anyhow::Result<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/rbuild"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(data).join("rbuild"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither --root, RBUILD_ROOT, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/rbuild"))
}
