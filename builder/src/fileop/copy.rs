//! COPY: selected sources written into the destination rootfs.
//!
//! BuildKit facts kept here (fsutil `copy`, `copyFileInfo`, `copyDirectoryOnly`,
//! `ensureEmptyFileTarget`, `getLinkSource`):
//! - a file replaces an existing non-directory at its target (removed first); a directory at
//!   the target is an error ("cannot replace to directory … with file"); a directory onto an
//!   existing non-directory is an error ("cannot copy to non-directory");
//! - every copied entry gets its owner (`--chown`, else the source's — 0:0 for context files,
//!   which BuildKit's file sync resets), its mode (`--chmod`, else the source's; never on a
//!   symlink) and its source atime/mtime; directories get theirs after their contents;
//! - the destination directory a directory's *contents* go into keeps its metadata (or the
//!   0755 `MkdirAll` gave it); directories below it that exist already take the source's;
//! - symlinks are copied as symlinks (target unchanged); files with several links that are
//!   both copied stay one inode (hardlinked, keyed by device and inode).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::rc::Rc;

use rbuild_frontend::dockerignore::PatternMatcher;
use rbuild_frontend::graph::CopyAction;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use super::error::FileOpError;
use super::paths::{display, file_type, open_dir, place, DestRoot, Owner};
use super::source::{
    clamp, components, expand, has_wildcard, pattern_err, rel_string, root_path, walk_tree, Entry,
    Match, SourceTree,
};
use rbuild_cache::layer::safe_path::open_readable;

/// `--chmod`: octal, or symbolic clauses as `chmod(1)` takes them (BuildKit ≥ 0.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Clause {
    who: u32,
    op: u8,
    perms: String,
}

impl Chmod {
    pub fn parse(s: &str) -> Result<Chmod, FileOpError> {
        let bad = || FileOpError::BadChmod(s.to_string());
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let n = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            return if n <= 0o7777 {
                Ok(Chmod::Octal(n))
            } else {
                Err(bad())
            };
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let who_end = clause.find(|c: char| !"ugoa".contains(c)).ok_or_else(bad)?;
            let mut who = 0;
            for c in clause[..who_end].chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let rest = &clause[who_end..];
            let op = rest
                .bytes()
                .next()
                .filter(|b| b"+-=".contains(b))
                .ok_or_else(bad)?;
            let perms = &rest[1..];
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return Err(bad());
            }
            clauses.push(Clause {
                who,
                op,
                perms: perms.to_string(),
            });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The permission bits (0o7777) for an entry whose current mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(n) => *n,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || m & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    match c.op {
                        b'+' => m |= bits,
                        b'-' => m &= !bits,
                        _ => m = (m & !(c.who & 0o777)) | bits,
                    }
                }
                m
            }
        }
    }
}

/// What a copy applies to every entry it writes.
pub(crate) struct Copier<'r> {
    pub root: &'r DestRoot,
    /// `--chown`, resolved in the destination rootfs.
    pub owner: Option<Owner>,
    pub chmod: Option<Chmod>,
    /// Context files are owned 0:0 whatever their owner on the host.
    pub zero_owner: bool,
    links: HashMap<(u64, u64), (Rc<OwnedFd>, OsString)>,
    /// Directories whose metadata is set once everything below them is written.
    pending_dirs: Vec<(OwnedFd, std::fs::Metadata, String)>,
}

impl<'r> Copier<'r> {
    pub fn new(
        root: &'r DestRoot,
        owner: Option<Owner>,
        chmod: Option<Chmod>,
        zero_owner: bool,
    ) -> Self {
        Copier {
            root,
            owner,
            chmod,
            zero_owner,
            links: HashMap::new(),
            pending_dirs: Vec::new(),
        }
    }

    fn owner_of(&self, meta: &std::fs::Metadata) -> Owner {
        match (self.owner, self.zero_owner) {
            (Some(o), _) => o,
            (None, true) => Owner { uid: 0, gid: 0 },
            (None, false) => Owner {
                uid: meta.uid(),
                gid: meta.gid(),
            },
        }
    }

