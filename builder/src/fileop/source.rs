//! Where COPY/ADD reads from, and which paths a source string selects there.
//!
//! BuildKit facts kept here (dockerfile2llb `dispatchCopy`, fsutil `copy`):
//! - every source is resolved inside its root with symlinks followed (`FollowSymlinks: true`),
//!   as continuity's `fs.RootPath` does: an absolute link target starts again at the root and
//!   `..` stops at the root, so a source can never read outside its tree;
//! - wildcards (`*`, `?`, `[...]`, Go `filepath.Match`) are expanded per path component after
//!   the first component that has one (`splitWildcards` / `resolveWildcards`); a matched
//!   directory is not searched further, and a wildcard matching nothing copies nothing
//!   (`AllowEmptyWildcard: true`);
//! - the context never holds what `.dockerignore` excludes (the local source filters it).

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_frontend::dockerignore::{
    filepath_match, read_ignore_file, IgnoreFileError, PatternError, PatternMatcher,
};

use super::error::FileOpError;

/// Linux gives up after 40 symlinks on one path; continuity allows 255. Either way a loop ends.
const MAX_LINKS: usize = 255;

/// A `.dockerignore` (or `Dockerfile.dockerignore`) file, compiled, with its name for messages.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    pub matcher: PatternMatcher,
    pub file_name: String,
}

impl IgnoreRules {
    pub fn parse(bytes: &[u8], file_name: &str) -> Result<IgnoreRules, FileOpError> {
        let rules = read_ignore_file(bytes).map_err(|e: IgnoreFileError| FileOpError::BadPath {
            path: file_name.to_string(),
            cause: e.to_string(),
        })?;
        let matcher = PatternMatcher::from_rules(&rules).map_err(|e| FileOpError::BadPattern {
            pattern: file_name.to_string(),
            cause: e.to_string(),
        })?;
        Ok(IgnoreRules {
            matcher,
            file_name: file_name.to_string(),
        })
    }
}

/// Where COPY/ADD reads from: the build context (with its .dockerignore) or another stage's /
/// image's rootfs.
#[derive(Clone, Copy)]
pub struct SourceTree<'a> {
    pub root: &'a Path,
    pub ignore: Option<&'a IgnoreRules>,
    pub is_context: bool,
}

impl SourceTree<'_> {
    /// The `.dockerignore` rule that excludes `rel` (slash-separated, relative to the root),
    /// if any.
    pub(crate) fn ignored_by(&self, rel: &str) -> Result<Option<(usize, String)>, FileOpError> {
        let Some(rules) = self.ignore.filter(|_| self.is_context) else {
            return Ok(None);
        };
        let decision = rules
            .matcher
            .decide(rel)
            .map_err(|e| pattern_err(&rules.file_name, e))?;
        Ok(decision
            .filter(|d| d.excluded)
            .map(|d| (d.line.unwrap_or(d.index + 1), d.pattern)))
    }

    pub(crate) fn is_ignored(&self, rel: &str) -> Result<bool, FileOpError> {
        Ok(self.ignored_by(rel)?.is_some())
    }

    /// Whether an ignored directory must still be walked because a `!` rule may re-include
    /// something below it.
    pub(crate) fn has_exceptions(&self) -> bool {
        self.ignore.is_some_and(|r| r.matcher.exclusions())
    }
}

pub(crate) fn pattern_err(pattern: &str, e: PatternError) -> FileOpError {
    FileOpError::BadPattern {
        pattern: pattern.to_string(),
        cause: e.to_string(),
    }
}

/// Splits a slash path into components, dropping empty ones and `.`; `..` is kept for the
/// resolver to clamp.
pub(crate) fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_owned())
        .collect()
}

/// continuity's `fs.RootPath`: the components of `path` inside `root` with every symlink on
/// the way replaced by its target, resolved inside the root (absolute targets restart at the
/// root, `..` never climbs above it). The last component is followed only when `follow_last`.
/// Components that do not exist are kept as written.
pub(crate) fn root_path(
    root: &Path,
    path: &[OsString],
    follow_last: bool,
) -> io::Result<Vec<OsString>> {
    let mut todo: std::collections::VecDeque<OsString> = path.iter().cloned().collect();
    let mut out: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(comp) = todo.pop_front() {
        match comp.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        out.push(comp);
        if todo.is_empty() && !follow_last {
            break;
        }
        let here: PathBuf = out.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let meta = match std::fs::symlink_metadata(&here) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                continue
            }
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::other("too many levels of symbolic links"));
        }
        let target = std::fs::read_link(&here)?;
        out.pop();
        let target = target.as_os_str().as_bytes();
        if target.first() == Some(&b'/') {
            out.clear();
        }
        for c in components(target).into_iter().rev() {
            todo.push_front(c);
        }
    }
    Ok(out)
}

