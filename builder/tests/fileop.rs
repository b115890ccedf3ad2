//! COPY / ADD / WORKDIR mkdir against real directories: Docker's path rules, ownership and
//! modes, links, .dockerignore, --exclude, --parents, heredocs, archives, URLs, and writes
//! through hostile destination symlinks.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rbuild::fileop::{self, FileOpError, IgnoreRules, SourceTree};
use rbuild_frontend::graph::{AddAction, CopyAction};
use rbuild_frontend::parser::Heredoc;

fn act(sources: &[&str], dest: &str) -> CopyAction {
    CopyAction {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        from: None,
        user: String::new(),
        heredocs: Vec::new(),
    }
}

fn add_act(copy: CopyAction) -> AddAction {
    AddAction {
        copy,
        checksum: None,
        keep_git_dir: None,
        unpack: None,
    }
}

fn ctx(root: &Path) -> SourceTree<'_> {
    SourceTree {
        root,
        ignore: None,
        is_context: true,
    }
}

fn write(root: &Path, rel: &str, body: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

/// Every entry below `root`: "d", "f:<content>" or "l:<target>".
fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(rel, format!("l:{}", fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.insert(rel, "d".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, format!("f:{}", fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn context() -> tempfile::TempDir {
    let c = tempfile::tempdir().unwrap();
    write(c.path(), "a.txt", "A");
    write(c.path(), "dir/b.txt", "B");
    write(c.path(), "dir/sub/c.txt", "C");
    write(c.path(), "x1.log", "1");
    write(c.path(), "x2.log", "2");
    c
}

fn require_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} needs root, and CI=true requires it to run");
    }
    eprintln!("skipping {what}: needs root (chown)");
    false
}

#[test]
fn path_rules() {
    let c = context();
    type Case = (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static [(&'static str, &'static str)],
    );
    let cases: &[Case] = &[
        ("file to file", &["a.txt"], "/out", &[("out", "f:A")]),
        (
            "file into dir/",
            &["a.txt"],
            "/out/",
            &[("out/a.txt", "f:A")],
        ),
        (
            "dir contents",
            &["dir"],
            "/out",
            &[("out/b.txt", "f:B"), ("out/sub/c.txt", "f:C")],
        ),
        (
            "dir contents, trailing slash",
            &["dir/"],
            "/out/",
            &[("out/b.txt", "f:B"), ("out/sub", "d")],
        ),
        (
            "several sources",
            &["a.txt", "dir"],
            "/out/",
            &[("out/a.txt", "f:A"), ("out/b.txt", "f:B")],
        ),
        (
            "wildcard",
            &["*.log"],
            "/logs/",
            &[("logs/x1.log", "f:1"), ("logs/x2.log", "f:2")],
        ),
        (
            "wildcard in a dir",
            &["dir/*.txt"],
            "/w/",
            &[("w/b.txt", "f:B")],
        ),
        (
            "parents of dest created",
            &["a.txt"],
            "/deep/er/f",
            &[("deep/er/f", "f:A")],
        ),
        (
            "leading slash and .. clamp",
            &["/../dir/../a.txt"],
            "/r",
            &[("r", "f:A")],
        ),
        (
            "into existing dir",
            &["a.txt"],
            "/exist",
            &[("exist/a.txt", "f:A")],
        ),
        ("overwrite a file", &["a.txt"], "/over", &[("over", "f:A")]),
        ("wildcard matching nothing", &["*.none"], "/none/", &[]),
    ];
    for (name, sources, dest, expect) in cases {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("exist")).unwrap();
        write(d.path(), "over", "old");
        fileop::copy(&act(sources, dest), &ctx(c.path()), d.path())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = listing(d.path());
        for (path, what) in *expect {
            assert_eq!(
                got.get(*path).map(String::as_str),
                Some(*what),
                "{name}: {path} in {got:?}"
            );
        }
        if sources == &["*.none"] {
            assert!(
                !d.path().join("none").exists(),
                "{name}: empty wildcard copies nothing"
            );
        }
        if sources == &["dir"] {
            assert!(
                !got.contains_key("out/dir"),
                "{name}: a dir's contents, not the dir"
            );
        }
    }
}

#[test]
fn path_errors() {
    let c = context();
    let d = tempfile::tempdir().unwrap();
    let e = fileop::copy(&act(&["a.txt", "dir"], "/out"), &ctx(c.path()), d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "When using COPY with more than one source file, the destination must be a directory and end with a /"
    );
    let e = fileop::copy(&act(&["missing.txt"], "/m"), &ctx(c.path()), d.path()).unwrap_err();
    assert_eq!(e.to_string(), "\"missing.txt\": not found");
    fs::create_dir(d.path().join("isdir")).unwrap();
    fs::create_dir(d.path().join("isdir/a.txt")).unwrap();
    let e = fileop::copy(&act(&["a.txt"], "/isdir/"), &ctx(c.path()), d.path()).unwrap_err();
    assert!(matches!(e, FileOpError::ReplaceDirWithFile(_)), "{e}");
    write(d.path(), "file", "x");
    let e = fileop::copy(&act(&["dir"], "/file"), &ctx(c.path()), d.path()).unwrap_err();
    assert!(matches!(e, FileOpError::NotADirectory(_)), "{e}");
}

#[test]
fn selected_sources_follow_the_rules() {
    let c = context();
    let mut a = act(&["dir", "*.log"], "/o/");
    a.exclude = vec!["sub".into()];
    let got: Vec<String> = fileop::selected_sources(&a, &ctx(c.path()))
        .unwrap()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, ["dir", "dir/b.txt", "x1.log", "x2.log"]);
}