    fn mode_of(&self, meta: &std::fs::Metadata) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(meta.mode(), meta.is_dir()),
            None => meta.mode() & 0o7777,
        }
    }

    /// Copies `entries` (pre-order, `entries[0]` the selected source) to their placement:
    /// `name: None` puts a directory's contents into `parent_fd` itself.
    pub fn copy_entries(
        &mut self,
        entries: &[Entry],
        parent_fd: OwnedFd,
        name: Option<&OsStr>,
        dest_display: &str,
    ) -> Result<(), FileOpError> {
        let mut dirs: HashMap<Vec<OsString>, Rc<OwnedFd>> = HashMap::new();
        let parent_fd = Rc::new(parent_fd);
        for e in entries {
            let (dir_fd, entry_name, path) = if e.rel.is_empty() {
                match name {
                    None => {
                        // Contents only: the destination directory stays as it is.
                        dirs.insert(Vec::new(), parent_fd.clone());
                        continue;
                    }
                    Some(n) => (
                        parent_fd.clone(),
                        n.to_owned(),
                        join_display(dest_display, &[]),
                    ),
                }
            } else {
                let parent_rel = &e.rel[..e.rel.len() - 1];
                let fd = dirs.get(parent_rel).cloned().ok_or_else(|| {
                    FileOpError::NotADirectory(join_display(dest_display, parent_rel))
                })?;
                let n = e.rel.last().cloned().unwrap_or_default();
                (fd, n, join_display(dest_display, &e.rel))
            };
            if let Some(fd) = self.write_entry(dir_fd.as_fd(), &entry_name, e, &dir_fd, &path)? {
                dirs.insert(e.rel.clone(), Rc::new(fd));
            }
        }
        Ok(())
    }

    /// Writes one entry as `name` in `dir`; returns the directory's fd for a directory.
    fn write_entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
        dir_rc: &Rc<OwnedFd>,
        path: &str,
    ) -> Result<Option<OwnedFd>, FileOpError> {
        let ft = e.meta.file_type();
        let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        if ft.is_dir() {
            match &existing {
                Some(st) if file_type(st) == FileType::Directory => {}
                Some(_) => return Err(FileOpError::NotADirectory(path.to_string())),
                None => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                    .map_err(|err| FileOpError::io(path, "mkdir", err))?,
            }
            let fd = open_dir(dir, name).map_err(|err| FileOpError::io(path, "open", err))?;
            let rd = open_readable(fd.as_fd()).map_err(|err| FileOpError::io(path, "open", err))?;
            // Writable while its contents are copied; its own mode comes last.
            if existing.is_none() {
                let _ = rustix::fs::fchmod(&rd, Mode::from_raw_mode(0o700));
            }
            self.pending_dirs
                .push((rd, e.meta.clone(), path.to_string()));
            return Ok(Some(fd));
        }
        if let Some(st) = &existing {
            if file_type(st) == FileType::Directory {
                return Err(FileOpError::ReplaceDirWithFile(path.to_string()));
            }
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|err| FileOpError::io(path, "remove", err))?;
        }
        let owner = self.owner_of(&e.meta);
        let explicit = self.owner.is_some();
        let times = times_of(&e.meta);
        if ft.is_file() {
            let key = (e.meta.dev(), e.meta.ino());
            if e.meta.nlink() > 1 {
                if let Some((first_dir, first_name)) = self.links.get(&key) {
                    rustix::fs::linkat(
                        first_dir.as_fd(),
                        first_name.as_os_str(),
                        dir,
                        name,
                        AtFlags::empty(),
                    )
                    .map_err(|err| FileOpError::io(path, "hardlink", err))?;
                    return Ok(None);
                }
            }
            let src = rustix::fs::open(
                &e.host,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| FileOpError::io(e.host.to_string_lossy(), "open", err))?;
            let out = rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|err| FileOpError::io(path, "create", err))?;
            let mut src = File::from(src);
            let mut out = File::from(out);
            io::copy(&mut src, &mut out).map_err(|err| FileOpError::io(path, "write", err))?;
            self.root.chown_fd(out.as_fd(), owner, explicit, path)?;
            rustix::fs::fchmod(&out, Mode::from_raw_mode(self.mode_of(&e.meta)))
                .map_err(|err| FileOpError::io(path, "chmod", err))?;
            rustix::fs::futimens(&out, &times)
                .map_err(|err| FileOpError::io(path, "utimes", err))?;
            if e.meta.nlink() > 1 {
                self.links.insert(key, (dir_rc.clone(), name.to_owned()));
            }
            return Ok(None);
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&e.host)
                .map_err(|err| FileOpError::io(e.host.to_string_lossy(), "readlink", err))?;
            rustix::fs::symlinkat(target.as_os_str(), dir, name)
                .map_err(|err| FileOpError::io(path, "symlink", err))?;
            self.root.chown_at(dir, name, owner, explicit, path)?;
            rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|err| FileOpError::io(path, "utimes", err))?;
            return Ok(None);
        }
        let kind = if ft.is_fifo() {
            FileType::Fifo
        } else if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else {
            return Err(FileOpError::Unsupported(format!(
                "{path}: cannot copy a socket"
            )));
        };
        rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), e.meta.rdev())
            .map_err(|err| FileOpError::io(path, "mknod", err))?;
        self.root.chown_at(dir, name, owner, explicit, path)?;
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(self.mode_of(&e.meta)),
            AtFlags::empty(),
        )
        .map_err(|err| FileOpError::io(path, "chmod", err))?;
        rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| FileOpError::io(path, "utimes", err))?;
        Ok(None)
    }

    /// A directory on the way to a `--parents` entry: made like its source directory when
    /// missing (fsutil `createParentDirs`), left alone when present.
    pub fn parent_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        src_meta: &std::fs::Metadata,
        path: &str,
    ) -> Result<OwnedFd, FileOpError> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if file_type(&st) == FileType::Directory => {
                open_dir(dir, name).map_err(|err| FileOpError::io(path, "open", err))
            }
            Ok(_) => Err(FileOpError::NotADirectory(path.to_string())),
            Err(_) => {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                    .map_err(|err| FileOpError::io(path, "mkdir", err))?;
                let fd = open_dir(dir, name).map_err(|err| FileOpError::io(path, "open", err))?;
                let rd =
                    open_readable(fd.as_fd()).map_err(|err| FileOpError::io(path, "open", err))?;
                self.pending_dirs
                    .push((rd, src_meta.clone(), path.to_string()));
                Ok(fd)
            }
        }
    }

    /// Sets the owner, mode and times of every directory written, deepest first.
    pub fn finish(&mut self) -> Result<(), FileOpError> {
        while let Some((fd, meta, path)) = self.pending_dirs.pop() {
            let owner = self.owner_of(&meta);
            self.root
                .chown_fd(fd.as_fd(), owner, self.owner.is_some(), &path)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.mode_of(&meta)))
                .map_err(|err| FileOpError::io(&path, "chmod", err))?;
            rustix::fs::futimens(&fd, &times_of(&meta))
                .map_err(|err| FileOpError::io(&path, "utimes", err))?;
        }
        Ok(())
    }
}

