//! What goes into a layer: additions, deletions (whiteouts) and opaque directories, in the
//! order the tar lists them.
//!
//! Layer order: paths compare component by component, bytewise, so the walk is depth-first
//! with a parent before its children and `a` with everything under it before `a.b`. A
//! deletion sits where the name it deletes would sort (containerd does the same), so its
//! `.wh.<name>` is in name order among its siblings. An opaque marker comes right after its
//! directory's own entry and before the directory's new children: appliers work in order, and
//! must hide the lower contents before adding the new ones.

use std::cmp::Ordering;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::writer::{xattrs_unsupported, WriteError};

/// One change a layer makes to the layers below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add or replace `path` (relative, '/'-separated, no leading '/' or './') with what is at
    /// `source` on disk (lstat: file, dir, symlink, hardlink, char/block device, fifo; xattrs
    /// read too).
    Add { path: String, source: PathBuf },
    /// Delete `path` from lower layers → `<dir>/.wh.<name>`.
    Delete { path: String },
    /// `path` is a directory whose lower contents are hidden → `<path>/.wh..wh..opq` (the
    /// directory itself must be an [`Change::Add`] too).
    Opaque { path: String },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Add { path, .. } | Change::Delete { path } | Change::Opaque { path } => path,
        }
    }

    /// Sort key after the path: an opaque marker follows its directory's own entry.
    fn rank(&self) -> u8 {
        match self {
            Change::Add { .. } | Change::Delete { .. } => 0,
            Change::Opaque { .. } => 1,
        }
    }
}

/// Layer order of two changes (see the module docs).
fn layer_order(a: &Change, b: &Change) -> Ordering {
    a.path()
        .split('/')
        .cmp(b.path().split('/'))
        .then(a.rank().cmp(&b.rank()))
}

/// Validated changes in layer order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    changes: Vec<Change>,
}

impl ChangeSet {
    /// Validates every path and sorts the changes into layer order. Rejects a path changed
    /// twice, a deleted path that is also added (or has additions below it: that is what
    /// [`Change::Opaque`] is for), and an opaque marker without its directory.
    pub fn new(mut changes: Vec<Change>) -> Result<ChangeSet, WriteError> {
        for change in &changes {
            validate_path(change.path())?;
        }
        changes.sort_by(layer_order);
        let mut deleted: Option<&str> = None;
        for (i, change) in changes.iter().enumerate() {
            let path = change.path();
            let prev = i.checked_sub(1).map(|p| &changes[p]);
            if let Some(p) = prev.filter(|p| layer_order(p, change) == Ordering::Equal) {
                return Err(
                    if p.rank() == 0 && p != change && (is_delete(p) || is_delete(change)) {
                        WriteError::Conflict {
                            path: path.into(),
                            what: "added",
                        }
                    } else {
                        WriteError::Duplicate { path: path.into() }
                    },
                );
            }
            if let Some(del) = deleted.filter(|d| is_within(path, d)) {
                let what = if path == del {
                    "added"
                } else {
                    "has additions below it"
                };
                return Err(WriteError::Conflict {
                    path: del.into(),
                    what,
                });
            }
            match change {
                Change::Delete { .. } => deleted = Some(path),
                Change::Opaque { .. } if !matches!(prev, Some(Change::Add { path: p, .. }) if p == path) => {
                    return Err(WriteError::OpaqueWithoutAdd { path: path.into() })
                }
                _ => {}
            }
        }
        Ok(ChangeSet { changes })
    }

    /// Every file under `dir` as an addition: a layer from a rootfs or a fresh tree. `dir`
    /// itself is the layer root, not an entry.
    pub fn from_dir(dir: &Path) -> Result<ChangeSet, WriteError> {
        let mut changes = Vec::new();
        walk(dir, "", false, &mut changes)?;
        ChangeSet::new(changes)
    }

    /// An overlayfs upperdir: a 0/0 character device is a deletion, a directory with
    /// `trusted.overlay.opaque` (or `user.overlay.opaque`) = `y` is opaque, everything else
    /// is added. The overlay xattrs themselves never reach the layer.
    pub fn from_overlay_upper(dir: &Path) -> Result<ChangeSet, WriteError> {
        let mut changes = Vec::new();
        walk(dir, "", true, &mut changes)?;
        ChangeSet::new(changes)
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes in layer order.
    pub fn iter(&self) -> std::slice::Iter<'_, Change> {
        self.changes.iter()
    }

    pub fn as_slice(&self) -> &[Change] {
        &self.changes
    }
}

