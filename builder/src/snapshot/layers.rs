//! Layer directories: `snapshots/layers/<name>/`, one per diffID, in overlay form.
//!
//! `<name>` is the first 12 hex digits of the diffID: short, because every lowerdir goes into
//! one mount option string limited to a page (see [`super::overlay`]). `<name>.id` holds the
//! full diffID the name stands for and is written (atomically, without replacing) *before*
//! the directory: a name whose `.id` names another diffID is a collision, and that diffID
//! takes the next longer prefix (20, 32, then all 64 digits). A `.id` without its directory
//! (a crash between the two) just means the layer is not unpacked yet.
//!
//! Directories appear only by an atomic rename (`RENAME_NOREPLACE`) of a complete tree, so a
//! directory under its final name is always whole, and concurrent unpackers of one layer —
//! threads or processes — all succeed with the one that won the rename.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rbuild_cache::layer::safe_path::remove_all_at;
use rbuild_cache::layer::{unpack_layer, ApplyError, ApplyOptions, WhiteoutMode};
use rbuild_cache::Digest;
use rustix::fs::{Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

use super::{LayerDir, SnapshotError};

/// Name lengths tried in turn (hex digits of the diffID).
const NAME_LENS: [usize; 4] = [12, 20, 32, 64];

/// Marks temporary names (`.<name>…rbuild-tmp-<pid>-<n>`), removed by [`LayerStore::sweep`]
/// once their process is gone. `unpack_layer` names its temp dirs this way too.
const TMP_MARK: &str = ".rbuild-tmp-";

pub(crate) struct LayerStore {
    dir: PathBuf,
    /// `O_PATH` descriptor of `dir`, for short `/proc/self/fd/N/<name>` lowerdir paths.
    fd: OwnedFd,
}

impl LayerStore {
    pub(crate) fn open(dir: &Path) -> Result<LayerStore, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(SnapshotError::io("creating", dir))?;
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SnapshotError::io("opening", dir)(e.into()))?;
        Ok(LayerStore {
            dir: dir.to_path_buf(),
            fd,
        })
    }

    /// `/proc/self/fd/<fd>/<name>` for a layer directory of this store; `None` for any other
    /// path.
    pub(crate) fn fd_path(&self, dir: &Path) -> Option<String> {
        let name = dir.file_name()?.to_str()?;
        let ours = dir.parent() == Some(self.dir.as_path())
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_hexdigit());
        ours.then(|| format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd()))
    }

    pub(crate) fn lookup(&self, diff_id: &Digest) -> Option<LayerDir> {
        let hex = diff_id.hex();
        for len in NAME_LENS {
            let name = &hex[..len];
            match std::fs::read_to_string(self.dir.join(format!("{name}.id"))) {
                Ok(id) if id.trim() == diff_id.to_string() => {
                    let dir = self.dir.join(name);
                    return dir.is_dir().then_some(LayerDir {
                        diff_id: *diff_id,
                        dir,
                    });
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// The directory `diff_id`'s layer lives at (existing or not), its name claimed.
    fn claim(&self, diff_id: &Digest) -> Result<PathBuf, SnapshotError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let hex = diff_id.hex();
        let want = diff_id.to_string();
        for len in NAME_LENS {
            let name = &hex[..len];
            let id_path = self.dir.join(format!("{name}.id"));
            let existing = match std::fs::read_to_string(&id_path) {
                Ok(id) => Some(id),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                    let tmp = self
                        .dir
                        .join(format!(".{name}.id{TMP_MARK}{}-{n}", std::process::id()));
                    write_synced(&tmp, format!("{want}\n").as_bytes())
                        .map_err(SnapshotError::io("writing", &tmp))?;
                    let renamed =
                        rustix::fs::renameat_with(CWD, &tmp, CWD, &id_path, RenameFlags::NOREPLACE);
                    match renamed {
                        Ok(()) => None,
                        Err(Errno::EXIST) => {
                            let _ = std::fs::remove_file(&tmp);
                            Some(
                                std::fs::read_to_string(&id_path)
                                    .map_err(SnapshotError::io("reading", &id_path))?,
                            )
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(SnapshotError::io("creating", &id_path)(e.into()));
                        }
                    }
                }
                Err(e) => return Err(SnapshotError::io("reading", &id_path)(e)),
            };
            match existing {
                None => return Ok(self.dir.join(name)),
                Some(id) if id.trim() == want => return Ok(self.dir.join(name)),
                Some(_) => continue,
            }
        }
        Err(SnapshotError::io("claiming a layer name in", &self.dir)(
            io::Error::other(format!("{want}: every name is taken by another diffID")),
        ))
    }

    /// The layer's directory, unpacking `blob` (diffID verified) if it is not there yet.
    pub(crate) fn unpack(
        &self,
        diff_id: &Digest,
        blob: impl Read,
    ) -> Result<LayerDir, SnapshotError> {
        if let Some(layer) = self.lookup(diff_id) {
            return Ok(layer);
        }
        let dest = self.claim(diff_id)?;
        let opts = ApplyOptions::for_current_user(WhiteoutMode::Overlay);
        match unpack_layer(blob, &dest, &opts, Some(diff_id)) {
            // DestExists: another caller finished first; the name is claimed for this
            // diffID and that caller verified it too.
            Ok(_) | Err(ApplyError::DestExists(_)) => Ok(LayerDir {
                diff_id: *diff_id,
                dir: dest,
            }),
            Err(source) => Err(SnapshotError::Unpack {
                diff_id: *diff_id,
                source,
            }),
        }
    }

    /// Moves `src` (a complete overlay-form tree of `diff_id`'s layer) into the store; if the
    /// layer is there already, `src` is left where it is for its owner to remove.
    pub(crate) fn adopt(&self, diff_id: &Digest, src: &Path) -> Result<LayerDir, SnapshotError> {
        let layer = |dir| LayerDir {
            diff_id: *diff_id,
            dir,
        };
        if let Some(existing) = self.lookup(diff_id) {
            return Ok(existing);
        }
        let dest = self.claim(diff_id)?;
        // Durable before it is visible under its final name (one syncfs, not an fsync per file).
        let fd = rustix::fs::open(src, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| SnapshotError::io("opening", src)(e.into()))?;
        rustix::fs::syncfs(&fd).map_err(|e| SnapshotError::io("syncing", src)(e.into()))?;
        match rustix::fs::renameat_with(CWD, src, CWD, &dest, RenameFlags::NOREPLACE) {
            Ok(()) => {
                if let Ok(d) = rustix::fs::open(&self.dir, OFlags::RDONLY, Mode::empty()) {
                    let _ = rustix::fs::fsync(d);
                }
                Ok(layer(dest))
            }
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => Ok(layer(dest)),
            Err(e) => Err(SnapshotError::io("moving the layer to", &dest)(e.into())),
        }
    }

    /// Every unpacked layer, by the full diffID its `<name>.id` names. A directory without a
    /// readable `.id` is left out: nothing can say which layer it is.
    pub(crate) fn list(&self) -> Result<Vec<LayerDir>, SnapshotError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(SnapshotError::io("reading", &self.dir))?;
        let mut layers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(SnapshotError::io("reading", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let id = std::fs::read_to_string(self.dir.join(format!("{name}.id")));
            let Some(diff_id) = id.ok().and_then(|id| id.trim().parse::<Digest>().ok()) else {
                continue;
            };
            // A name the `.id` does not extend is not this layer's (a damaged store).
            if diff_id.hex().starts_with(name) {
                layers.push(LayerDir {
                    diff_id,
                    dir: entry.path(),
                });
            }
        }
        Ok(layers)
    }

    /// Removes a layer directory, then its `.id`. The directory is first renamed to a temporary
    /// name, so a crash halfway leaves no partial tree under the layer's name (the next
    /// [`LayerStore::sweep`] finishes the job) and a `.id` alone only means "not unpacked".
    /// Callers hold the state root exclusively: no build may be stacking on the layer.
    pub(crate) fn remove(&self, layer: &LayerDir) -> Result<(), SnapshotError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let Some(name) = layer.dir.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let doomed = format!(".{name}{TMP_MARK}{}-{n}", std::process::id());
        std::fs::rename(&layer.dir, self.dir.join(&doomed))
            .map_err(SnapshotError::io("moving aside", &layer.dir))?;
        let dir = rustix::fs::open(&self.dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| SnapshotError::io("opening", &self.dir)(e.into()))?;
        remove_all_at(dir.as_fd(), OsStr::new(&doomed))
            .map_err(|e| SnapshotError::io("removing", &self.dir.join(&doomed))(e.into()))?;
        let id = self.dir.join(format!("{name}.id"));
        match std::fs::remove_file(&id) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(SnapshotError::io("removing", &id)(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes temporary files and directories of processes that no longer exist.
    pub(crate) fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((_, rest)) = name.split_once(TMP_MARK) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::File::create_new(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
