//! The native snapshotter, for filesystems without overlayfs: copy the parents, remember what
//! was copied, and diff against that at commit.
//!
//! **Copy.** Each parent layer directory (overlay form) is streamed as a tar
//! ([`ChangeSet::from_overlay_upper`] → [`write_layer`], uncompressed, through a pipe) into
//! [`apply_layer`] with OCI whiteout semantics, bottom layer first. That reuses the layer code's
//! handling of owners, modes, mtimes, xattrs, hardlinks, symlinks, devices, whiteouts (delete)
//! and opaque directories (clear the lower contents), and its path safety.
//!
//! **Change detection.** Right after the copy, [`Index::build`] records for every path the
//! inode's identity (inode number and birth time) and its change time (ctime), plus type,
//! mode, owner, size, mtime and rdev. ctime cannot be set from user space and every change to
//! an inode — data, mode, owner, xattrs, link count, rename, `touch -d` — moves it to "now";
//! a new file at a path has another identity. One trap remains: timestamps are coarse (a
//! clock tick), so a change right after the copy could get the very ctime the copy left.
//! [`wait_for_clock`] therefore waits (a few ms at most) until the filesystem's clock has
//! moved past the newest ctime in the index before the step may run.
//!
//! **Diff** ([`changes`]), giving what an overlay upperdir would hold for the same operations,
//! so both snapshotters produce the same diffID:
//! - a path not in the index → added, with everything below it;
//! - a path whose type changed, or a directory with another identity (removed and made
//!   again) → added; a directory that replaces something is also opaque (overlayfs marks a
//!   directory created over a whiteout opaque), and everything below it is added;
//! - same identity, any stamp differs → added (directories: then compared below);
//! - in the index, not on disk → one deletion (nothing below it is listed);
//! - every ancestor of a change is added too (overlayfs copies parents up).
//!
//! **Commit.** The change set is written once as an uncompressed tar to a temporary file
//! (hashing it: the diffID), compressed from there into the caller's writer, and the same tar
//! is unpacked with overlay whiteouts as the new layer's directory, so later steps stack on it
//! as on any other layer.
//!
//! Known difference from overlay: with `index=off` overlay breaks a hardlink when one of its
//! paths is copied up; the native copy keeps it, so changing one path changes (and adds)
//! every path of the inode.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rbuild_cache::layer::{
    apply_layer, compress_layer, write_layer, ApplyOptions, Change, ChangeSet, Compression,
    LayerInfo, LayerOptions, WhiteoutMode, WriteError,
};
use rustix::fs::{AtFlags, FileType, StatxFlags, CWD};

use super::{copy_root_meta, LayerDir, SnapshotError};