impl<'a> IntoIterator for &'a ChangeSet {
    type Item = &'a Change;
    type IntoIter = std::slice::Iter<'a, Change>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

fn is_delete(change: &Change) -> bool {
    matches!(change, Change::Delete { .. })
}

/// Whether `path` is `ancestor` or below it.
fn is_within(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn validate_path(path: &str) -> Result<(), WriteError> {
    let reason = if path.is_empty() {
        "empty"
    } else if path.starts_with('/') {
        "absolute (layer paths are relative to the layer root)"
    } else if path.ends_with('/') {
        "trailing '/' (the writer adds it to directories)"
    } else if path.contains('\0') {
        "contains a NUL byte"
    } else if path.split('/').any(|c| c.is_empty()) {
        "empty component ('//')"
    } else if path.split('/').any(|c| c == "." || c == "..") {
        "'.' or '..' component"
    } else {
        return Ok(());
    };
    Err(WriteError::InvalidPath {
        path: path.into(),
        reason,
    })
}

/// Appends the changes for everything under `dir` (whose layer path is `prefix`), each
/// directory's entries in bytewise name order so the result is already in layer order.
fn walk(dir: &Path, prefix: &str, overlay: bool, out: &mut Vec<Change>) -> Result<(), WriteError> {
    let read_err = |source| WriteError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    names.sort();
    for name in names {
        let source = dir.join(&name);
        let name = name.into_string().map_err(|_| WriteError::NonUtf8Name {
            path: source.clone(),
        })?;
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let st = fs::symlink_metadata(&source).map_err(|source_err| WriteError::Read {
            path: source.clone(),
            source: source_err,
        })?;
        if overlay && st.file_type().is_char_device() && st.rdev() == 0 {
            out.push(Change::Delete { path });
            continue;
        }
        let is_dir = st.is_dir();
        let opaque = overlay && is_dir && is_opaque(&source)?;
        out.push(Change::Add {
            path: path.clone(),
            source: source.clone(),
        });
        if opaque {
            out.push(Change::Opaque { path: path.clone() });
        }
        if is_dir {
            walk(&source, &path, overlay, out)?;
        }
    }
    Ok(())
}

/// Whether overlayfs marked `dir` opaque (`trusted.` as root mounts use, `user.` for
/// unprivileged `userxattr` mounts).
fn is_opaque(dir: &Path) -> Result<bool, WriteError> {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        match xattr::get(dir, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if xattrs_unsupported(&e) => return Ok(false),
            Err(source) => {
                return Err(WriteError::Read {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(path: &str) -> Change {
        Change::Add {
            path: path.into(),
            source: PathBuf::from("/nonexistent"),
        }
    }

    fn paths(set: &ChangeSet) -> Vec<String> {
        set.iter()
            .map(|c| match c {
                Change::Add { path, .. } => path.clone(),
                Change::Delete { path } => format!("-{path}"),
                Change::Opaque { path } => format!("{path}/*"),
            })
            .collect()
    }

    #[test]
    fn layer_order_is_depth_first_bytewise_with_markers_after_their_dir() {
        let set = ChangeSet::new(vec![
            add("a.b"),
            Change::Opaque { path: "a".into() },
            add("a/z"),
            Change::Delete { path: "a/m".into() },
            add("a"),
            add("B"),
            add("a/c"),
        ])
        .unwrap();
        assert_eq!(paths(&set), ["B", "a", "a/*", "a/c", "-a/m", "a/z", "a.b"]);
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        for bad in ["", "/a", "./a", "a/", "a//b", "a/../b", "a/./b"] {
            assert!(
                matches!(
                    ChangeSet::new(vec![add(bad)]),
                    Err(WriteError::InvalidPath { .. })
                ),
                "{bad:?}"
            );
        }
        let dup = ChangeSet::new(vec![add("x"), add("x")]);
        assert!(matches!(dup, Err(WriteError::Duplicate { .. })));
        let both = ChangeSet::new(vec![add("x"), Change::Delete { path: "x".into() }]);
        assert!(matches!(both, Err(WriteError::Conflict { .. })));
        let below = ChangeSet::new(vec![add("x/y"), Change::Delete { path: "x".into() }]);
        assert!(matches!(below, Err(WriteError::Conflict { .. })));
        let sibling = ChangeSet::new(vec![add("x.y"), Change::Delete { path: "x".into() }]);
        assert!(sibling.is_ok());
        let lone = ChangeSet::new(vec![Change::Opaque { path: "d".into() }]);
        assert!(matches!(lone, Err(WriteError::OpaqueWithoutAdd { .. })));
    }
}