#[test]
fn dockerignore_excludes_reincludes_and_names_the_line() {
    let c = tempfile::tempdir().unwrap();
    write(c.path(), "secret.txt", "s");
    write(c.path(), "keep.txt", "k");
    write(c.path(), "app.rs", "fn");
    write(c.path(), "logs/x.txt", "x");
    let rules =
        IgnoreRules::parse(b"# comment\n\n*.txt\n!keep.txt\nlogs\n", ".dockerignore").unwrap();
    let tree = SourceTree {
        root: c.path(),
        ignore: Some(&rules),
        is_context: true,
    };
    let d = tempfile::tempdir().unwrap();
    fileop::copy(&act(&["."], "/app/"), &tree, d.path()).unwrap();
    let got = listing(d.path());
    assert!(
        got.contains_key("app/keep.txt") && got.contains_key("app/app.rs"),
        "{got:?}"
    );
    assert!(
        !got.contains_key("app/secret.txt") && !got.contains_key("app/logs"),
        "{got:?}"
    );
    let e = fileop::copy(&act(&["secret.txt"], "/s"), &tree, d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"secret.txt\" is excluded by .dockerignore line 3 (\"*.txt\")"
    );
    // A wildcard simply does not see ignored files.
    fileop::copy(&act(&["*.txt"], "/w/"), &tree, d.path()).unwrap();
    assert!(d.path().join("w/keep.txt").exists() && !d.path().join("w/secret.txt").exists());
}

#[test]
fn exclude_and_parents() {
    let c = context();
    let d = tempfile::tempdir().unwrap();
    let mut a = act(&["dir"], "/e/");
    a.exclude = vec!["*.txt".into()];
    fileop::copy(&a, &ctx(c.path()), d.path()).unwrap();
    let got = listing(d.path());
    assert!(!got.contains_key("e/b.txt"), "{got:?}");
    assert_eq!(got.get("e/sub/c.txt").map(String::as_str), Some("f:C"));

    let mut p = act(&["dir/sub/c.txt", "a.txt"], "/p/");
    p.parents = true;
    fileop::copy(&p, &ctx(c.path()), d.path()).unwrap();
    let mut p = act(&["dir/./sub/c.txt", "dir/./sub"], "/q/");
    p.parents = true;
    fileop::copy(&p, &ctx(c.path()), d.path()).unwrap();
    let got = listing(d.path());
    assert_eq!(
        got.get("p/dir/sub/c.txt").map(String::as_str),
        Some("f:C"),
        "{got:?}"
    );
    assert_eq!(got.get("p/a.txt").map(String::as_str), Some("f:A"));
    assert_eq!(
        got.get("q/sub/c.txt").map(String::as_str),
        Some("f:C"),
        "{got:?}"
    );
    assert!(!got.contains_key("q/dir"));
}

#[test]
fn heredoc_file() {
    let c = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut a = act(&[], "/etc/greeting");
    a.heredocs = vec![Heredoc {
        name: "EOF".into(),
        file_descriptor: 0,
        expand: true,
        chomp: true,
        content: "\thello\n\tworld\n".into(),
    }];
    fileop::copy(&a, &ctx(c.path()), d.path()).unwrap();
    let p = d.path().join("etc/greeting");
    assert_eq!(fs::read_to_string(&p).unwrap(), "hello\nworld\n");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(
        fs::metadata(d.path().join("etc")).unwrap().mode() & 0o7777,
        0o755
    );
}

