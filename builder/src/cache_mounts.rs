//! `RUN --mount=type=cache`: directories that persist across builds in the state root
//! (`cache-mounts/`), bound into RUN steps and never part of a layer or a cache key.
//!
//! Each cache id (the mount's `id`, else its target, as BuildKit) has instances
//! `cache-mounts/<hash>-<n>/`, each with a `data/` directory (what the step sees) and a `lock`
//! file. `sharing=shared` (the default) holds instance 0 with a shared `flock`, so any number
//! of steps use it at once; `locked` holds it exclusively, so steps take turns; `private`
//! takes the first instance no one holds, making a new one when all are held. The lock is
//! across processes, so two builds on one root share caches the same way.
//!
//! A new instance starts empty (owned by `uid:gid`, mode `mode`), or with the `source` of the
//! mount's `from` stage, or with what an imported cache holds for the id.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rbuild_cache::Digest;
use rbuild_frontend::instructions::CacheSharing;
use rustix::fs::FlockOperation;

/// The cache mounts of one state root.
pub struct CacheMounts {
    dir: PathBuf,
}

/// An instance held for one step: unlocked when dropped.
pub struct HeldCacheMount {
    pub data: PathBuf,
    /// Whether the instance was made for this step (nothing was in it).
    pub fresh: bool,
    _lock: File,
}

/// How a new instance is filled.
pub trait Seed {
    /// Fills `data` (an empty directory) for a fresh instance.
    fn seed(&self, data: &Path) -> anyhow::Result<()>;
}

impl CacheMounts {
    pub fn new(state_root: &Path) -> CacheMounts {
        CacheMounts {
            dir: state_root.join("cache-mounts"),
        }
    }

    /// The directory name of id `id`'s instances.
    fn name(id: &str) -> String {
        Digest::of(id.as_bytes()).hex()[..32].to_string()
    }

    /// Every instance directory (for `du` and `prune --all`).
    pub fn instances(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        dirs
    }

    /// `id`'s first instance, held shared (no `locked` step writes it meanwhile), if there
    /// is one: what an export packs.
    pub fn existing(&self, id: &str) -> anyhow::Result<Option<HeldCacheMount>> {
        let instance = self.dir.join(format!("{}-0", Self::name(id)));
        let data = instance.join("data");
        if !data.is_dir() {
            return Ok(None);
        }
        let lock_path = instance.join("lock");
        let lock = open_lock(&lock_path)?;
        flock(&lock, FlockOperation::LockShared, &lock_path)?;
        Ok(Some(HeldCacheMount {
            data,
            fresh: false,
            _lock: lock,
        }))
    }

    /// An instance of `id` held as `sharing` asks, made (and seeded) first if need be. Blocks
    /// while another holder excludes it (`locked`).
    pub fn acquire(
        &self,
        id: &str,
        sharing: CacheSharing,
        owner: (u32, u32),
        mode: u32,
        seed: &dyn Seed,
    ) -> anyhow::Result<HeldCacheMount> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let name = Self::name(id);
        let mut n = 0;
        loop {
            let instance = self.dir.join(format!("{name}-{n}"));
            std::fs::create_dir_all(&instance)
                .with_context(|| format!("creating {}", instance.display()))?;
            let lock_path = instance.join("lock");
            let lock = open_lock(&lock_path)?;
            match sharing {
                CacheSharing::Private => {
                    let taken =
                        rustix::fs::flock(lock.as_fd(), FlockOperation::NonBlockingLockExclusive);
                    if taken.is_err() {
                        n += 1;
                        continue;
                    }
                }
                CacheSharing::Shared => flock(&lock, FlockOperation::LockShared, &lock_path)?,
                CacheSharing::Locked => flock(&lock, FlockOperation::LockExclusive, &lock_path)?,
            }
            // Made once, by whichever holder comes first; the others wait for it.
            let making_path = instance.join("making.lock");
            let making = open_lock(&making_path)?;
            flock(&making, FlockOperation::LockExclusive, &making_path)?;
            let data = instance.join("data");
            let fresh = !data.is_dir();
            if fresh {
                make_instance(&instance, &data, owner, mode, seed)
                    .with_context(|| format!("making the cache mount {id:?}"))?;
            }
            drop(making);
            return Ok(HeldCacheMount {
                data,
                fresh,
                _lock: lock,
            });
        }
    }
}