fn join_display(base: &str, rel: &[OsString]) -> String {
    if rel.is_empty() {
        return base.to_string();
    }
    format!("{}/{}", base.trim_end_matches('/'), rel_string(rel))
}

pub(crate) fn times_of(meta: &std::fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    }
}

/// The checks and resolutions shared by COPY and ADD.
pub(crate) struct Prepared {
    pub owner: Option<Owner>,
    pub chmod: Option<Chmod>,
    pub exclude: Option<PatternMatcher>,
}

pub(crate) fn prepare(
    action: &CopyAction,
    keyword: &'static str,
    dest_root: &std::path::Path,
) -> Result<Prepared, FileOpError> {
    let several = action.sources.len() + action.heredocs.len() > 1
        || action.sources.iter().any(|s| has_wildcard(s.as_bytes()));
    if several && !action.dest.ends_with('/') {
        return Err(FileOpError::NeedsDirectory { keyword });
    }
    let owner = match &action.chown {
        Some(spec) if !spec.is_empty() => {
            let id =
                crate::users::resolve(dest_root, spec).map_err(|cause| FileOpError::Chown {
                    spec: spec.clone(),
                    cause,
                })?;
            Some(Owner {
                uid: id.uid,
                gid: id.gid,
            })
        }
        _ => None,
    };
    let chmod = action.chmod.as_deref().map(Chmod::parse).transpose()?;
    let exclude = prepare_exclude(action)?;
    Ok(Prepared {
        owner,
        chmod,
        exclude,
    })
}

/// `--exclude` patterns, compiled with moby/patternmatcher semantics.
pub(crate) fn prepare_exclude(action: &CopyAction) -> Result<Option<PatternMatcher>, FileOpError> {
    if action.exclude.is_empty() {
        return Ok(None);
    }
    PatternMatcher::new(&action.exclude)
        .map(Some)
        .map_err(|e| pattern_err("--exclude", e))
}

/// One selected source of a COPY (non-`--parents`): its entries, ready to be placed.
pub(crate) struct Selected {
    pub top: Match,
    pub entries: Vec<Entry>,
}

