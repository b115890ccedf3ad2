//! Snapshots: the filesystems build steps run in, and the layers they leave behind.
//!
//! Every layer lives once, unpacked in overlay form (whiteouts as 0/0 character devices, opaque
//! directories marked `trusted.overlay.opaque=y`), under `<root>/snapshots/layers/<name>/`
//! (see [`layers`] for the short names). A step gets an [`Active`] snapshot: a writable root over
//! its parent layers. Committing it turns its changes into a layer blob (through
//! [`write_layer`]) and keeps the changes, again in overlay form, as the new layer's directory,
//! so the next step stacks on it the same way whichever snapshotter made it.
//!
//! Two snapshotters:
//! - **overlay** ([`overlay`]): the parents are overlayfs lowerdirs, the step writes into an
//!   upperdir, and the upperdir *is* the diff.
//! - **native** ([`native`]): for filesystems without overlayfs. The parents are copied into a
//!   fresh directory; commit compares the tree with an index taken right after the copy.
//!
//! Both produce the same layer (same diffID) for the same operations on the same parents.
//!
//! On-disk layout under `<root>/snapshots/`:
//! - `layers/<name>/`, `layers/<name>.id` (the full diffID the name stands for);
//! - `active/<id>/`: one per live [`Active`] or [`View`], locked (`flock`) by its owner; `u`
//!   (upper), `w` (work), `m` (overlay mount point), `e` (a view's empty bottom lower) or `r`
//!   (native root; bind-mounted read-only for a view), `t` (native commit's tar), `clock`.
//!   [`Snapshots::open`] removes the ones whose owner is gone (a crash or `kill -9`);
//! - `empty/`: an empty lowerdir for scratch snapshots.
//!
//! Nothing stays mounted: every mount is undone when its [`Active`]/[`View`] is committed,
//! discarded or dropped, on every error path, and (through [`crate::interrupt`]) on Ctrl-C.

mod active;
pub mod layers;
pub mod native;
pub mod overlay;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rbuild_cache::layer::{
    write_layer, ApplyError, Change, ChangeSet, LayerInfo, LayerOptions, WriteError,
};
use rbuild_cache::Digest;

use active::ActiveDir;
use layers::LayerStore;

/// Which snapshotter to use (`--snapshotter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// Overlay if an overlay mount works on the state root's filesystem, else native.
    #[default]
    Auto,
    Overlay,
    Native,
}

impl SnapshotterKind {
    pub fn name(self) -> &'static str {
        match self {
            SnapshotterKind::Auto => "auto",
            SnapshotterKind::Overlay => "overlay",
            SnapshotterKind::Native => "native",
        }
    }
}

impl fmt::Display for SnapshotterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SnapshotterKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SnapshotterKind::Auto),
            "overlay" | "overlayfs" => Ok(SnapshotterKind::Overlay),
            "native" => Ok(SnapshotterKind::Native),
            _ => Err(format!(
                "unknown snapshotter {s:?} (expected auto, overlay or native)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the overlay snapshotter is not available here: {0} (use --snapshotter native)")]
    OverlayUnavailable(String),
    #[error("mounting an overlay at {target}: {source} (options: {options})")]
    Mount {
        target: PathBuf,
        options: String,
        source: io::Error,
    },
    #[error(
        "{layers} layers do not fit into overlayfs' mount options ({len} bytes; the kernel \
         takes at most {max}); squash the base image or use --snapshotter native"
    )]
    TooManyLayers {
        layers: usize,
        len: usize,
        max: usize,
    },
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
    #[error("unpacking layer {diff_id}: {source}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: ApplyError,
    },
    #[error("copying the parent layers into {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: ApplyError,
    },
    #[error("writing the layer: {0}")]
    Write(#[from] WriteError),
    #[error("layer directory {0} is not a snapshot layer directory")]
    NotALayer(PathBuf),
}

