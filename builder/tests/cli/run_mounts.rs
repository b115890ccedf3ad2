//! `RUN --mount` of every type and `RUN --security`, on real containers: a bind of the context
//! sees no ignored file and its changes re-run the step, a writable bind's writes vanish, a
//! tmpfs is a tmpfs, a secret reaches the step and nothing else, an SSH agent answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::Busybox;
use crate::util::run;

/// Builds `dockerfile` in `ctx` (files written first) to a local directory, which must work;
/// returns the directory and the build's stderr.
fn build_in(
    bb: &Busybox,
    files: &[(&str, &[u8])],
    dockerfile: &str,
    args: &[&str],
) -> (PathBuf, String) {
    let ctx = bb.dir.path().join("mount-ctx");
    let _ = fs::remove_dir_all(&ctx);
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        fs::write(ctx.join(path), content).unwrap();
    }
    let out_dir = bb.dir.path().join("mount-out");
    let _ = fs::remove_dir_all(&out_dir);
    let progress = match args.iter().any(|a| a.starts_with("--progress")) {
        true => None,
        false => Some("--progress=plain"),
    };
    let out = run(bb
        .rbuild()
        .arg("build")
        .args(progress)
        .args(args)
        .arg("-o")
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg(&ctx));
    assert_eq!(out.code, 0, "{out}");
    (out_dir, out.stderr)
}

fn text(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn binds_of_the_context_and_of_stages_and_tmpfs_mounts() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    let dockerfile = "FROM busybox AS s
RUN echo from-stage > /s
FROM busybox
RUN --mount=type=bind,target=/ctx cat /ctx/file > /got && ls -a /ctx > /ls
RUN --mount=type=bind,from=s,target=/m,rw echo x > /m/new && cat /m/s > /gots
RUN --mount=type=bind,from=s,source=/,target=/m test ! -e /m/new && echo clean > /clean
RUN --mount=type=tmpfs,target=/t,size=1m grep ' /t ' /proc/mounts > /tm
";
    let files: &[(&str, &[u8])] = &[
        ("file", b"one\n"),
        ("ignored", b"x\n"),
        (".dockerignore", b"ignored\n"),
    ];
    let (out, _) = build_in(&bb, files, dockerfile, &[]);
    assert_eq!(text(&out, "got"), "one\n");
    let listed: Vec<String> = text(&out, "ls").lines().map(String::from).collect();
    assert!(listed.contains(&"file".to_string()), "{listed:?}");
    assert!(
        !listed.contains(&"ignored".to_string()),
        "an ignored file is visible: {listed:?}"
    );
    assert_eq!(text(&out, "gots"), "from-stage\n");
    assert_eq!(
        text(&out, "clean"),
        "clean\n",
        "a writable bind's writes were kept"
    );
    assert!(
        text(&out, "tm").starts_with("tmpfs /t tmpfs "),
        "{}",
        text(&out, "tm")
    );
    assert!(
        text(&out, "tm").contains("size=1024k"),
        "{}",
        text(&out, "tm")
    );
    assert!(!out.join("ctx/file").exists() && !out.join("t").join("x").exists());

    // The context's files are part of the key: a change runs the step again; an ignored
    // file's does not.
    let files: &[(&str, &[u8])] = &[
        ("file", b"one\n"),
        ("ignored", b"y\n"),
        (".dockerignore", b"ignored\n"),
    ];
    let (_, said) = build_in(&bb, files, dockerfile, &[]);
    assert!(!said.contains("miss: file"), "{said}");
    let files: &[(&str, &[u8])] = &[
        ("file", b"two\n"),
        ("ignored", b"y\n"),
        (".dockerignore", b"ignored\n"),
    ];
    let (out, said) = build_in(&bb, files, dockerfile, &[]);
    assert!(said.contains("miss: file file changed"), "{said}");
    assert_eq!(text(&out, "got"), "two\n");
    bb.assert_clean();
}