/// Creates `root` holding the merged contents of `parents` (bottom first).
pub(crate) fn populate(root: &Path, parents: &[LayerDir]) -> Result<(), SnapshotError> {
    std::fs::create_dir(root).map_err(SnapshotError::io("creating", root))?;
    copy_root_meta(parents, root)?;
    let apply = ApplyOptions::for_current_user(WhiteoutMode::Apply);
    let tar = LayerOptions {
        compression: Compression::None,
        threads: 1,
        source_date_epoch: None,
    };
    for layer in parents {
        let changes = ChangeSet::from_overlay_upper(&layer.dir)?;
        let (reader, writer) =
            io::pipe().map_err(SnapshotError::io("creating a pipe for", root))?;
        let (applied, written) = std::thread::scope(|s| {
            let writing = s.spawn(|| write_layer(&changes, writer, &tar));
            // Returning drops the reader, so a writer whose reader gave up fails (EPIPE).
            let applied = apply_layer(reader, root, &apply, None);
            let written = writing.join().unwrap_or_else(|_| {
                Err(WriteError::Output(io::Error::other(
                    "layer writer panicked",
                )))
            });
            (applied, written)
        });
        // The writer's error explains a reader's "truncated" better than the reverse.
        written?;
        applied.map_err(|source| SnapshotError::Copy {
            path: layer.dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// What the index remembers of one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    btime: (i64, u32),
    ctime: (i64, u32),
    mtime: (i64, u32),
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: (u32, u32),
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Stamp> {
        let st = rustix::fs::statx(
            CWD,
            path,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )?;
        let btime = if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::BTIME) {
            (st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
        } else {
            (0, 0)
        };
        Ok(Stamp {
            ino: st.stx_ino,
            btime,
            ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec),
            mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
            mode: st.stx_mode.into(),
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            rdev: (st.stx_rdev_major, st.stx_rdev_minor),
        })
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// The same inode (not a new one at the same path).
    fn same_identity(&self, other: &Stamp) -> bool {
        self.ino == other.ino && self.btime == other.btime
    }
}

struct Entry {
    stamp: Stamp,
    /// A directory's entries.
    children: Vec<OsString>,
}

/// The state of a native snapshot right after its parents were copied in.
pub struct Index {
    /// By path relative to the root; the root itself is "".
    entries: HashMap<PathBuf, Entry>,
    newest_ctime: (i64, u32),
}

impl Index {
    /// A directory's (mode, uid, gid) as it was before the step, if it was a directory.
    pub(crate) fn dir_owner_mode(&self, rel: &Path) -> Option<(u32, u32, u32)> {
        let entry = self.entries.get(rel)?;
        entry.stamp.is_dir().then_some((
            entry.stamp.mode & 0o7777,
            entry.stamp.uid,
            entry.stamp.gid,
        ))
    }

    pub(crate) fn build(root: &Path) -> Result<Index, SnapshotError> {
        let mut index = Index {
            entries: HashMap::new(),
            newest_ctime: (0, 0),
        };
        index.add(root, PathBuf::new())?;
        Ok(index)
    }

    fn add(&mut self, root: &Path, rel: PathBuf) -> Result<(), SnapshotError> {
        let path = root.join(&rel);
        let stamp = Stamp::of(&path).map_err(SnapshotError::io("indexing", &path))?;
        self.newest_ctime = self.newest_ctime.max(stamp.ctime);
        let children = if stamp.is_dir() {
            read_names(&path)?
        } else {
            Vec::new()
        };
        for child in &children {
            self.add(root, rel.join(child))?;
        }
        self.entries.insert(rel, Entry { stamp, children });
        Ok(())
    }

    pub(crate) fn newest_ctime(&self) -> (i64, u32) {
        self.newest_ctime
    }
}

fn read_names(dir: &Path) -> Result<Vec<OsString>, SnapshotError> {
    let err = SnapshotError::io("reading", dir);
    std::fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(err)
}

/// Waits until a file changed now gets a ctime later than `newest` (see the module docs).
/// `probe` is a scratch file outside the snapshot's root, removed afterwards.
pub(crate) fn wait_for_clock(probe: &Path, newest: (i64, u32)) -> Result<(), SnapshotError> {
    let err = SnapshotError::io("probing the filesystem clock with", probe);
    let file = File::create(probe).map_err(err)?;
    // Bounded: a clock that does not move within 2 s is not worth blocking the build on.
    for _ in 0..2000 {
        file.set_modified(std::time::SystemTime::now())
            .map_err(SnapshotError::io(
                "probing the filesystem clock with",
                probe,
            ))?;
        let now = Stamp::of(probe).map_err(SnapshotError::io("probing", probe))?;
        if now.ctime > newest {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(file);
    std::fs::remove_file(probe).map_err(SnapshotError::io("removing", probe))
}

/// The changes under `root` since `index` was taken, as an overlay upperdir would hold them.
pub(crate) fn changes(root: &Path, index: &Index) -> Result<ChangeSet, SnapshotError> {
    let mut differ = Differ {
        root,
        index,
        out: Vec::new(),
    };
    differ.dir(Path::new(""))?;
    let mut changes = differ.out;
    // Ancestors of every change, as overlayfs copies them up.
    let mut seen: HashSet<String> = changes.iter().map(|c| c.path().to_string()).collect();
    let mut parents = Vec::new();
    for change in &changes {
        let mut path = change.path();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if seen.insert(parent.to_string()) {
                parents.push(Change::Add {
                    path: parent.to_string(),
                    source: root.join(parent),
                });
            }
            path = parent;
        }
    }
    changes.extend(parents);
    Ok(ChangeSet::new(changes)?)
}

struct Differ<'a> {
    root: &'a Path,
    index: &'a Index,
    out: Vec<Change>,
}

impl Differ<'_> {
    /// Compares the directory at `rel`, which has the same identity as in the index.
    fn dir(&mut self, rel: &Path) -> Result<(), SnapshotError> {
        let names = read_names(&self.root.join(rel))?;
        for name in &names {
            let rel = rel.join(name);
            let source = self.root.join(&rel);
            let now = Stamp::of(&source).map_err(SnapshotError::io("reading", &source))?;
            match self.index.entries.get(&rel) {
                None => self.tree(&rel, now, false)?,
                Some(before)
                    if before.stamp.file_type() != now.file_type()
                        || (now.is_dir() && !before.stamp.same_identity(&now)) =>
                {
                    self.tree(&rel, now, now.is_dir())?
                }
                Some(before) => {
                    if before.stamp != now {
                        self.add(&rel)?;
                    }
                    if now.is_dir() {
                        self.dir(&rel)?;
                    }
                }
            }
        }
        if let Some(before) = self.index.entries.get(rel) {
            let names: HashSet<&OsString> = names.iter().collect();
            for gone in before.children.iter().filter(|c| !names.contains(c)) {
                let path = layer_path(&rel.join(gone))?;
                self.out.push(Change::Delete { path });
            }
        }
        Ok(())
    }

    /// Adds `rel` and everything below it; `opaque`: it hides what the parents had there.
    fn tree(&mut self, rel: &Path, stamp: Stamp, opaque: bool) -> Result<(), SnapshotError> {
        self.add(rel)?;
        if opaque {
            self.out.push(Change::Opaque {
                path: layer_path(rel)?,
            });
        }
        if stamp.is_dir() {
            for name in read_names(&self.root.join(rel))? {
                let rel = rel.join(name);
                let source = self.root.join(&rel);
                let stamp = Stamp::of(&source).map_err(SnapshotError::io("reading", &source))?;
                self.tree(&rel, stamp, false)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, rel: &Path) -> Result<(), SnapshotError> {
        self.out.push(Change::Add {
            path: layer_path(rel)?,
            source: self.root.join(rel),
        });
        Ok(())
    }
}

fn layer_path(rel: &Path) -> Result<String, SnapshotError> {
    rel.to_str()
        .map(str::to_string)
        .ok_or_else(|| SnapshotError::Write(WriteError::NonUtf8Name { path: rel.into() }))
}

/// Writes `changes` as an uncompressed tar to `tar` (a new file), then compresses that into
/// `out` per `opts`. The tar stays for the caller to unpack as the layer's directory.
pub(crate) fn write(
    changes: &ChangeSet,
    tar: &Path,
    out: impl Write,
    opts: &LayerOptions,
) -> Result<LayerInfo, SnapshotError> {
    let file = File::create_new(tar).map_err(SnapshotError::io("creating", tar))?;
    let raw = LayerOptions {
        compression: Compression::None,
        threads: 1,
        source_date_epoch: opts.source_date_epoch,
    };
    let written = write_layer(changes, BufWriter::with_capacity(256 * 1024, file), &raw)?;
    let file = File::open(tar).map_err(SnapshotError::io("opening", tar))?;
    let info = compress_layer(
        BufReader::with_capacity(256 * 1024, file),
        out,
        opts.compression,
        opts.threads,
    )?;
    debug_assert_eq!(info.diff_id, written.diff_id);
    Ok(info)
}