fn open_lock(path: &Path) -> anyhow::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes the lock, waiting for its holder — but not past a cancelled build (another step
/// failed, or a signal came).
fn flock(file: &File, op: FlockOperation, path: &Path) -> anyhow::Result<()> {
    let try_op = match op {
        FlockOperation::LockShared => FlockOperation::NonBlockingLockShared,
        FlockOperation::LockExclusive => FlockOperation::NonBlockingLockExclusive,
        other => other,
    };
    loop {
        match rustix::fs::flock(file.as_fd(), try_op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                if crate::interrupt::stopping() {
                    anyhow::bail!("interrupted while waiting for {}", path.display());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// Makes `data` in a temporary directory renamed into place, so an interrupted seed leaves
/// no half-filled cache.
fn make_instance(
    instance: &Path,
    data: &Path,
    owner: (u32, u32),
    mode: u32,
    seed: &dyn Seed,
) -> anyhow::Result<()> {
    let temp = instance.join("data.new");
    if temp.exists() {
        std::fs::remove_dir_all(&temp).with_context(|| format!("removing {}", temp.display()))?;
    }
    std::fs::create_dir(&temp).with_context(|| format!("creating {}", temp.display()))?;
    seed.seed(&temp)?;
    std::os::unix::fs::chown(&temp, Some(owner.0), Some(owner.1))
        .with_context(|| format!("chown {}", temp.display()))?;
    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("chmod {}", temp.display()))?;
    std::fs::rename(&temp, data).with_context(|| format!("renaming into {}", data.display()))
}

/// A new instance starts empty.
pub struct Empty;

impl Seed for Empty {
    fn seed(&self, _data: &Path) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A new instance starts with a copy of a directory tree (the `source` of the mount's `from`).
pub struct CopyOf<'a>(pub &'a Path);

impl Seed for CopyOf<'_> {
    fn seed(&self, data: &Path) -> anyhow::Result<()> {
        copy_tree(self.0, data)
    }
}

/// Copies the tree under `from` into `to` (an existing directory), owners, modes and times
/// kept: through the layer writer and extractor, as the copying snapshotter does.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    use rbuild_cache::layer::{
        apply_layer, write_layer, ApplyOptions, ChangeSet, Compression, LayerOptions, WhiteoutMode,
    };
    let changes = ChangeSet::from_overlay_upper(from)
        .with_context(|| format!("reading {}", from.display()))?;
    let tar = LayerOptions {
        compression: Compression::None,
        threads: 1,
        source_date_epoch: None,
    };
    let apply = ApplyOptions::for_current_user(WhiteoutMode::Apply);
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    let (applied, written) = std::thread::scope(|s| {
        let writing = s.spawn(|| write_layer(&changes, writer, &tar));
        let applied = apply_layer(reader, to, &apply, None);
        (applied, writing.join())
    });
    match written {
        Ok(result) => {
            result.with_context(|| format!("reading {}", from.display()))?;
        }
        Err(_) => anyhow::bail!("copying {}: the reader panicked", from.display()),
    }
    applied.with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_instances_are_one_directory_and_private_ones_are_not() {
        let root = tempfile::TempDir::new().unwrap();
        let mounts = CacheMounts::new(root.path());
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let a = mounts
            .acquire("go-build", CacheSharing::Shared, me, 0o755, &Empty)
            .unwrap();
        assert!(a.fresh);
        std::fs::write(a.data.join("kept"), "1").unwrap();
        let b = mounts
            .acquire("go-build", CacheSharing::Shared, me, 0o755, &Empty)
            .unwrap();
        assert_eq!(a.data, b.data);
        assert!(!b.fresh);
        drop((a, b));
        let p1 = mounts
            .acquire("go-build", CacheSharing::Private, me, 0o755, &Empty)
            .unwrap();
        let p2 = mounts
            .acquire("go-build", CacheSharing::Private, me, 0o755, &Empty)
            .unwrap();
        assert_ne!(p1.data, p2.data);
        assert!(
            p1.data.join("kept").is_file(),
            "the first free instance is the old one"
        );
        assert!(p2.fresh);
        drop((p1, p2));
        let existing = mounts.existing("go-build").unwrap().unwrap();
        assert!(existing.data.join("kept").is_file());
        assert!(mounts.existing("other").unwrap().is_none());
    }

    #[test]
    fn a_locked_instance_waits_for_its_holder() {
        let root = tempfile::TempDir::new().unwrap();
        let mounts = std::sync::Arc::new(CacheMounts::new(root.path()));
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let held = mounts
            .acquire("apt", CacheSharing::Locked, me, 0o755, &Empty)
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn({
            let mounts = mounts.clone();
            move || {
                let second = mounts
                    .acquire("apt", CacheSharing::Locked, me, 0o755, &Empty)
                    .unwrap();
                tx.send(()).unwrap();
                drop(second);
            }
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(held);
        rx.recv().unwrap();
        other.join().unwrap();
    }
}
