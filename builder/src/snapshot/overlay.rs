//! The overlay snapshotter's mount options, and the probe that decides whether overlay works.
//!
//! `lowerdir=TOP:…:BOTTOM` (overlay lists the uppermost lower first), `upperdir`, `workdir`,
//! plus [`FIXED_OPTIONS`], so that the upperdir is always a plain diff that
//! [`rbuild_cache::layer::ChangeSet::from_overlay_upper`] reads completely:
//! - `index=off`: no inode index in the workdir and no "upper in use" bookkeeping tying an
//!   upperdir to one mount. containerd's overlay snapshotter passes `index=off` too; the
//!   index only matters for hardlinks across copy-ups and NFS export, neither of which a
//!   build step needs.
//! - `redirect_dir=off`: renaming a lower directory would otherwise leave a
//!   `trusted.overlay.redirect` xattr in the upperdir pointing at the old path, and the layer
//!   would miss the directory's lower contents. With it off, `rename(2)` of a merged
//!   directory fails with EXDEV and tools (`mv`) fall back to copy + delete, which the diff
//!   represents exactly. Kernels built with `CONFIG_OVERLAY_FS_REDIRECT_DIR=y` default to on.
//! - `metacopy=off`: otherwise a chmod/chown copies up only metadata, and the upperdir file
//!   would be an empty placeholder (`trusted.overlay.metacopy`) whose data is in a lower.
//!
//! BuildKit's overlay differ likewise does not handle redirect or metacopy upperdirs (it
//! refuses them and falls back to a double walk).
//!
//! **Length.** The kernel copies mount options into one page: at most 4095 bytes. Lower paths
//! are written as absolute paths when they fit (readable in `/proc/self/mountinfo`); when they
//! do not, or a path holds a character with meaning in the option syntax (`,` `:` `\`), a layer
//! directory under `snapshots/layers/` is written as `/proc/self/fd/<fd>/<name>`, through a
//! descriptor the [`LayerStore`] keeps open for exactly this: ~31 bytes per layer whatever
//! the state root's path, so about 125 layers fit. More is [`SnapshotError::TooManyLayers`]
//! (Docker's overlay2 has the same order of limit: 125 layers). `chdir` + relative paths is
//! not an option in a multi-threaded process (the working directory is process-wide).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::active::ActiveDir;
use super::layers::LayerStore;
use super::SnapshotError;

/// See the module docs.
pub const FIXED_OPTIONS: &str = "index=off,redirect_dir=off,metacopy=off";

/// The kernel's limit on the option string: one page, NUL included.
pub const MAX_OPTIONS_LEN: usize = 4095;

/// The option string for `lowers` (top first) and, for a writable mount, `(upper, work)`.
pub(crate) fn options(
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    layers: &LayerStore,
) -> Result<CString, SnapshotError> {
    // A layer listed twice in an image (it happens) is one directory, and overlayfs refuses a
    // lowerdir given twice (ELOOP). Keeping only its uppermost place shows the same tree: that
    // copy's files, whiteouts and opaque markers already cover what the lower copy would.
    let mut seen = std::collections::HashSet::new();
    let lowers: Vec<&Path> = lowers.iter().copied().filter(|l| seen.insert(*l)).collect();
    let build = |short: bool| -> Result<String, SnapshotError> {
        let mut s = String::from("lowerdir=");
        for (i, lower) in lowers.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            let path = match layers.fd_path(lower) {
                Some(p) if short || !plain(lower) => p,
                _ => path_str(lower)?,
            };
            s.push_str(&path);
        }
        if let Some((upper, work)) = upper {
            s.push_str(",upperdir=");
            s.push_str(&path_str(upper)?);
            s.push_str(",workdir=");
            s.push_str(&path_str(work)?);
        }
        s.push(',');
        s.push_str(FIXED_OPTIONS);
        Ok(s)
    };
    let mut data = build(false)?;
    if data.len() > MAX_OPTIONS_LEN {
        data = build(true)?;
    }
    if data.len() > MAX_OPTIONS_LEN {
        return Err(SnapshotError::TooManyLayers {
            layers: lowers.len(),
            len: data.len(),
            max: MAX_OPTIONS_LEN,
        });
    }
    CString::new(data).map_err(|_| SnapshotError::NotALayer(lowers[0].to_path_buf()))
}

/// Whether `path` can stand in the option string as it is.
fn plain(path: &Path) -> bool {
    !path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'\\' | 0))
}

/// `path` as option text; upper and work dirs under a state root whose path overlay's option
/// syntax cannot carry are refused with a clear error.
fn path_str(path: &Path) -> Result<String, SnapshotError> {
    match path.to_str() {
        Some(s) if plain(path) => Ok(s.to_string()),
        _ => Err(SnapshotError::Io {
            op: "using as an overlay directory",
            path: path.to_path_buf(),
            source: std::io::Error::other(
                "the path is not UTF-8 or contains ',', ':' or '\\' (choose another --root)",
            ),
        }),
    }
}

/// Mounts one writable overlay (empty lower) in a throwaway active dir and undoes it: whether
/// this kernel and the state root's filesystem can carry the overlay snapshotter.
pub(crate) fn probe(active: &Path, empty: &Path) -> Result<(), String> {
    let dir = ActiveDir::create(active).map_err(|e| e.to_string())?;
    let (upper, work, merged) = (
        dir.path().join("u"),
        dir.path().join("w"),
        dir.path().join("m"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={},{FIXED_OPTIONS}",
        path_str(empty).map_err(|e| e.to_string())?,
        path_str(&upper).map_err(|e| e.to_string())?,
        path_str(&work).map_err(|e| e.to_string())?,
    );
    let data = CString::new(data).map_err(|e| e.to_string())?;
    match dir.mount_overlay(&merged, &data) {
        Ok(()) => {}
        Err(SnapshotError::Mount { source, .. }) => return Err(format!("mount: {source}")),
        Err(e) => return Err(e.to_string()),
    }
    dir.remove().map_err(|e| e.to_string())
}