/// Joins components onto a root.
pub(crate) fn join(root: &Path, comps: &[OsString]) -> PathBuf {
    comps.iter().fold(root.to_path_buf(), |p, c| p.join(c))
}

/// A slash path relative to the root, for messages, hashing and pattern matching.
pub(crate) fn rel_string(comps: &[OsString]) -> String {
    let parts: Vec<String> = comps
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// fsutil's `containsWildcards`: `*`, `?` or `[` not escaped by a backslash.
pub(crate) fn has_wildcard(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// One path a source string selected: its components relative to the source root (symlinks
/// resolved, so this is what is read) and the name it had as matched (the base name used for
/// `COPY src dir/`).
#[derive(Debug, Clone)]
pub(crate) struct Match {
    pub resolved: Vec<OsString>,
    pub name: OsString,
    /// The path as matched (before resolving symlinks), relative to the source root.
    pub matched: Vec<OsString>,
}

impl Match {
    pub fn host_path(&self, root: &Path) -> PathBuf {
        join(root, &self.resolved)
    }
}

/// Expands one source string (already cleaned of a leading `/`) inside `tree`. `display` is
/// the source as the user wrote it, for messages. A named path that is missing or ignored is an
/// error; a wildcard that matches nothing gives an empty list.
pub(crate) fn expand(
    tree: &SourceTree,
    base: &[OsString],
    src: &str,
    display: &str,
) -> Result<Vec<Match>, FileOpError> {
    let comps = components(src.as_bytes());
    // `..` is allowed but never leaves the root: cleaned lexically, clamped at the root (as
    // `filepath.Join("/", src)` in dispatchCopy), then resolved under `base`.
    let mut all = base.to_vec();
    all.extend(clamp(&comps));
    let split = all.iter().position(|c| has_wildcard(c.as_bytes()));
    let io_err = |e: io::Error| FileOpError::io(display, "resolving the source", e);
    let Some(split) = split else {
        let resolved = root_path(tree.root, &all, true).map_err(io_err)?;
        let rel = rel_string(&resolved);
        if let Some((line, pattern)) = tree.ignored_by(&rel)? {
            let file = tree.ignore.map(|r| r.file_name.clone()).unwrap_or_default();
            return Err(FileOpError::Ignored {
                path: display.to_string(),
                file,
                line,
                pattern,
            });
        }
        if std::fs::symlink_metadata(join(tree.root, &resolved)).is_err() {
            return Err(FileOpError::NotFound {
                path: display.to_string(),
            });
        }
        let name = all.last().cloned().unwrap_or_default();
        return Ok(vec![Match {
            resolved,
            name,
            matched: all,
        }]);
    };
    let dir = root_path(tree.root, &all[..split], true).map_err(io_err)?;
    let pattern: Vec<String> = all[split..]
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let pattern = pattern.join("/");
    let mut found = Vec::new();
    walk_matches(tree, &dir, &[], &pattern, &mut found)?;
    let mut out = Vec::new();
    for rel in found {
        let mut matched = all[..split].to_vec();
        matched.extend(rel.iter().cloned());
        let mut lexical = dir.clone();
        lexical.extend(rel.iter().cloned());
        let resolved = root_path(tree.root, &lexical, true).map_err(io_err)?;
        if tree.is_ignored(&rel_string(&resolved))? {
            continue;
        }
        let name = rel.last().cloned().unwrap_or_default();
        out.push(Match {
            resolved,
            name,
            matched,
        });
    }
    Ok(out)
}

/// Lexical `..` removal that stops at the root, as `filepath.Join("/", p)` does.
pub(crate) fn clamp(comps: &[OsString]) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in comps {
        match c.as_bytes() {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(c.clone()),
        }
    }
    out
}

/// fsutil's `resolveWildcards`: walk `dir` in lexical order, matching each path relative to
/// it against `pattern`; a matching directory is not entered. Only as deep as the pattern.
fn walk_matches(
    tree: &SourceTree,
    dir: &[OsString],
    rel: &[OsString],
    pattern: &str,
    out: &mut Vec<Vec<OsString>>,
) -> Result<(), FileOpError> {
    let depth = pattern.split('/').count();
    let here = join(tree.root, dir).join(rel.iter().collect::<PathBuf>());
    let mut names: Vec<OsString> = match std::fs::read_dir(&here) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
        Err(_) => return Ok(()),
    };
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let mut child = rel.to_vec();
        child.push(name.clone());
        let child_str = rel_string(&child);
        let matched = filepath_match(pattern, &child_str).map_err(|e| FileOpError::BadPattern {
            pattern: pattern.to_string(),
            cause: e.to_string(),
        })?;
        let meta = std::fs::symlink_metadata(here.join(&name)).ok();
        if matched {
            out.push(child);
            continue;
        }
        if child.len() < depth && meta.is_some_and(|m| m.is_dir()) {
            walk_matches(tree, dir, &child, pattern, out)?;
        }
    }
    Ok(())
}

