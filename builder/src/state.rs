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
    scratch: Scratch,
    _lock: StateLock,
}

/// This process's scratch space, `tmp/proc-<pid>-<n>/`, with an `owner` file it keeps locked:
/// a directory whose lock is free belongs to a process that is gone (killed with SIGKILL,
/// say), and the next rbuild on the root removes it, with any container it left running.
struct Scratch {
    dir: PathBuf,
    _owner: StateLock,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        let root = resolve_root(root)?;
        let lock_path = root.join("lock");
        let lock = match access {
            Access::Shared => StateLock::shared(&lock_path),
            Access::Exclusive => StateLock::exclusive(&lock_path),
        }
        .with_context(|| format!("locking the state root {}", root.display()))?;
        Self::locked(root, lock)
    }

    /// Opens the root exclusively if no one holds its lock right now; `None` while a build
    /// (or a prune) runs. For automatic GC, which must never make a build wait.
    pub fn try_exclusive(root: Option<&Path>) -> anyhow::Result<Option<State>> {
        let root = resolve_root(root)?;
        let lock = StateLock::try_exclusive(root.join("lock"))
            .with_context(|| format!("locking the state root {}", root.display()))?;
        lock.map(|lock| Self::locked(root, lock)).transpose()
    }

    fn locked(root: PathBuf, lock: StateLock) -> anyhow::Result<State> {
        let content = ContentStore::open(root.join("content"))?;
        let db = Database::open(&root.join("cache.db"))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        sweep_dead_scratch(&root);
        let scratch = new_scratch(&tmp)?;
        Ok(State {
            root,
            content,
            db,
            scratch,
            _lock: lock,
        })
    }

    /// This process's scratch directory (runc bundles, extracted contexts, …).
    pub fn scratch(&self) -> &Path {
        &self.scratch.dir
    }

    /// A scratch directory on the root's filesystem, removed when dropped.
    pub fn temp_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("rbuild-")
            .tempdir_in(&self.scratch.dir)
            .context("creating a temporary directory in the state root")
    }
}

fn new_scratch(tmp: &Path) -> anyhow::Result<Scratch> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = tmp.join(format!("proc-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let owner = StateLock::exclusive(dir.join("owner"))
        .with_context(|| format!("locking {}", dir.display()))?;
    Ok(Scratch { dir, _owner: owner })
}

/// Removes the scratch directories of processes that are gone, reaping their containers.
fn sweep_dead_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else {
        return;
    };
    let mut runc = None;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("proc-") {
            continue;
        }
        // Taking the owner lock succeeds only when its process is gone.
        let Ok(Some(_gone)) = StateLock::try_exclusive(dir.join("owner")) else {
            continue;
        };
        let runc = runc.get_or_insert_with(|| {
            crate::executor::Runc::new(&root.join("runc"), &root.join("tmp")).ok()
        });
        if let Some(runc) = runc {
            runc.reap_under(&dir);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `--root` if given, else the default; created if missing.
pub fn resolve_root(root: Option<&Path>) -> anyhow::Result<PathBuf> {
    let root = match root {
        Some(root) => root.to_path_buf(),
        None => default_root()?,
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating the state root {}", root.display()))?;
    Ok(root)
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