#[test]
fn links_modes_and_times_are_kept() {
    let c = tempfile::tempdir().unwrap();
    write(c.path(), "t/f", "data");
    fs::hard_link(c.path().join("t/f"), c.path().join("t/h")).unwrap();
    std::os::unix::fs::symlink("f", c.path().join("t/s")).unwrap();
    std::os::unix::fs::symlink("/nowhere", c.path().join("t/dangling")).unwrap();
    fs::set_permissions(c.path().join("t/f"), fs::Permissions::from_mode(0o640)).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(c.path().join("t/f"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    fileop::copy(&act(&["t"], "/o"), &ctx(c.path()), d.path()).unwrap();
    let o = d.path().join("o");
    assert_eq!(fs::read_link(o.join("s")).unwrap(), Path::new("f"));
    assert_eq!(
        fs::read_link(o.join("dangling")).unwrap(),
        Path::new("/nowhere")
    );
    let f = fs::metadata(o.join("f")).unwrap();
    let h = fs::metadata(o.join("h")).unwrap();
    assert_eq!(f.ino(), h.ino(), "hardlink kept");
    assert_eq!(f.nlink(), 2);
    assert_eq!(f.mode() & 0o7777, 0o640);
    assert_eq!(f.mtime(), 1_000_000_000);
    // A source that is a symlink is followed: its target's content under the link's name.
    fileop::copy(&act(&["t/s"], "/via/"), &ctx(c.path()), d.path()).unwrap();
    assert_eq!(fs::read_to_string(d.path().join("via/s")).unwrap(), "data");
    assert!(!fs::symlink_metadata(d.path().join("via/s"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn chmod_octal_and_symbolic() {
    let c = context();
    fs::set_permissions(c.path().join("a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    let d = tempfile::tempdir().unwrap();
    for (mode, file, want) in [
        ("0751", "/m1", 0o751),
        ("u+x,g-r", "/m2", 0o704),
        ("a=rX", "/m3", 0o444),
    ] {
        let mut a = act(&["a.txt"], file);
        a.chmod = Some(mode.into());
        fileop::copy(&a, &ctx(c.path()), d.path()).unwrap();
        let got = fs::metadata(d.path().join(&file[1..])).unwrap().mode() & 0o7777;
        assert_eq!(got, want, "--chmod={mode}");
    }
    let mut a = act(&["dir"], "/md");
    a.chmod = Some("a=rX".into());
    fileop::copy(&a, &ctx(c.path()), d.path()).unwrap();
    assert_eq!(
        fs::metadata(d.path().join("md/sub")).unwrap().mode() & 0o7777,
        0o555
    );
    let mut a = act(&["a.txt"], "/bad");
    a.chmod = Some("9z".into());
    assert!(matches!(
        fileop::copy(&a, &ctx(c.path()), d.path()),
        Err(FileOpError::BadChmod(_))
    ));
}

#[test]
fn chown_by_name_and_id_and_default_owners() {
    if !require_root("chown_by_name_and_id_and_default_owners") {
        return;
    }
    let c = context();
    std::os::unix::fs::chown(c.path().join("a.txt"), Some(4321), Some(4321)).unwrap();
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    write(
        d.path(),
        "etc/group",
        "root:x:0:\napp:x:1000:\nstaff:x:50:\n",
    );
    let ids = |p: &str| {
        let m = fs::symlink_metadata(d.path().join(p)).unwrap();
        (m.uid(), m.gid())
    };
    let mut a = act(&["dir"], "/byname/new/");
    a.chown = Some("app".into());
    fileop::copy(&a, &ctx(c.path()), d.path()).unwrap();
    assert_eq!(ids("byname/new/b.txt"), (1000, 1000));
    assert_eq!(ids("byname/new/sub"), (1000, 1000));
    assert_eq!(ids("byname/new"), (1000, 1000), "created dest dir chowned");
    assert_eq!(ids("byname"), (1000, 1000), "created parents chowned");
    let mut a = act(&["a.txt"], "/byid");
    a.chown = Some("1234:staff".into());
    fileop::copy(&a, &ctx(c.path()), d.path()).unwrap();
    assert_eq!(ids("byid"), (1234, 50));
    // Context files are root's; another stage's keep their owner.
    fileop::copy(&act(&["a.txt"], "/ctx"), &ctx(c.path()), d.path()).unwrap();
    assert_eq!(ids("ctx"), (0, 0));
    let stage = SourceTree {
        root: c.path(),
        ignore: None,
        is_context: false,
    };
    fileop::copy(&act(&["a.txt"], "/stage"), &stage, d.path()).unwrap();
    assert_eq!(ids("stage"), (4321, 4321));
    let mut a = act(&["a.txt"], "/nouser");
    a.chown = Some("nobody-here".into());
    let e = fileop::copy(&a, &ctx(c.path()), d.path()).unwrap_err();
    assert!(e.to_string().contains("nobody-here"), "{e}");
    // WORKDIR with USER: new directories belong to the user, existing ones are untouched.
    fileop::mkdir("/home/app/work", "app", d.path()).unwrap();
    assert_eq!(ids("home/app/work"), (1000, 1000));
    assert_eq!(ids("etc"), (0, 0));
}

#[test]
fn workdir_mkdir() {
    let d = tempfile::tempdir().unwrap();
    fileop::mkdir("/a/b/c", "", d.path()).unwrap();
    for p in ["a", "a/b", "a/b/c"] {
        assert_eq!(
            fs::metadata(d.path().join(p)).unwrap().mode() & 0o7777,
            0o755,
            "{p}"
        );
    }
    fileop::mkdir("/a/b/c", "", d.path()).unwrap();
    write(d.path(), "file", "x");
    assert!(fileop::mkdir("/file/sub", "", d.path()).is_err());
}

#[test]
fn destination_symlinks_stay_inside_the_root() {
    let c = context();
    let outer = tempfile::tempdir().unwrap();
    let d = outer.path().join("root");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink("/", d.join("abs")).unwrap();
    std::os::unix::fs::symlink("..", d.join("up")).unwrap();
    std::os::unix::fs::symlink("../../..", d.join("far")).unwrap();
    std::os::unix::fs::symlink("/etc", d.join("etc-link")).unwrap();
    for (dest, lands) in [
        ("/abs/x1", "x1"),
        ("/up/x2", "x2"),
        ("/far/x3", "x3"),
        ("/up/../../x4", "x4"),
        ("/etc-link/", "etc/a.txt"),
    ] {
        fileop::copy(&act(&["a.txt"], dest), &ctx(c.path()), &d)
            .unwrap_or_else(|e| panic!("{dest}: {e}"));
        assert_eq!(fs::read_to_string(d.join(lands)).unwrap(), "A", "{dest}");
    }
    fileop::copy(&act(&["dir"], "/far/"), &ctx(c.path()), &d).unwrap();
    assert!(d.join("b.txt").exists());
    let outside: Vec<_> = fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["root"], "nothing written beside the root");
}

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_mtime(1_500_000_000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_uid(1001);
    h.set_gid(1002);
    h.set_mtime(1_600_000_000);
    h.set_size(5);
    b.append_data(&mut h, "pkg/bin", &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "pkg/link", "bin").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    // As tar tools write it: a hardlink header carries the file's mode and mtime.
    h.set_mode(0o755);
    h.set_uid(1001);
    h.set_gid(1002);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    b.append_link(&mut h, "pkg/hard", "pkg/bin").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h, "pkg/.wh.kept", &b"wh!"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h, "over", &b"new"[..]).unwrap();
    b.into_inner().unwrap()
}

fn compress(kind: &str, raw: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => raw.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(raw, 3).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn add_extracts_archives_by_content() {
    let raw = tar_bytes();
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let c = tempfile::tempdir().unwrap();
        // The name says nothing: detection is by content.
        fs::write(c.path().join("archive.bin"), compress(kind, &raw)).unwrap();
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "x/over", "old");
        let scratch = tempfile::tempdir().unwrap();
        fileop::add(
            &add_act(act(&["archive.bin"], "/x")),
            &ctx(c.path()),
            d.path(),
            scratch.path(),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let x = d.path().join("x");
        assert_eq!(
            fs::read_to_string(x.join("pkg/bin")).unwrap(),
            "hello",
            "{kind}"
        );
        assert_eq!(fs::read_link(x.join("pkg/link")).unwrap(), Path::new("bin"));
        let bin = fs::metadata(x.join("pkg/bin")).unwrap();
        assert_eq!(bin.ino(), fs::metadata(x.join("pkg/hard")).unwrap().ino());
        assert_eq!(bin.mode() & 0o7777, 0o755);
        assert_eq!(bin.mtime(), 1_600_000_000);
        if rustix::process::geteuid().is_root() {
            assert_eq!(
                (bin.uid(), bin.gid()),
                (1001, 1002),
                "owner from the archive"
            );
        }
        let pkg = fs::metadata(x.join("pkg")).unwrap();
        assert_eq!((pkg.mode() & 0o7777, pkg.mtime()), (0o750, 1_500_000_000));
        assert_eq!(
            fs::read_to_string(x.join("pkg/.wh.kept")).unwrap(),
            "wh!",
            "no whiteout semantics"
        );
        assert_eq!(
            fs::read_to_string(x.join("over")).unwrap(),
            "new",
            "existing files replaced"
        );
        assert!(!x.join("archive.bin").exists());
    }
}

#[test]
fn add_non_archive_unpack_false_and_hostile_archives() {
    let c = tempfile::tempdir().unwrap();
    write(c.path(), "plain.txt", "just text");
    fs::write(c.path().join("a.tar.gz"), compress("gz", &tar_bytes())).unwrap();
    let d = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    fileop::add(
        &add_act(act(&["plain.txt"], "/p")),
        &ctx(c.path()),
        d.path(),
        s.path(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(d.path().join("p")).unwrap(), "just text");
    let mut a = add_act(act(&["a.tar.gz"], "/keep/"));
    a.unpack = Some(false);
    fileop::add(&a, &ctx(c.path()), d.path(), s.path(), &Default::default()).unwrap();
    assert!(d.path().join("keep/a.tar.gz").is_file());

    // A `..` entry and a symlink leaving the destination are refused.
    for (name, link) in [("../escape", None), ("evil", Some("../../../etc"))] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        match link {
            None => {
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            Some(l) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, name, l).unwrap();
            }
        }
        fs::write(c.path().join("bad.tar"), b.into_inner().unwrap()).unwrap();
        let e = fileop::add(
            &add_act(act(&["bad.tar"], "/bad/")),
            &ctx(c.path()),
            d.path(),
            s.path(),
            &Default::default(),
        )
        .unwrap_err();
        assert!(matches!(e, FileOpError::Archive { .. }), "{name}: {e}");
    }
    assert!(!d.path().parent().unwrap().join("escape").exists());

    // A git source nobody serves: an error naming it and what git said.
    let unreachable = "https://127.0.0.1:1/none.git";
    let e = fileop::add(
        &add_act(act(&[unreachable], "/src")),
        &ctx(c.path()),
        d.path(),
        s.path(),
        &Default::default(),
    )
    .unwrap_err();
    let said = e.to_string();
    assert!(
        said.contains(unreachable) && said.contains("git ls-remote"),
        "{said}"
    );
}

/// Serves `body` for every request on 127.0.0.1, with a Last-Modified header.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_url_downloads_and_verifies() {
    use sha2::Digest as _;
    let body = compress("gz", &tar_bytes());
    let sum = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
    let base = serve(body.clone(), 3);
    let c = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();

    let mut a = add_act(act(&[&format!("{base}/files/pkg.tar.gz")], "/dl/"));
    a.checksum = Some(sum.clone());
    fileop::add(&a, &ctx(c.path()), d.path(), s.path(), &Default::default()).unwrap();
    let p = d.path().join("dl/pkg.tar.gz");
    assert_eq!(
        fs::read(&p).unwrap(),
        body,
        "a URL archive is not extracted"
    );
    let m = fs::metadata(&p).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.mtime(), 784_111_777, "mtime from Last-Modified");

    let wrong = format!("sha256:{}", "0".repeat(64));
    let mut a = add_act(act(&[&format!("{base}/pkg.tar.gz")], "/dl2/"));
    a.checksum = Some(wrong.clone());
    let e = fileop::add(&a, &ctx(c.path()), d.path(), s.path(), &Default::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&wrong) && msg.contains(&sum), "{msg}");
    assert!(!d.path().join("dl2").exists());

    let mut a = add_act(act(&[&format!("{base}/pkg.tar.gz")], "/unpacked/"));
    a.unpack = Some(true);
    fileop::add(&a, &ctx(c.path()), d.path(), s.path(), &Default::default()).unwrap();
    assert_eq!(
        fs::read_to_string(d.path().join("unpacked/pkg/bin")).unwrap(),
        "hello"
    );
}