impl SnapshotError {
    pub(crate) fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> Self + 'p {
        move |source| SnapshotError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One layer, unpacked in overlay form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDir {
    pub diff_id: Digest,
    pub dir: PathBuf,
}

/// The snapshots of one state root.
pub struct Snapshots {
    inner: Arc<Inner>,
}

struct Inner {
    layers: LayerStore,
    active: PathBuf,
    /// An empty directory: the lowerdir of scratch snapshots.
    empty: PathBuf,
    kind: SnapshotterKind,
    note: Option<String>,
}

impl Snapshots {
    /// Opens (creating) `<state_root>/snapshots`, removes what crashed runs left behind, and
    /// resolves `kind`: `Auto` tries one overlay mount and falls back to native (see
    /// [`Snapshots::note`]); `Overlay` fails if that mount fails.
    pub fn open(state_root: &Path, kind: SnapshotterKind) -> Result<Snapshots, SnapshotError> {
        let dir = state_root.join("snapshots");
        let active = dir.join("active");
        let empty = dir.join("empty");
        for d in [&dir, &active, &empty] {
            std::fs::create_dir_all(d).map_err(SnapshotError::io("creating", d))?;
        }
        let layers = LayerStore::open(&dir.join("layers"))?;
        active::sweep(&active);
        layers.sweep();
        let (kind, note) = match kind {
            SnapshotterKind::Native => (SnapshotterKind::Native, None),
            SnapshotterKind::Overlay => {
                overlay::probe(&active, &empty).map_err(SnapshotError::OverlayUnavailable)?;
                (SnapshotterKind::Overlay, None)
            }
            SnapshotterKind::Auto => match overlay::probe(&active, &empty) {
                Ok(()) => (SnapshotterKind::Overlay, None),
                Err(why) => (
                    SnapshotterKind::Native,
                    Some(format!(
                        "overlayfs is not available under {} ({why}); using the native \
                         snapshotter, which copies every parent layer for each step",
                        dir.display()
                    )),
                ),
            },
        };
        Ok(Snapshots {
            inner: Arc::new(Inner {
                layers,
                active,
                empty,
                kind,
                note,
            }),
        })
    }

    /// The snapshotter in use (never `Auto`).
    pub fn kind(&self) -> SnapshotterKind {
        self.inner.kind
    }

    /// Why `Auto` fell back to native, for the caller to report (libraries do not print).
    pub fn note(&self) -> Option<&str> {
        self.inner.note.as_deref()
    }

    /// The layer's directory, unpacking `blob` (tar, gzip or zstd; its diffID verified) with
    /// overlay whiteouts if it is not there yet. Safe for concurrent callers, in one process or
    /// several: the extraction goes to a temporary directory renamed into place.
    pub fn layer_from_blob(
        &self,
        diff_id: &Digest,
        blob: impl io::Read,
    ) -> Result<LayerDir, SnapshotError> {
        self.inner.layers.unpack(diff_id, blob)
    }

    /// The layer's directory if it is unpacked.
    pub fn layer(&self, diff_id: &Digest) -> Option<LayerDir> {
        self.inner.layers.lookup(diff_id)
    }

    /// A writable root over `parents` (bottom first; empty = scratch).
    pub fn prepare(&self, parents: &[LayerDir]) -> Result<Active, SnapshotError> {
        let dir = ActiveDir::create(&self.inner.active)?;
        let (root, how) = match self.inner.kind {
            SnapshotterKind::Native => {
                let root = dir.path().join("r");
                native::populate(&root, parents)?;
                let index = native::Index::build(&root)?;
                native::wait_for_clock(&dir.path().join("clock"), index.newest_ctime())?;
                (root, How::Native { index })
            }
            _ => {
                let upper = dir.path().join("u");
                let work = dir.path().join("w");
                let merged = dir.path().join("m");
                for d in [&upper, &work, &merged] {
                    std::fs::create_dir(d).map_err(SnapshotError::io("creating", d))?;
                }
                copy_root_meta(parents, &upper)?;
                let mut lowers: Vec<&Path> =
                    parents.iter().rev().map(|l| l.dir.as_path()).collect();
                if lowers.is_empty() {
                    lowers.push(&self.inner.empty);
                }
                let data = overlay::options(&lowers, Some((&upper, &work)), &self.inner.layers)?;
                dir.mount_overlay(&merged, &data)?;
                let parents = parents.to_vec();
                (merged, How::Overlay { parents })
            }
        };
        Ok(Active {
            inner: self.inner.clone(),
            root,
            how,
            dir,
        })
    }