/// Expands every source of `action` in `source` (wildcards, `.dockerignore`, `--exclude`).
pub(crate) fn select(
    action: &CopyAction,
    source: &SourceTree,
    exclude: Option<&PatternMatcher>,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<Selected>, FileOpError> {
    let mut out = Vec::new();
    for src in action.sources.iter().filter(|s| !skip(s)) {
        for top in expand(source, &[], src, src)? {
            if let Some(m) = exclude {
                let rel = rel_string(&top.matched);
                if m.decide(&rel)
                    .map_err(|e| pattern_err("--exclude", e))?
                    .is_some_and(|d| d.excluded)
                {
                    continue;
                }
            }
            let entries = walk_tree(source, &top, exclude)?;
            out.push(Selected { top, entries });
        }
    }
    Ok(out)
}

/// `--parents`: a source `a/b/c` lands at `dest/a/b/c`; `x/./a/b` pivots at `x`, landing at
/// `dest/a/b` (BuildKit: the part after `/./` becomes an include pattern under the pivot).
pub(crate) struct ParentsSelected {
    pub pivot: Vec<OsString>,
    pub rel: Vec<OsString>,
    pub entries: Vec<Entry>,
}

pub(crate) fn select_parents(
    action: &CopyAction,
    source: &SourceTree,
    exclude: Option<&PatternMatcher>,
) -> Result<Vec<ParentsSelected>, FileOpError> {
    let mut out = Vec::new();
    for src in &action.sources {
        let (pivot, pattern) = match src.split_once("/./") {
            Some((p, rest)) => (p, rest),
            None => ("", src.as_str()),
        };
        let pivot_comps = clamp(&components(pivot.as_bytes()));
        let pivot = root_path(source.root, &pivot_comps, true)
            .map_err(|e| FileOpError::io(src, "resolving the source", e))?;
        // `**` in a --parents source is BuildKit's include pattern (any number of
        // directories, none too); anything else is a COPY wildcard (`filepath.Match`).
        let tops = match pattern.contains("**") {
            true => expand_any_depth(source, &pivot, pattern)?,
            false => expand(source, &pivot, pattern, src)?,
        };
        for top in tops {
            let rel = top.matched[pivot.len().min(top.matched.len())..].to_vec();
            if let Some(m) = exclude {
                if m.decide(&rel_string(&rel))
                    .map_err(|e| pattern_err("--exclude", e))?
                    .is_some_and(|d| d.excluded)
                {
                    continue;
                }
            }
            let entries = walk_tree(source, &top, exclude)?;
            out.push(ParentsSelected {
                pivot: pivot.clone(),
                rel,
                entries,
            });
        }
    }
    Ok(out)
}

/// The paths below `pivot` that `pattern` (with `**`) matches as `.dockerignore` patterns
/// match, in lexical walk order; a matching directory is taken whole, not entered.
fn expand_any_depth(
    source: &SourceTree,
    pivot: &[OsString],
    pattern: &str,
) -> Result<Vec<Match>, FileOpError> {
    let matcher = PatternMatcher::new(&[pattern]).map_err(|e| pattern_err("--parents", e))?;
    let mut out = Vec::new();
    let mut todo = vec![Vec::<OsString>::new()];
    while let Some(rel) = todo.pop() {
        let here = super::source::join(source.root, pivot)
            .join(rel.iter().collect::<std::path::PathBuf>());
        let Ok(read) = std::fs::read_dir(&here) else {
            continue;
        };
        let mut names: Vec<OsString> = read.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort_by(|a, b| {
            use std::os::unix::ffi::OsStrExt;
            a.as_bytes().cmp(b.as_bytes())
        });
        let mut dirs = Vec::new();
        for name in names {
            let mut child = rel.clone();
            child.push(name.clone());
            let mut matched = pivot.to_vec();
            matched.extend(child.iter().cloned());
            if source.is_ignored(&rel_string(&matched))? {
                continue;
            }
            if matcher
                .matches_exact(&rel_string(&child))
                .map_err(|e| pattern_err("--parents", e))?
            {
                let resolved = root_path(source.root, &matched, true).map_err(|e| {
                    FileOpError::io(rel_string(&matched), "resolving the source", e)
                })?;
                out.push(Match {
                    resolved,
                    name,
                    matched,
                });
            } else if std::fs::symlink_metadata(here.join(&name)).is_ok_and(|m| m.is_dir()) {
                dirs.push(child);
            }
        }
        // Onto the stack reversed: directories are entered in lexical order.
        todo.extend(dirs.into_iter().rev());
    }
    Ok(out)
}

/// Runs a COPY (or the copy part of an ADD). `unpack` may take a selected source over (ADD's
/// archives) and returns whether it did.
pub(crate) fn run(
    action: &CopyAction,
    keyword: &'static str,
    source: &SourceTree,
    dest_root: &std::path::Path,
    skip: impl Fn(&str) -> bool,
    mut unpack: impl FnMut(&DestRoot, &Prepared, &Selected) -> Result<bool, FileOpError>,
) -> Result<(), FileOpError> {
    let prepared = prepare(action, keyword, dest_root)?;
    let root = DestRoot::open(dest_root)?;
    let mut copier = Copier::new(
        &root,
        prepared.owner,
        prepared.chmod.clone(),
        source.is_context,
    );
    if action.parents {
        for sel in select_parents(action, source, prepared.exclude.as_ref())? {
            write_parents(&root, &mut copier, action, source, &prepared, &sel)?;
        }
    } else {
        for sel in select(action, source, prepared.exclude.as_ref(), &skip)? {
            if unpack(&root, &prepared, &sel)? {
                continue;
            }
            let top = &sel.entries[0];
            let placed = place(
                &root,
                &action.dest,
                top.meta.is_dir(),
                &sel.top.name,
                prepared.owner,
            )?;
            let shown = display(&placed.parent, placed.name.as_deref());
            let fd = root.open_resolved(&placed.parent, &shown)?;
            copier.copy_entries(&sel.entries, fd, placed.name.as_deref(), &shown)?;
        }
    }
    for doc in &action.heredocs {
        write_heredoc(&root, &mut copier, action, &prepared, doc)?;
    }
    copier.finish()
}

fn write_parents(
    root: &DestRoot,
    copier: &mut Copier,
    action: &CopyAction,
    source: &SourceTree,
    prepared: &Prepared,
    sel: &ParentsSelected,
) -> Result<(), FileOpError> {
    let dest_dir = format!("{}/", action.dest.trim_end_matches('/'));
    let (mut fd, comps) = root.mkdir_all(&dest_dir, 0o755, prepared.owner)?;
    let base = display(&comps, None);
    let Some((last, dirs)) = sel.rel.split_last() else {
        // The pivot itself: its contents into dest.
        return copier.copy_entries(&sel.entries, fd, None, &base);
    };
    let mut src = sel.pivot.clone();
    let mut shown = base.clone();
    for d in dirs {
        src.push(d.clone());
        shown = format!("{}/{}", shown.trim_end_matches('/'), d.to_string_lossy());
        let meta = std::fs::metadata(super::source::join(
            source.root,
            &root_path(source.root, &src, true).unwrap_or_else(|_| src.clone()),
        ))
        .map_err(|e| FileOpError::io(&shown, "stat", e))?;
        fd = copier.parent_dir(fd.as_fd(), d, &meta, &shown)?;
    }
    let shown = format!("{}/{}", shown.trim_end_matches('/'), last.to_string_lossy());
    copier.copy_entries(&sel.entries, fd, Some(last), &shown)
}

/// `COPY <<EOF /path`: a file made 0644 by root in a scratch state (BuildKit `Mkfile`), then
/// copied by the COPY's rules with its `--chown`/`--chmod`. `<<-` strips leading tabs.
fn write_heredoc(
    root: &DestRoot,
    copier: &mut Copier,
    action: &CopyAction,
    prepared: &Prepared,
    doc: &rbuild_frontend::parser::Heredoc,
) -> Result<(), FileOpError> {
    let body = if doc.chomp {
        rbuild_frontend::parser::chomp_heredoc_content(&doc.content)
    } else {
        doc.content.clone()
    };
    let name = OsString::from(&doc.name);
    let placed = place(root, &action.dest, false, &name, prepared.owner)?;
    let shown = display(&placed.parent, placed.name.as_deref());
    let dir = root.open_resolved(&placed.parent, &shown)?;
    let name = placed.name.unwrap_or(name);
    if let Ok(st) = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
        if file_type(&st) == FileType::Directory {
            return Err(FileOpError::ReplaceDirWithFile(shown));
        }
        rustix::fs::unlinkat(&dir, &name, AtFlags::empty())
            .map_err(|e| FileOpError::io(&shown, "remove", e))?;
    }
    let fd = rustix::fs::openat(
        &dir,
        &name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| FileOpError::io(&shown, "create", e))?;
    let mut f = File::from(fd);
    io::Write::write_all(&mut f, body.as_bytes())
        .map_err(|e| FileOpError::io(&shown, "write", e))?;
    let owner = prepared.owner.unwrap_or(Owner { uid: 0, gid: 0 });
    root.chown_fd(f.as_fd(), owner, prepared.owner.is_some(), &shown)?;
    let mode = match &copier.chmod {
        Some(c) => c.apply(0o100644, false),
        None => 0o644,
    };
    rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
        .map_err(|e| FileOpError::io(&shown, "chmod", e))?;
    Ok(())
}
