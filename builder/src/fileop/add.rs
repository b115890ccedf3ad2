//! ADD: COPY plus archives and URLs.
//!
//! BuildKit facts kept here:
//! - a local source is an archive when it is a regular file (lstat after following the
//!   source path) whose content decompresses (gzip, bzip2, xz, zstd or none) into a stream
//!   whose first tar header reads (file backend `isArchivePath`) — by content, never by name;
//!   an archive is extracted into `dest`, made with `MkdirAll(dest, 0755, --chown)`; anything
//!   else is copied as COPY does; `--unpack=false` turns this off;
//! - extraction is moby's `archive.Untar` in a chroot of `dest`, not a layer: no whiteouts;
//!   names are cleaned and one climbing out of `dest` is refused; an existing entry is removed
//!   unless both are directories (then only the metadata changes); missing parents are made
//!   0755; owner (numeric uid/gid of the header, as root), mode and mtime come from the header;
//!   a symlink or hardlink whose target leaves `dest` is refused; directory mtimes are set last;
//! - an http(s) URL is downloaded (BuildKit's http source) to a file named after the URL
//!   path's base name (`__unnamed__` without one), mode 0600, owned 0:0, mtime from
//!   `Last-Modified`; `--checksum` is verified; it is then copied with COPY's rules and is NOT
//!   extracted, unless `--unpack=true`;
//! - git URLs are checked out at the commit resolved before the step (see [`super::git`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_cache::layer::safe_path::{normalize, remove_all_at, Missing, Root, Symlinks};
use rbuild_frontend::graph::{AddAction, CopyAction};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest as _, Sha256};

use super::copy::{self, Prepared, Selected};
use super::error::FileOpError;
use super::paths::{file_type, DestRoot, Owner};
use super::source::{join, SourceTree};