    /// A read-only merged view of `parents` (for `COPY --from` sources); unmounted on drop.
    /// Writing into it fails with EROFS.
    pub fn view(&self, parents: &[LayerDir]) -> Result<View, SnapshotError> {
        let dir = ActiveDir::create(&self.inner.active)?;
        let root = match self.inner.kind {
            SnapshotterKind::Native => {
                let root = dir.path().join("r");
                native::populate(&root, parents)?;
                dir.bind_read_only(&root)?;
                root
            }
            _ => {
                let merged = dir.path().join("m");
                let bottom = dir.path().join("e");
                for d in [&merged, &bottom] {
                    std::fs::create_dir(d).map_err(SnapshotError::io("creating", d))?;
                }
                copy_root_meta(parents, &bottom)?;
                // Overlay needs two lowers when there is no upper: an empty one at the bottom
                // (the view's own, so it never repeats another lower, which overlay refuses).
                let mut lowers: Vec<&Path> =
                    parents.iter().rev().map(|l| l.dir.as_path()).collect();
                lowers.push(&bottom);
                if lowers.len() < 2 {
                    lowers.push(&self.inner.empty);
                }
                let data = overlay::options(&lowers, None, &self.inner.layers)?;
                dir.mount_overlay(&merged, &data)?;
                merged
            }
        };
        Ok(View { root, _dir: dir })
    }
}

/// Gives a new snapshot's root directory the owner and mode of the top parent's root (as
/// containerd does), so the merged root looks like the parents' and not like a fresh dir.
fn copy_root_meta(parents: &[LayerDir], dir: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let Some(top) = parents.last() else {
        return Ok(());
    };
    let st = std::fs::symlink_metadata(&top.dir).map_err(SnapshotError::io("reading", &top.dir))?;
    rustix::fs::chown(
        dir,
        Some(rustix::fs::Uid::from_raw(st.uid())),
        Some(rustix::fs::Gid::from_raw(st.gid())),
    )
    .map_err(|e| SnapshotError::io("chown", dir)(e.into()))?;
    rustix::fs::chmod(dir, rustix::fs::Mode::from_raw_mode(st.mode() & 0o7777))
        .map_err(|e| SnapshotError::io("chmod", dir)(e.into()))
}

enum How {
    Overlay { parents: Vec<LayerDir> },
    Native { index: native::Index },
}

/// Leaves out a directory that only overlay's copy-up (or a mount stub made and removed)
/// touched — same mode and owner as below, nothing changed inside — as BuildKit's differ
/// does (containerd's `sameDirent`), so `RUN true` makes an empty layer and RUN layers do not
/// carry `etc/`. A dropped directory is also removed from an overlay upper dir (it is empty
/// there), so the layer dir stays what the layer says.
fn without_untouched_dirs(
    changes: ChangeSet,
    below: impl Fn(&str) -> Option<(u32, u32, u32)>,
    prune_upper: bool,
) -> Result<ChangeSet, SnapshotError> {
    let all: Vec<Change> = changes.iter().cloned().collect();
    let opaque: std::collections::HashSet<&str> = all
        .iter()
        .filter(|c| matches!(c, Change::Opaque { .. }))
        .map(|c| c.path())
        .collect();
    let mut kept = Vec::with_capacity(all.len());
    for (i, change) in all.iter().enumerate() {
        if let Change::Add { path, source } = change {
            // Layer order is depth-first: anything inside `path` comes right after it.
            let prefix = format!("{path}/");
            let has_inside = all
                .get(i + 1)
                .is_some_and(|c| c.path().starts_with(&prefix));
            let untouched = !opaque.contains(path.as_str())
                && !has_inside
                && same_dir_as_below(source, below(path));
            if untouched {
                if prune_upper {
                    std::fs::remove_dir(source).map_err(SnapshotError::io("removing", source))?;
                }
                continue;
            }
        }
        kept.push(change.clone());
    }
    Ok(ChangeSet::new(kept)?)
}

/// Whether `dir` is a directory with `below`'s mode and owner.
fn same_dir_as_below(dir: &Path, below: Option<(u32, u32, u32)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(below), Ok(meta)) = (below, std::fs::symlink_metadata(dir)) else {
        return false;
    };
    meta.is_dir() && (meta.mode() & 0o7777, meta.uid(), meta.gid()) == below
}