/// Every file under `dir`, recursively (not following symlinks).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files_under(&path, out);
        } else if meta.is_file() {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_secret_reaches_its_step_and_no_layer_config_history_log_or_record() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    let token = format!("tok-{:x}", rand_u64());
    let token_file = bb.dir.path().join("token");
    fs::write(&token_file, &token).unwrap();
    let dockerfile = "FROM busybox
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /h && stat -c %a /run/secrets/tok > /mode
RUN --mount=type=secret,id=tok,env=TOK sh -c 'printf %s \"$TOK\" | sha256sum | cut -d\" \" -f1 > /h2'
RUN --mount=type=secret,id=tok,target=/etc/app/key,mode=0440,uid=1 ls -ln /etc/app/key | cut -c1-10,15-20 > /owner
";
    let secret = format!("id=tok,src={}", token_file.display());
    let oci = bb.dir.path().join("image.tar");
    let oci_arg = format!("type=oci,dest={},compression=uncompressed", oci.display());
    let (out, said) = build_in(
        &bb,
        &[],
        dockerfile,
        &[
            "--secret",
            &secret,
            "--progress=rawjson",
            "-o",
            &oci_arg,
            "-t",
            "secretive:1",
        ],
    );
    let want = Command::new("sha256sum").arg(&token_file).output().unwrap();
    let want = String::from_utf8_lossy(&want.stdout);
    let want = want.split_whitespace().next().unwrap();
    assert_eq!(text(&out, "h").trim(), want);
    assert_eq!(text(&out, "h2").trim(), want);
    assert_eq!(text(&out, "mode").trim(), "400");
    assert!(
        text(&out, "owner").starts_with("-r--r-----"),
        "{}",
        text(&out, "owner")
    );
    // Nowhere: the rawjson log, the state root (uncompressed layers, configs, history,
    // cache.db), the image's rootfs and its OCI archive.
    assert!(!said.contains(&token), "the token is in the build's log");
    let mut everything = Vec::new();
    files_under(&bb.root(), &mut everything);
    files_under(&out, &mut everything);
    everything.push(oci.clone());
    assert!(everything.len() > 10, "{everything:?}");
    for path in everything {
        let bytes = fs::read(&path).unwrap_or_default();
        assert!(
            !contains(&bytes, token.as_bytes()),
            "the token is in {}",
            path.display()
        );
    }

    // A required secret that is not given fails, naming it.
    let out = bb.build(
        "FROM busybox\nRUN --mount=type=secret,id=missing,required=true true\n",
        &[],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("the secret \"missing\" is required"),
        "{out}"
    );
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    u64::from_le_bytes(bytes)
}

#[test]
fn an_ssh_agent_given_key_files_answers_in_the_step() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    if !crate::util::require_tool("ssh-keygen") || !crate::util::require_tool("ldd") {
        return;
    }
    let key = bb.dir.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rbuild-test-key",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    // The host's ssh-add and the libraries it needs, copied into the image: the step asks
    // the forwarded agent for its keys with it.
    let files = ssh_add_with_libraries();
    let file_refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let mut dockerfile = String::from("FROM busybox\n");
    for (name, _) in &files {
        dockerfile.push_str(&format!("COPY {name} /hostbin/{name}\n"));
    }
    dockerfile.push_str(&ssh_add_run(&files));
    let ssh = format!("default={}", key.display());
    let (out, _) = build_in(&bb, &file_refs, &dockerfile, &["--ssh", &ssh]);
    let listed = text(&out, "keys");
    assert!(listed.contains("rbuild-test-key"), "{listed}");
    assert!(text(&out, "sock").starts_with("/run/buildkit/ssh_agent.0"));
    // No agent, but required: a clear error.
    let out = bb.build(
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
        &[],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("the SSH agent \"default\" is required"),
        "{out}"
    );
}

/// `ssh-add` and each library `ldd` lists for it, as (flat name, bytes).
fn ssh_add_with_libraries() -> Vec<(String, Vec<u8>)> {
    let ssh_add = which("ssh-add");
    let ldd = Command::new("ldd").arg(&ssh_add).output().unwrap();
    let mut files = vec![("ssh-add".to_string(), fs::read(&ssh_add).unwrap())];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(path) = path {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, fs::read(&path).unwrap()));
        }
    }
    files
}

/// The RUN that lists the agent's keys with the copied ssh-add, through its own loader.
fn ssh_add_run(files: &[(String, Vec<u8>)]) -> String {
    let loader = files
        .iter()
        .map(|(n, _)| n.as_str())
        .find(|n| n.starts_with("ld-linux"))
        .expect("a dynamic loader");
    format!(
        "RUN --mount=type=ssh chmod +x /hostbin/{loader} && echo \"$SSH_AUTH_SOCK\" > /sock && \
         /hostbin/{loader} --library-path /hostbin /hostbin/ssh-add -l > /keys\n"
    )
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn an_insecure_step_needs_the_entitlement() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    let dockerfile =
        "FROM busybox\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n";
    let out = bb.build(dockerfile, &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("--allow security.insecure"), "{out}");
    let (out, _) = build_in(&bb, &[], dockerfile, &["--allow", "security.insecure"]);
    let caps = text(&out, "caps");
    let mask = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    // CAP_SYS_ADMIN (21) is not among Docker's defaults; a privileged step has it.
    assert!(mask & (1 << 21) != 0, "{caps}");
}

