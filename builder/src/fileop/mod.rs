//! File operations of a build: COPY, ADD and WORKDIR's mkdir, with Docker/BuildKit's rules.
//!
//! - [`copy`]: sources (context or another stage/image) into the destination rootfs;
//! - [`add`]: COPY plus local archives extracted, http(s) URLs downloaded;
//! - [`mkdir`]: `mkdir -p` owned by the USER, as BuildKit's WORKDIR;
//! - [`selected_sources`]: what a COPY/ADD reads, for cache keys and messages.
//!
//! Every write into the destination resolves its parent inside the destination rootfs: a
//! symlink there is followed as the container would see it, never out to the host.

mod add;
mod copy;
mod error;
mod git;
mod mkdir;
mod paths;
mod source;

use std::path::{Path, PathBuf};

use rbuild_frontend::graph::{AddAction, CopyAction};

pub use error::FileOpError;
pub use mkdir::mkdir;
pub use source::{IgnoreRules, SourceTree};

/// COPY `action` from `source` into the rootfs at `dest_root`.
pub fn copy(action: &CopyAction, source: &SourceTree, dest_root: &Path) -> Result<(), FileOpError> {
    copy::run(
        action,
        "COPY",
        source,
        dest_root,
        |_| false,
        |_, _, _| Ok(false),
    )
}

/// ADD `action`: local sources as COPY, except archives (detected by content) which are
/// extracted; http(s) URLs downloaded into `scratch` first.
/// `git_commits`: the commit each git source resolved to before the step (its key holds it).
pub fn add(
    action: &AddAction,
    source: &SourceTree,
    dest_root: &Path,
    scratch: &Path,
    git_commits: &std::collections::BTreeMap<String, String>,
) -> Result<(), FileOpError> {
    add::run(action, source, dest_root, scratch, git_commits)
}

/// The paths COPY/ADD will read (after wildcards, `.dockerignore`, `--exclude`), relative to
/// the source root, symlinks resolved, every file and directory below a selected directory
/// included, in walk order. Remote ADD sources are not paths and are left out.
pub fn selected_sources(
    action: &CopyAction,
    source: &SourceTree,
) -> Result<Vec<PathBuf>, FileOpError> {
    let prepared = copy::prepare_exclude(action)?;
    let mut out = Vec::new();
    let mut push = |top: &[std::ffi::OsString], entries: &[source::Entry]| {
        for e in entries {
            let mut p: PathBuf = top.iter().collect();
            p.extend(e.rel.iter());
            out.push(p);
        }
    };
    if action.parents {
        for sel in copy::select_parents(action, source, prepared.as_ref())? {
            let mut top = sel.pivot.clone();
            top.extend(sel.rel.iter().cloned());
            let top = source::root_path(source.root, &top, true).map_err(|e| {
                FileOpError::io(source::rel_string(&top), "resolving the source", e)
            })?;
            push(&top, &sel.entries);
        }
    } else {
        for sel in copy::select(action, source, prepared.as_ref(), add::is_remote)? {
            push(&sel.top.resolved, &sel.entries);
        }
    }
    Ok(out)
}

pub(crate) use add::{is_git, is_remote};

/// `path` inside `root`, every symlink on the way resolved inside it and `..` stopped at it:
/// a host path that never leaves `root` (to bind, or to read from).
pub(crate) fn inside(root: &Path, path: &str) -> std::io::Result<std::path::PathBuf> {
    let comps = source::components(path.as_bytes());
    Ok(source::join(root, &source::root_path(root, &comps, true)?))
}
pub(crate) use git::resolve as resolve_git;

/// Whether `path` is a tar archive, plain or compressed (gzip, bzip2, xz, zstd), by content.
pub fn is_archive(path: &Path) -> bool {
    add::is_archive(path)
}

/// Extracts a context sent as a tar (`rbuild - < ctx.tar`) into `dest`, as ADD extracts an
/// archive: the names are files, never whiteouts, and nothing lands outside `dest`.
pub fn untar_context(archive: &Path, dest: &Path) -> Result<(), FileOpError> {
    let root = paths::DestRoot::open(dest)?;
    add::extract(&root, archive, "/", None, "the context from stdin")
}