/// The (mode, uid, gid) of directory `rel` in the topmost parent layer that has it; `None`
/// when the topmost mention is a whiteout or not a directory, or no layer has it.
fn lower_dir(parents: &[LayerDir], rel: &str) -> Option<(u32, u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for layer in parents.iter().rev() {
        let Ok(meta) = std::fs::symlink_metadata(layer.dir.join(rel)) else {
            continue;
        };
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            return None;
        }
        return meta
            .is_dir()
            .then_some((meta.mode() & 0o7777, meta.uid(), meta.gid()));
    }
    None
}

/// A writable snapshot. Dropping it discards it (unmount, remove), as [`Active::discard`].
pub struct Active {
    inner: Arc<Inner>,
    root: PathBuf,
    how: How,
    // Last: its drop unmounts and removes everything above.
    dir: ActiveDir,
}

impl Active {
    /// The merged, writable directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Unmounts, writes the changes as a layer (tar through [`write_layer`], compressed per
    /// `opts`) into `out`, and keeps them as the new layer's directory: the upperdir moved to
    /// `snapshots/layers/` (overlay), or the written tar unpacked there (native); if a layer
    /// with that diffID exists already, it is reused and this snapshot's copy removed.
    pub fn commit(
        self,
        out: impl Write,
        opts: &LayerOptions,
    ) -> Result<(LayerInfo, LayerDir), SnapshotError> {
        let Active {
            inner,
            root,
            how,
            dir,
        } = self;
        match how {
            How::Overlay { parents } => {
                dir.unmount(&root)?;
                let upper = dir.path().join("u");
                let changes = ChangeSet::from_overlay_upper(&upper)?;
                let changes =
                    without_untouched_dirs(changes, |rel| lower_dir(&parents, rel), true)?;
                let info = write_layer(&changes, out, opts)?;
                let layer = inner.layers.adopt(&info.diff_id, &upper)?;
                Ok((info, layer))
            }
            How::Native { index } => {
                let changes = native::changes(&root, &index)?;
                let changes = without_untouched_dirs(
                    changes,
                    |rel| index.dir_owner_mode(Path::new(rel)),
                    false,
                )?;
                let tar = dir.path().join("t");
                let info = native::write(&changes, &tar, out, opts)?;
                let layer = match inner.layers.lookup(&info.diff_id) {
                    Some(layer) => layer,
                    None => {
                        let file = std::fs::File::open(&tar)
                            .map_err(SnapshotError::io("opening", &tar))?;
                        inner.layers.unpack(
                            &info.diff_id,
                            io::BufReader::with_capacity(256 * 1024, file),
                        )?
                    }
                };
                Ok((info, layer))
            }
        }
    }

    /// Unmounts and removes the snapshot.
    pub fn discard(self) -> Result<(), SnapshotError> {
        self.dir.remove()
    }
}

/// A read-only merged view of some layers; unmounted and removed on drop.
pub struct View {
    root: PathBuf,
    _dir: ActiveDir,
}

impl View {
    pub fn root(&self) -> &Path {
        &self.root
    }
}
