//! `rbuild build` and its shorthand `rbuild PATH`.

use crate::util::{examples, fixture, rbuild, run};

#[test]
fn build_from_a_base_missing_from_the_store_names_it() {
    // Quiet: the FROM and context vertices run at once, so plain progress has no set order.
    let out = run(rbuild(&fixture("ok")).args(["build", "-q", "-t", "app:1.0", "."]));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn the_build_subcommand_is_the_default() {
    let explicit = run(rbuild(&fixture("ok")).args(["build", "-q", "-t", "app:1.0", "."]));
    let implicit = run(rbuild(&fixture("ok")).args(["-q", "-t", "app:1.0", "."]));
    assert_eq!(explicit.to_string(), implicit.to_string());
    let bad = run(rbuild(&fixture("")).arg("nested-json"));
    assert!(
        bad.stderr.starts_with("nested-json/Dockerfile:2:1: "),
        "{bad}"
    );
}

#[test]
fn build_of_a_missing_dockerfile_names_its_path() {
    let out = run(rbuild(&fixture("")).args(["build", "-f", "sub/Dockerfile.missing", "ok"]));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn build_of_a_context_without_dockerfile_names_the_default_path() {
    let out = run(rbuild(&fixture("")).arg("sub"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: cannot read the Dockerfile \"sub/Dockerfile\": "),
        "{out}"
    );
}

#[test]
fn build_of_a_missing_context_names_it() {
    let out = run(rbuild(&fixture("")).arg("no-such-dir"));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn build_reports_located_errors_with_the_name_given_to_f() {
    let out = run(rbuild(&fixture("")).args(["build", "-f", "tabs/Dockerfile", "ok"]));
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("tabs/Dockerfile:2:2: "), "{out}");
    // Read, parsed and lowered: the build got as far as looking for its base image.
    let out = run(rbuild(&fixture("")).args(["-f", "sub/Dockerfile.dev", "ok"]));
    assert!(
        out.stderr
            .contains("error: base image 127.0.0.1:9/busybox: ")
            && out.stderr.contains("Connection refused"),
        "{out}"
    );
}

#[test]
fn build_reads_the_dockerfile_from_stdin() {
    let out = run(rbuild(&fixture(""))
        .arg("-")
        .write_stdin("FROM a\nCMD [\"x\", 1]\n"));
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("<stdin>:2:1: "), "{out}");
}

#[test]
fn every_buildx_flag_is_accepted() {
    let out = run(rbuild(&fixture("ok")).args([
        "build",
        "-t",
        "a:1",
        "--tag=b:2",
        "-f",
        "Dockerfile",
        "--build-arg",
        "X=1",
        "--target",
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        "-o",
        "type=local,dest=out",
        "--output=type=oci,dest=o.tar",
        "--cache-from",
        "type=local,src=c",
        "--cache-to",
        "type=local,dest=c",
        "--no-cache",
        "--pull",
        "--secret",
        "id=s,src=f",
        "--ssh",
        "default",
        "--label",
        "k=v",
        "--network",
        "host",
        "--progress=rawjson",
        "--iidfile",
        "iid",
        "--metadata-file",
        "meta.json",
        ".",
    ]));
    // Every flag parsed; the build stops at the first that names a missing thing.
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("--secret id=s,src=f: reading f"),
        "{out}"
    );
}

#[test]
fn cache_flags_that_cannot_be_honoured_are_refused_before_the_build() {
    let cases = [
        ("--cache-to", "type=local,src=c", "missing `dest=`"),
        ("--cache-to", "type=inline,cache-mounts=true", "do not fit"),
        ("--cache-from", "type=gha", "unknown cache type \"gha\""),
    ];
    for (flag, spec, said) in cases {
        let out = run(rbuild(&fixture("ok")).args(["build", flag, spec, "."]));
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains(&format!("{flag} {spec}")), "{out}");
        assert!(out.stderr.contains(said), "{out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = run(rbuild(&fixture("ok")).args(["build", "--progress=fancy", "."]));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("fancy"), "{out}");
    let out = run(rbuild(&fixture("ok")).args(["build"]));
    assert_eq!(out.code, 2, "{out}");
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    // `rbuild debug ast | head -0`: the reader is gone before the dump is written.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rbuild"))
        .current_dir(fixture("ok"))
        .args(["debug", "ast"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// `-q` with an archive on stdout: stdout is the archive alone (the image ID goes to stderr),
/// so `rbuild -q -o type=oci,dest=- . > image.tar` gives a valid tar.
#[test]
fn quiet_with_an_archive_on_stdout_keeps_the_id_out_of_it() {
    let examples = examples();
    let out = rbuild(&examples)
        .args(["build", "-q", "-o", "type=oci,dest=-", "config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::TempDir::new().unwrap();
    let tar = dir.path().join("image.tar");
    std::fs::write(&tar, &out.stdout).unwrap();
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("index.json"));
    // A tar ends in zero blocks, not in a line of text.
    assert_eq!(
        out.stdout.last(),
        Some(&0),
        "stdout does not end as a tar does"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim_end().starts_with("sha256:"), "{stderr}");
}

/// `--metadata-file` has buildx's keys: the image's digests and `image.name`, the names given.
#[test]
fn the_metadata_file_names_the_image() {
    let examples = examples();
    let dir = tempfile::TempDir::new().unwrap();
    let meta = dir.path().join("meta.json");
    let out = run(rbuild(&examples)
        .args([
            "build",
            "-t",
            "meta-a:1",
            "-t",
            "meta-b:2",
            "--metadata-file",
        ])
        .arg(&meta)
        .arg("config"));
    assert_eq!(out.code, 0, "{out}");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["image.name"], "meta-a:1,meta-b:2", "{meta}");
    assert!(meta["containerimage.digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    assert!(meta["containerimage.config.digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
}

/// `rbuild images` shows when an image was made (its config's `created`, here set by
/// SOURCE_DATE_EPOCH), not when its name was set.
#[test]
fn images_show_the_config_creation_time() {
    let examples = examples();
    let dir = tempfile::TempDir::new().unwrap();
    let build = run(rbuild(&examples).env("RBUILD_ROOT", dir.path()).args([
        "build",
        "--build-arg",
        "SOURCE_DATE_EPOCH=86400",
        "-t",
        "epoch:1",
        "config",
    ]));
    assert_eq!(build.code, 0, "{build}");
    let listed = run(rbuild(&examples)
        .env("RBUILD_ROOT", dir.path())
        .arg("images"));
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("epoch "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("1970-01-02 00:00:00 UTC"), "{listed}");
}

/// A build for two platforms lowers the Dockerfile twice but says each lint warning once.
#[test]
fn a_two_platform_build_prints_each_warning_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch as base\nLABEL a=b\n").unwrap();
    let out = run(rbuild(dir.path())
        .env("RBUILD_ROOT", dir.path().join("root"))
        .args(["build", "--platform", "linux/amd64,linux/arm64", "ctx"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stderr.matches("warning: FromAsCasing").count(),
        1,
        "{out}"
    );
}
