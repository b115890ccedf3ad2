//! ADD of a git repository, as BuildKit's git source does it, with the system `git`:
//! `URL[#REF[:SUBDIR]]` (`https://…/repo.git`, `git@host:repo.git`, `git://`, `ssh://`).
//!
//! The reference (a branch, a tag or a commit id; default the remote's HEAD) is resolved to a
//! commit before the step (`git ls-remote`), and that commit is what the step's key holds and
//! what is checked out, so a branch that moves makes the step run again and never gives the
//! old content under the new key. The checkout (its `.git` removed unless `--keep-git-dir`)
//! is copied into the destination directory with COPY's rules, owned 0:0 unless `--chown`.
//! `--checksum` names the commit the reference must resolve to.

use std::path::Path;
use std::process::{Command, Stdio};

use rbuild_frontend::graph::CopyAction;

use super::error::FileOpError;
use super::source::SourceTree;

/// A git source split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GitSource {
    pub remote: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

pub(crate) fn parse(src: &str) -> GitSource {
    let (remote, fragment) = match src.split_once('#') {
        Some((remote, fragment)) => (remote, Some(fragment)),
        None => (src, None),
    };
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(f) => match f.split_once(':') {
            Some((r, s)) => (Some(r), Some(s)),
            None => (Some(f), None),
        },
    };
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    GitSource {
        remote: remote.to_string(),
        reference: nonempty(reference),
        subdir: nonempty(subdir.map(|s| s.trim_matches('/'))),
    }
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `src`'s reference names at its remote now.
pub(crate) fn resolve(src: &str) -> Result<String, FileOpError> {
    let git = parse(src);
    let wanted = git.reference.clone().unwrap_or_else(|| "HEAD".into());
    if is_commit_id(&wanted) {
        return Ok(wanted.to_ascii_lowercase());
    }
    if wanted.starts_with('-') || git.remote.starts_with('-') {
        return Err(git_error(
            src,
            "a reference or remote may not start with '-'".into(),
        ));
    }
    let listed = run_git(
        None,
        &["ls-remote", "--end-of-options", &git.remote, &wanted],
        src,
    )?;
    // Exact names first: `v1` must not match `refs/tags/v1.2`; a peeled tag (`^{}`) names the
    // commit an annotated tag points at.
    let mut best: Option<(u8, String)> = None;
    for line in listed.lines() {
        let Some((id, name)) = line.split_once('\t') else {
            continue;
        };
        let rank = if name == wanted {
            0
        } else if name == format!("refs/tags/{wanted}^{{}}") {
            1
        } else if name == format!("refs/heads/{wanted}") {
            2
        } else if name == format!("refs/tags/{wanted}") {
            3
        } else {
            continue;
        };
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, id.to_string()));
        }
    }
    best.map(|(_, id)| id)
        .ok_or_else(|| git_error(src, format!("no branch or tag {wanted:?} at the remote")))
}

/// Checks out `commit` of `src` and copies it (or its subdirectory) into `one.dest`.
pub(crate) fn add(
    one: &CopyAction,
    src: &str,
    commit: &str,
    keep_git_dir: bool,
    dest_root: &Path,
    scratch: &Path,
) -> Result<(), FileOpError> {
    let git = parse(src);
    let dir = tempfile::Builder::new()
        .prefix("add-git-")
        .tempdir_in(scratch)
        .map_err(|e| git_error(src, format!("making a scratch directory: {e}")))?;
    let repo = dir.path().join("repo");
    let repo_str = repo.to_string_lossy().into_owned();
    run_git(None, &["init", "-q", &repo_str], src)?;
    // The branch or tag by name (a commit id is fetched as itself).
    let wanted = git
        .reference
        .as_deref()
        .filter(|r| !is_commit_id(r))
        .unwrap_or(commit);
    let fetched = run_git(
        Some(&repo),
        &[
            "fetch",
            "-q",
            "--depth",
            "1",
            "--end-of-options",
            &git.remote,
            wanted,
        ],
        src,
    );
    if fetched.is_err() {
        // A server that will not hand out a commit by id: everything, then the commit.
        run_git(
            Some(&repo),
            &[
                "fetch",
                "-q",
                "--end-of-options",
                &git.remote,
                "+refs/*:refs/fetched/*",
            ],
            src,
        )?;
    }
    run_git(Some(&repo), &["checkout", "-q", "--detach", commit], src).map_err(|_| {
        git_error(
            src,
            format!("commit {commit} is not what the remote has now (it moved during the build?)"),
        )
    })?;
    if !keep_git_dir {
        let dot_git = repo.join(".git");
        std::fs::remove_dir_all(&dot_git)
            .map_err(|e| git_error(src, format!("removing .git: {e}")))?;
    }
    // Inside the checkout: `..` and committed symlinks (`sub -> /`) never reach the host.
    let root = match &git.subdir {
        Some(sub) => super::inside(&repo, sub)
            .map_err(|e| git_error(src, format!("resolving {sub}: {e}")))?,
        None => repo.clone(),
    };
    if !root.is_dir() {
        return Err(git_error(
            src,
            format!(
                "{} is not a directory of the repository",
                git.subdir.unwrap_or_default()
            ),
        ));
    }
    let tree = SourceTree {
        root: &root,
        ignore: None,
        // Checked out as root: owned 0:0 unless --chown, as context files are.
        is_context: true,
    };
    // The repository's contents go into the destination, a directory.
    let into = CopyAction {
        sources: vec![".".into()],
        dest: format!("{}/", one.dest.trim_end_matches('/')),
        ..one.clone()
    };
    super::copy::run(
        &into,
        "ADD",
        &tree,
        dest_root,
        |_| false,
        |_, _, _| Ok(false),
    )
}

fn run_git(dir: Option<&Path>, args: &[&str], src: &str) -> Result<String, FileOpError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    let out = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| git_error(src, format!("running git (is it installed?): {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(git_error(src, format!("git {}: {}", args[0], said.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names the source without the credentials a URL may carry (`https://user:token@host/…`).
fn git_error(src: &str, cause: String) -> FileOpError {
    FileOpError::Download {
        url: without_credentials(src),
        cause,
    }
}

fn without_credentials(src: &str) -> String {
    match src.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) if !user.contains('/') => format!("{scheme}://***@{host}"),
            _ => src.to_string(),
        },
        None => src.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_remote_reference_and_subdirectory() {
        assert_eq!(
            parse("https://github.com/moby/buildkit.git#v0.12:docs/"),
            GitSource {
                remote: "https://github.com/moby/buildkit.git".into(),
                reference: Some("v0.12".into()),
                subdir: Some("docs".into()),
            }
        );
        assert_eq!(
            parse("git@github.com:moby/buildkit.git"),
            GitSource {
                remote: "git@github.com:moby/buildkit.git".into(),
                reference: None,
                subdir: None,
            }
        );
        assert_eq!(parse("git://h/r.git#:sub").subdir.as_deref(), Some("sub"));
        assert_eq!(parse("git://h/r.git#:sub").reference, None);
        assert_eq!(
            without_credentials("https://me:t0ken@host/r.git#main"),
            "https://***@host/r.git#main"
        );
        assert_eq!(without_credentials("git@host:r.git"), "git@host:r.git");
    }
}