/// One entry a copy reads: its host path, its path relative to the copied source's top
/// (empty for the top itself) and its lstat.
#[derive(Debug)]
pub(crate) struct Entry {
    pub host: PathBuf,
    pub rel: Vec<OsString>,
    pub meta: Metadata,
}

/// The entries below (and including) a selected source, pre-order, without what
/// `.dockerignore` or `--exclude` removes. An excluded directory is entered only when a `!`
/// rule could re-include something below it, and then kept only if something below is.
pub(crate) fn walk_tree(
    tree: &SourceTree,
    top: &Match,
    exclude: Option<&PatternMatcher>,
) -> Result<Vec<Entry>, FileOpError> {
    let host = top.host_path(tree.root);
    let meta = std::fs::symlink_metadata(&host)
        .map_err(|e| FileOpError::io(rel_string(&top.matched), "stat", e))?;
    let mut out = vec![Entry {
        host: host.clone(),
        rel: Vec::new(),
        meta,
    }];
    if out[0].meta.is_dir() {
        walk_dir(tree, &top.resolved, &host, &[], exclude, &mut out)?;
    }
    Ok(out)
}

fn walk_dir(
    tree: &SourceTree,
    top: &[OsString],
    host: &Path,
    rel: &[OsString],
    exclude: Option<&PatternMatcher>,
    out: &mut Vec<Entry>,
) -> Result<(), FileOpError> {
    let rd = std::fs::read_dir(host)
        .map_err(|e| FileOpError::io(host_rel(tree, host), "read_dir", e))?;
    let mut names: Vec<OsString> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let child_host = host.join(&name);
        let mut child_rel = rel.to_vec();
        child_rel.push(name);
        let mut ctx_rel = top.to_vec();
        ctx_rel.extend(child_rel.iter().cloned());
        let meta = std::fs::symlink_metadata(&child_host)
            .map_err(|e| FileOpError::io(rel_string(&ctx_rel), "stat", e))?;
        let ignored = tree.is_ignored(&rel_string(&ctx_rel))?;
        let excluded = match exclude {
            Some(m) => {
                let r = rel_string(&child_rel);
                m.decide(&r)
                    .map_err(|e| pattern_err("--exclude", e))?
                    .is_some_and(|d| d.excluded)
            }
            None => false,
        };
        let dropped = ignored || excluded;
        let could_reinclude = (ignored && tree.has_exceptions())
            || (excluded && exclude.is_some_and(|m| m.exclusions()));
        if dropped && !(meta.is_dir() && could_reinclude) {
            continue;
        }
        let index = out.len();
        let is_dir = meta.is_dir();
        out.push(Entry {
            host: child_host.clone(),
            rel: child_rel.clone(),
            meta,
        });
        if is_dir {
            walk_dir(tree, top, &child_host, &child_rel, exclude, out)?;
            if dropped && out.len() == index + 1 {
                out.pop();
            }
        }
    }
    Ok(())
}

fn host_rel(tree: &SourceTree, host: &Path) -> String {
    host.strip_prefix(tree.root)
        .unwrap_or(host)
        .to_string_lossy()
        .into_owned()
}