#[test]
fn the_same_source_date_epoch_on_two_fresh_roots_gives_one_image_digest() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    // The second root gets the very same base image.
    let saved = bb.dir.path().join("busybox.tar");
    let out = run(bb
        .rbuild()
        .args(["save", "busybox:latest", "-o"])
        .arg(&saved));
    assert_eq!(out.code, 0, "{out}");
    let other = bb.dir.path().join("second-root");
    let out = run(crate::util::rbuild(bb.dir.path())
        .env("RBUILD_ROOT", &other)
        .args(["load", "-i"])
        .arg(&saved));
    assert_eq!(out.code, 0, "{out}");
    let ctx = bb.dir.path().join("epoch-ctx");
    fs::create_dir_all(ctx.join("src/sub")).unwrap();
    fs::write(ctx.join("src/sub/a.txt"), "a\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nWORKDIR /work/dir\nCOPY src /src\nRUN echo made > made.txt && mkdir -p /var/new && touch /var/new/when\n",
    )
    .unwrap();
    let digest_on = |root: &Path, name: &str| {
        let iid = bb.dir.path().join(format!("{name}.iid"));
        let tar = bb.dir.path().join(format!("{name}.tar"));
        let out = run(crate::util::rbuild(bb.dir.path())
            .env("RBUILD_ROOT", root)
            .args([
                "build",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
                "--iidfile",
            ])
            .arg(&iid)
            .arg("-o")
            .arg(format!("type=oci,dest={}", tar.display()))
            .arg(&ctx));
        assert_eq!(out.code, 0, "{out}");
        (fs::read_to_string(&iid).unwrap(), fs::read(&tar).unwrap())
    };
    let first = digest_on(&bb.root(), "first");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = digest_on(&other, "second");
    assert_eq!(first.0, second.0, "the image IDs differ");
    assert!(first.1 == second.1, "the OCI archives differ");
}

#[test]
fn mount_sources_stay_inside_their_stage_and_mounts_nest_and_share() {
    let Some(bb) = Busybox::new() else {
        return;
    };
    // The host is Debian (/etc/debian_version); the busybox stage has no such file.
    let dockerfile = "FROM busybox AS s
RUN ln -s / /h && echo inside > /etc/marker
FROM busybox
RUN --mount=type=bind,from=s,source=../../../../etc,target=/x test ! -e /x/debian_version && cat /x/marker > /dotdot
RUN --mount=type=bind,from=s,source=h/etc,target=/x test ! -e /x/debian_version && cat /x/marker > /link
RUN --mount=type=bind,source=file,target=/f cat /f > /one-file
RUN --mount=type=bind,target=/src,rw --mount=type=cache,target=/src/nm,id=nested touch /src/nm/marker
RUN --mount=type=cache,target=/c,id=nested ls /c > /nested
RUN --mount=type=cache,id=dup,target=/a,sharing=locked --mount=type=cache,id=dup,target=/b,sharing=locked sh -c 'echo 1 > /a/x && cat /b/x > /dup'
RUN --mount=type=secret,source=tok,target=/root/.npmrc cat /root/.npmrc > /by-source
";
    let tok = bb.dir.path().join("tok");
    fs::write(&tok, "from-source\n").unwrap();
    let secret = format!("id=tok,src={}", tok.display());
    let files: &[(&str, &[u8])] = &[("file", b"just one\n")];
    let (out, _) = build_in(&bb, files, dockerfile, &["--secret", &secret]);
    assert_eq!(text(&out, "dotdot"), "inside\n");
    assert_eq!(text(&out, "link"), "inside\n");
    assert_eq!(text(&out, "one-file"), "just one\n");
    assert_eq!(text(&out, "nested"), "marker\n");
    assert_eq!(text(&out, "dup"), "1\n");
    assert_eq!(text(&out, "by-source"), "from-source\n");
    bb.assert_clean();
}