pub(crate) fn is_remote(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// BuildKit treats these as git sources (`gitutil`): git transports, `git@host:` and
/// http(s) URLs of a `.git` repository (optionally with a `#ref`).
pub(crate) fn is_git(src: &str) -> bool {
    let lower = src.to_ascii_lowercase();
    if lower.starts_with("git://") || lower.starts_with("git@") || lower.starts_with("ssh://") {
        return true;
    }
    if is_remote(&lower) {
        let path = lower.split(['#', '?']).next().unwrap_or_default();
        return path.ends_with(".git") || path.ends_with(".git/");
    }
    false
}

pub(crate) fn run(
    action: &AddAction,
    source: &SourceTree,
    dest_root: &Path,
    scratch: &Path,
    git_commits: &std::collections::BTreeMap<String, String>,
) -> Result<(), FileOpError> {
    let git = action.copy.sources.iter().any(|s| is_git(s));
    if git && action.copy.sources.len() > 1 {
        return Err(FileOpError::Unsupported(
            "ADD of a git repository takes one source".into(),
        ));
    }
    // The destination rule covers all sources and heredocs together.
    copy::prepare(&action.copy, "ADD", dest_root)?;
    if git {
        let src = &action.copy.sources[0];
        let commit = match git_commits.get(src) {
            Some(commit) => commit.clone(),
            None => super::git::resolve(src)?,
        };
        if let Some(expected) = &action.checksum {
            if !commit.starts_with(&expected.to_ascii_lowercase()) || expected.len() < 7 {
                return Err(FileOpError::ChecksumMismatch {
                    url: src.clone(),
                    expected: expected.clone(),
                    actual: commit,
                });
            }
        }
        let keep = action.keep_git_dir.unwrap_or(false);
        return super::git::add(&action.copy, src, &commit, keep, dest_root, scratch);
    }
    let checksum = action.checksum.as_deref().map(parse_checksum).transpose()?;
    let unpack_local = action.unpack != Some(false);
    for src in &action.copy.sources {
        let one = CopyAction {
            sources: vec![src.clone()],
            heredocs: Vec::new(),
            ..action.copy.clone()
        };
        if is_remote(src) {
            add_url(
                &one,
                src,
                checksum.as_deref(),
                action.unpack == Some(true),
                dest_root,
                scratch,
            )?;
        } else {
            copy::run(
                &one,
                "ADD",
                source,
                dest_root,
                |_| false,
                |root, prepared, sel| {
                    if !unpack_local {
                        return Ok(false);
                    }
                    try_unpack(root, prepared, sel, &one.dest, source)
                },
            )?;
        }
    }
    if !action.copy.heredocs.is_empty() {
        let docs = CopyAction {
            sources: Vec::new(),
            ..action.copy.clone()
        };
        copy::run(
            &docs,
            "ADD",
            source,
            dest_root,
            |_| false,
            |_, _, _| Ok(false),
        )?;
    }
    Ok(())
}

fn try_unpack(
    root: &DestRoot,
    prepared: &Prepared,
    sel: &Selected,
    dest: &str,
    source: &SourceTree,
) -> Result<bool, FileOpError> {
    let top = &sel.entries[0];
    if !top.meta.file_type().is_file() || !is_archive(&top.host) {
        return Ok(false);
    }
    let shown = super::source::rel_string(&sel.top.matched);
    let _ = source;
    extract(root, &top.host, dest, prepared.owner, &shown)?;
    Ok(true)
}

/// The decompressed stream of an archive file (moby `DecompressStream`, by magic bytes).
fn decompressed(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(256 << 10, File::open(path)?);
    let head = r.fill_buf()?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// `isArchivePath`: the first tar header of the decompressed content reads.
pub(crate) fn is_archive(path: &Path) -> bool {
    let Ok(r) = decompressed(path) else {
        return false;
    };
    let mut ar = tar::Archive::new(r);
    let Ok(mut entries) = ar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// moby `archive.Untar` of `archive` into `dest` (created 0755 with `owner` when missing).
pub(crate) fn extract(
    root: &DestRoot,
    archive: &Path,
    dest: &str,
    owner: Option<Owner>,
    shown: &str,
) -> Result<(), FileOpError> {
    let (_, comps) = root.mkdir_all(dest, 0o755, owner)?;
    let dir = join(&root.path, &comps);
    let fail = |entry: &str, cause: String| FileOpError::Archive {
        source_path: shown.to_string(),
        entry: entry.to_string(),
        cause,
    };
    let jail = Root::open(&dir).map_err(|e| fail("", e.to_string()))?;
    let r = decompressed(archive).map_err(|e| fail("", e.to_string()))?;
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<(PathBuf, Timestamps)> = Vec::new();
    let entries = ar.entries().map_err(|e| fail("", e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail("", e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader || kind == tar::EntryType::XHeader {
            continue;
        }
        // filepath.Clean + Join(dest, name): absolute names are relative to dest, `..` that
        // climbs out is a breakout.
        let trimmed: &[u8] = {
            let mut t = raw.as_slice();
            while let Some(rest) = t.strip_prefix(b"/") {
                t = rest;
            }
            t
        };
        let comps = if trimmed.is_empty() {
            Vec::new()
        } else {
            normalize(trimmed)
                .map_err(|_| fail(&name, format!("{name:?} is outside of {dest:?}")))?
        };
        let Some((last, parents)) = comps.split_last() else {
            // "." : the destination itself is kept as it is.
            continue;
        };
        let parent = jail
            .resolve_dir(parents, Missing::Create, Symlinks::FollowInRoot)
            .map_err(|e| fail(&name, e.to_string()))?;
        let pfd = parent.fd.as_fd();
        let existing = rustix::fs::statat(pfd, last, AtFlags::SYMLINK_NOFOLLOW).ok();
        let is_dir_entry = kind == tar::EntryType::Directory;
        if let Some(st) = &existing {
            if !(file_type(st) == FileType::Directory && is_dir_entry) {
                remove_all_at(pfd, last)
                    .map_err(|e| fail(&name, format!("removing the existing entry: {e}")))?;
            }
        }
        let hdr = entry.header().clone();
        // Go reads an empty numeric field as 0.
        let mode = hdr.mode().unwrap_or(0) & 0o7777;
        let mtime = hdr.mtime().unwrap_or(0) as i64;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        let io = |e: io::Error| fail(&name, e.to_string());
        let errno = |op: &str, e: rustix::io::Errno| fail(&name, format!("{op}: {e}"));
        let mut set_mode = true;
        let mut set_times = true;
        match kind {
            tar::EntryType::Directory => {
                if existing.is_none_or(|st| file_type(&st) != FileType::Directory) {
                    rustix::fs::mkdirat(pfd, last, Mode::from_raw_mode(0o700))
                        .map_err(|e| errno("mkdir", e))?;
                }
                set_times = false;
                let mut p: PathBuf = parent.rel.clone();
                p.push(last);
                dirs.push((p, times_copy(&times)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    pfd,
                    last,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| errno("create", e))?;
                let mut f = File::from(fd);
                io::copy(&mut entry, &mut f).map_err(io)?;
                f.flush().map_err(io)?;
            }
            tar::EntryType::Symlink => {
                let target = hdr.link_name_bytes().unwrap_or_default().into_owned();
                // Join(Dir(path), linkname) must stay under dest (absolute targets do).
                let mut base = parents.to_vec();
                if target.first() == Some(&b'/') {
                    base.clear();
                }
                if lexical_escapes(&base, &target) {
                    return Err(fail(
                        &name,
                        format!(
                            "invalid symlink {:?} -> {:?}",
                            name,
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
                rustix::fs::symlinkat(OsStr::from_bytes(&target), pfd, last)
                    .map_err(|e| errno("symlink", e))?;
                set_mode = false;
            }
            tar::EntryType::Link => {
                let target = hdr.link_name_bytes().unwrap_or_default().into_owned();
                let mut t = target.as_slice();
                while let Some(rest) = t.strip_prefix(b"/") {
                    t = rest;
                }
                let tcomps = normalize(t).map_err(|_| {
                    fail(
                        &name,
                        format!(
                            "invalid hardlink {:?} -> {:?}",
                            name,
                            String::from_utf8_lossy(&target)
                        ),
                    )
                })?;
                let Some((tlast, tparents)) = tcomps.split_last() else {
                    return Err(fail(&name, "hardlink to the destination directory".into()));
                };
                let tdir = jail
                    .resolve_dir(tparents, Missing::Fail, Symlinks::FollowInRoot)
                    .map_err(|e| fail(&name, format!("hardlink target: {e}")))?;
                rustix::fs::linkat(tdir.fd.as_fd(), tlast, pfd, last, AtFlags::empty())
                    .map_err(|e| errno("link", e))?;
                let target_is_link =
                    rustix::fs::statat(tdir.fd.as_fd(), tlast, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| file_type(&st) == FileType::Symlink);
                set_mode = !target_is_link;
                set_times = !target_is_link;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ft, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    k => {
                        let major = hdr.device_major().ok().flatten().unwrap_or(0);
                        let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if k == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                match rustix::fs::mknodat(pfd, last, ft, Mode::from_raw_mode(0o600), dev) {
                    Ok(()) => {}
                    // moby skips device nodes where it may not make them (user namespaces).
                    Err(rustix::io::Errno::PERM) if ft != FileType::Fifo => continue,
                    Err(e) => return Err(errno("mknod", e)),
                }
            }
            other => {
                return Err(fail(
                    &name,
                    format!("unhandled tar header type {:?}", other.as_byte() as char),
                ));
            }
        }
        if root.privileged {
            let uid = hdr.uid().unwrap_or(0) as u32;
            let gid = hdr.gid().unwrap_or(0) as u32;
            rustix::fs::chownat(
                pfd,
                last,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| errno("lchown", e))?;
        }
        if set_mode {
            rustix::fs::chmodat(pfd, last, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| errno("chmod", e))?;
        }
        if set_times {
            rustix::fs::utimensat(pfd, last, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| errno("utimes", e))?;
        }
    }
    for (rel, times) in dirs.iter().rev() {
        let comps: Vec<OsString> = rel.iter().map(|c| c.to_owned()).collect();
        if let Ok(d) = jail.resolve_dir(&comps, Missing::Fail, Symlinks::Refuse) {
            let _ = rustix::fs::utimensat(d.fd.as_fd(), ".", times, AtFlags::empty());
        }
    }
    Ok(())
}

fn times_copy(t: &Timestamps) -> Timestamps {
    Timestamps {
        last_access: t.last_access,
        last_modification: t.last_modification,
    }
}

/// Whether `base` + `target` (slash path) climbs above the root lexically.
fn lexical_escapes(base: &[OsString], target: &[u8]) -> bool {
    let mut depth = base.len();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

fn parse_checksum(s: &str) -> Result<String, FileOpError> {
    let hex = s
        .strip_prefix("sha256:")
        .ok_or_else(|| FileOpError::BadChecksum(s.to_string()))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FileOpError::BadChecksum(s.to_string()));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// BuildKit's file name for a downloaded URL: the base name of its path.
fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." => b.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

fn add_url(
    one: &CopyAction,
    url: &str,
    checksum: Option<&str>,
    unpack: bool,
    dest_root: &Path,
    scratch: &Path,
) -> Result<(), FileOpError> {
    let dl = |cause: String| FileOpError::Download {
        url: url.to_string(),
        cause,
    };
    let dir = tempfile::Builder::new()
        .prefix("add-url-")
        .tempdir_in(scratch)
        .map_err(|e| dl(format!("making a scratch directory: {e}")))?;
    let name = url_file_name(url);
    let file = dir.path().join(&name);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| dl(e.to_string()))?;
    let modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::timestamp::parse_http_date);
    let mut body = resp.into_body().into_reader();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| dl(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = body.read(&mut buf).map_err(|e| dl(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| dl(e.to_string()))?;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = checksum {
        if expected != actual {
            return Err(FileOpError::ChecksumMismatch {
                url: url.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    rustix::fs::fchmod(&out, Mode::from_raw_mode(0o600)).map_err(|e| dl(e.to_string()))?;
    let t = modified.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let ts = Timespec {
        tv_sec: t,
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        &out,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )
    .map_err(|e| dl(e.to_string()))?;
    drop(out);
    let tree = SourceTree {
        root: dir.path(),
        ignore: None,
        // Downloaded as root: owned 0:0 unless --chown.
        is_context: true,
    };
    let local = CopyAction {
        sources: vec![name],
        exclude: Vec::new(),
        parents: false,
        ..one.clone()
    };
    copy::run(
        &local,
        "ADD",
        &tree,
        dest_root,
        |_| false,
        |root, prepared, sel| {
            if unpack {
                try_unpack(root, prepared, sel, &local.dest, &tree)
            } else {
                Ok(false)
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names() {
        assert_eq!(
            url_file_name("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_file_name("https://example.com/"), "__unnamed__");
        assert_eq!(url_file_name("https://example.com"), "__unnamed__");
        assert!(is_git("https://github.com/moby/buildkit.git#v0.12"));
        assert!(is_git("git@github.com:moby/buildkit.git"));
        assert!(!is_git("https://example.com/file.tar.gz"));
    }
}
