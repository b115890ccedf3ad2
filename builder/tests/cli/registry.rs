//! Registries: `build --push`, `push`, `pull`, `FROM` a registry image, `login`/`logout`, TLS
//! with a CA of the test's own, and retries, against Debian's distribution registry (with a
//! fault proxy in front of it where a test breaks or counts requests). What rbuild pushed is
//! read back with skopeo and umoci: the digests must be the ones rbuild reports
//! (`--metadata-file`) and writes (`rbuild save`), since a push keeps every byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::fault_proxy::{max_in_flight, Exchange, Fault, FaultProxy};
use crate::registry_fixture::{
    checked, have_tools, host_arch, oci_layout_config, oci_layout_manifest,
    oci_layout_manifest_digest, sha256, sha256_hex, store_blobs, umoci_unpack, write_file,
    TestRegistry,
};
use crate::util::{can_run_containers, rbuild, run, Output};

/// A test's directory: state roots, contexts, outputs and a docker config dir of its own.
pub(crate) struct Workspace {
    dir: TempDir,
}

impl Workspace {
    pub(crate) fn new() -> Workspace {
        Workspace {
            dir: TempDir::new().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// rbuild on the state root `root` (a directory name in the workspace), with
    /// `DOCKER_CONFIG` in the workspace and nothing from the caller's environment that
    /// changes how registries are reached.
    pub(crate) fn rbuild_on(&self, root: &str) -> assert_cmd::Command {
        let mut cmd = rbuild(self.path());
        cmd.env("RBUILD_ROOT", self.path().join(root))
            .env("DOCKER_CONFIG", self.docker_config())
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env_remove("RBUILD_INSECURE_REGISTRIES")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy");
        cmd
    }

    /// rbuild on the workspace's main state root.
    pub(crate) fn rbuild(&self) -> assert_cmd::Command {
        self.rbuild_on("root")
    }

    pub(crate) fn docker_config(&self) -> PathBuf {
        self.path().join("docker-config")
    }

    /// `$DOCKER_CONFIG/config.json`, parsed (`{}` when missing).
    pub(crate) fn docker_config_json(&self) -> serde_json::Value {
        match fs::read(self.docker_config().join("config.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => serde_json::json!({}),
        }
    }

    /// Writes a context `name` with `dockerfile` and `files` (path, content); returns its path.
    pub(crate) fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let ctx = self.path().join(name);
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (path, content) in files {
            write_file(&ctx.join(path), content);
        }
        ctx
    }

    /// `rbuild build ARGS… CONTEXT` on the main root.
    pub(crate) fn build(&self, ctx: &Path, args: &[&str]) -> Output {
        run(self.rbuild().arg("build").args(args).arg(ctx))
    }

    /// `rbuild build ARGS… --metadata-file … CONTEXT`, which must succeed, and the digests
    /// of what it built from its metadata file (buildx's `containerimage.digest` and
    /// `containerimage.config.digest`): a push must put exactly these bytes in the registry.
    pub(crate) fn build_digests(&self, ctx: &Path, args: &[&str]) -> Built {
        self.build_with_metadata(ctx, args).0
    }

    /// `build_digests`, with what the build printed.
    pub(crate) fn build_with_metadata(&self, ctx: &Path, args: &[&str]) -> (Built, Output) {
        let meta = self.path().join("metadata.json");
        let _ = fs::remove_file(&meta);
        let out = run(self
            .rbuild()
            .arg("build")
            .args(args)
            .arg("--metadata-file")
            .arg(&meta)
            .arg(ctx));
        assert_eq!(out.code, 0, "{out}");
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        let field = |key: &str| {
            meta[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in the metadata file: {meta}"))
                .to_string()
        };
        let built = Built {
            manifest: field("containerimage.digest"),
            config: field("containerimage.config.digest"),
        };
        (built, out)
    }
}

/// The digests of a built image.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Built {
    pub(crate) manifest: String,
    pub(crate) config: String,
}

/// Panics with the whole output unless rbuild exited 0.
pub(crate) fn ok(out: Output) -> Output {
    assert_eq!(out.code, 0, "{out}");
    out
}

/// Incompressible bytes (xorshift) from `seed`.
pub(crate) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every entry under `root` by relative path: `dir MODE`, `file MODE SHA256` or
/// `link -> TARGET`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {mode:04o}")
            } else {
                format!("file {mode:04o} {}", sha256_hex(&fs::read(&path).unwrap()))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The `sha256:…` digests of a manifest's config and layers.
pub(crate) fn manifest_blobs(manifest: &serde_json::Value) -> BTreeSet<String> {
    let mut blobs: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    blobs.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
    blobs
}

/// The digest a blob upload request names in its `digest=` query parameter.
pub(crate) fn uploaded_digest(exchange: &Exchange) -> String {
    let re = regex::Regex::new(r"(?:^|&)digest=sha256(?::|%3[Aa])([0-9a-f]{64})").unwrap();
    let caps = re
        .captures(&exchange.query)
        .unwrap_or_else(|| panic!("no digest in {}", exchange.line()));
    format!("sha256:{}", &caps[1])
}

/// The digests of the completed blob uploads the proxy saw, with how often each.
fn upload_counts(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for upload in proxy.completed_blob_uploads() {
        *counts.entry(uploaded_digest(&upload)).or_default() += 1;
    }
    counts
}

/// Asserts every blob file in the store of `root` has the digest its name says.
pub(crate) fn assert_store_sound(root: &Path) {
    for (name, actual) in store_blobs(root) {
        assert_eq!(
            name,
            actual,
            "blob {name} in {} holds other bytes",
            root.display()
        );
    }
}

/// The static busybox of Debian's busybox-static, which runs in a scratch image. Missing,
/// `None` (with the reason), or a failure under `CI=true`.
fn static_busybox() -> Option<PathBuf> {
    let listed = Command::new("dpkg")
        .args(["-L", "busybox-static"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| listed.lines().any(|l| l == *p) && Path::new(p).is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "busybox-static is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: busybox-static is not installed");
    }
    found.map(PathBuf::from)
}

/// The files of the app in tests a and b: a subdirectory, modes other than the default, a
/// symlink.
fn write_app_files(ctx: &Path) {
    let files = ctx.join("files");
    write_file(&files.join("hello.txt"), b"hello from the registry test\n");
    write_file(&files.join("bin/run.sh"), b"#!/bin/sh\necho run\n");
    write_file(&files.join("sub/deeper/data.bin"), &random_bytes(1, 4096));
    write_file(&files.join("sub/private.txt"), b"only the owner\n");
    fs::set_permissions(files.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        files.join("sub/private.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(files.join("sub/deeper"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("../hello.txt", files.join("bin/hello-link")).unwrap();
}

const APP: &str = "FROM scratch
COPY files/ /app/
ENV GREETING=hello APP_HOME=/app
LABEL org.example.test=registry org.example.kind=app
CMD [\"/app/bin/run.sh\", \"--flag\"]
";

#[test]
fn a_push_to_a_plain_registry_keeps_every_byte_rbuild_built() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    if !have_tools(&["skopeo", "umoci"]) {
        return;
    }
    let ws = Workspace::new();
    let ctx = ws.context("app", APP, &[]);
    write_app_files(&ctx);

    // build --push, an image output with push=true, and `rbuild push` of stored names: the
    // registry has the very manifest and config rbuild built.
    let name1 = registry.image("app:1");
    let built = ws.build_digests(&ctx, &["-t", &name1, "--push"]);
    assert_eq!(registry.manifest_digest("app:1"), built.manifest);
    let spec = format!("type=image,name={},push=true", registry.image("app:2"));
    let built2 = ws.build_digests(&ctx, &["-o", &spec]);
    assert_eq!(registry.manifest_digest("app:2"), built2.manifest);
    let (name3, name4) = (registry.image("app:3"), registry.image("other/app:4"));
    let built3 = ws.build_digests(&ctx, &["-t", &name3, "-t", &name4]);
    ok(run(ws.rbuild().args(["push", &name3, &name4])));
    for name in ["app:3", "other/app:4"] {
        assert_eq!(registry.manifest_digest(name), built3.manifest, "{name}");
    }
    // The same bytes `rbuild save` writes.
    ok(run(ws.rbuild().args(["save", &name3, "-o", "saved.tar"])));
    let saved = ws.path().join("saved");
    fs::create_dir(&saved).unwrap();
    checked(
        Command::new("tar")
            .arg("-xf")
            .arg(ws.path().join("saved.tar"))
            .arg("-C")
            .arg(&saved),
        "tar -xf",
    );
    assert_eq!(oci_layout_manifest_digest(&saved, "3"), built3.manifest);

    // What skopeo and umoci see is what was built.
    let layout = ws.path().join("pulled");
    registry.copy_to_oci("app:1", &layout, "app");
    assert_eq!(oci_layout_manifest_digest(&layout, "app"), built.manifest);
    let pulled_manifest = oci_layout_manifest(&layout, "app");
    assert_eq!(pulled_manifest["config"]["digest"], built.config.as_str());
    let bundle = ws.path().join("bundle");
    umoci_unpack(&layout, "app", &bundle);
    let rootfs_app = tree(&bundle.join("rootfs/app"));
    assert_eq!(rootfs_app, tree(&ctx.join("files")));
    assert_eq!(rootfs_app["bin/hello-link"], "link -> ../hello.txt");
    assert_eq!(
        rootfs_app["sub/private.txt"].split(' ').nth(1),
        Some("0600")
    );
    assert_eq!(rootfs_app["sub/deeper"], "dir 0750");
    let pulled = oci_layout_config(&layout, "app");
    let config = &pulled["config"];
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"GREETING=hello"), "{env:?}");
    assert!(env.contains(&"APP_HOME=/app"), "{env:?}");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["/app/bin/run.sh", "--flag"])
    );
    assert_eq!(config["Labels"]["org.example.test"], "registry");
    assert_eq!(config["Labels"]["org.example.kind"], "app");
    assert_eq!(pulled["architecture"], host_arch());
}

#[test]
fn login_tls_and_auth_errors_name_the_registry_and_never_print_the_password() {
    const PASSWORD: &str = "pw-Zq81-must-not-be-printed";
    let Some(registry) = TestRegistry::tls_with_htpasswd("tester", PASSWORD) else {
        return;
    };
    if !have_tools(&["skopeo"]) {
        return;
    }
    let ws = Workspace::new();
    let host = registry.host();
    let ca = registry.ca_path().to_str().unwrap().to_string();
    let mut outputs = Vec::new();
    let mut keep = |out: Output| {
        outputs.push(out.to_string());
        out
    };

    // A wrong password: 401, naming the registry, and nothing written.
    let wrong = "wrong-Kx77-password";
    let out = keep(run(ws
        .rbuild()
        .env("SSL_CERT_FILE", &ca)
        .args(["login", &host, "-u", "tester", "-p", wrong])));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("401"), "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    assert!(!out.to_string().contains(wrong), "{out}");
    assert!(ws.docker_config_json()["auths"].get(&host).is_none());

    // The right one, on stdin: docker's config.json entry.
    let out = keep(run(ws
        .rbuild()
        .env("SSL_CERT_FILE", &ca)
        .args(["login", &host, "-u", "tester", "--password-stdin"])
        .write_stdin(format!("{PASSWORD}\n"))));
    assert_eq!(out.code, 0, "{out}");
    let config = ws.docker_config_json();
    let entry = &config["auths"][&host];
    assert_eq!(
        entry["auth"].as_str(),
        Some(base64(format!("tester:{PASSWORD}").as_bytes()).as_str()),
        "{config}"
    );

    // Push over TLS with the CA given on the command line; skopeo reads the same image back.
    let ctx = ws.context("app", APP, &[]);
    write_app_files(&ctx);
    let name = registry.image("team/app:1");
    let (built, out) = ws.build_with_metadata(&ctx, &["-t", &name, "--push", "--registry-ca", &ca]);
    keep(out);
    assert_eq!(registry.manifest_digest("team/app:1"), built.manifest);
    let layout = ws.path().join("pulled");
    registry.copy_to_oci("team/app:1", &layout, "app");
    assert_eq!(oci_layout_manifest_digest(&layout, "app"), built.manifest);
    let bundle = ws.path().join("bundle");
    if have_tools(&["umoci"]) {
        umoci_unpack(&layout, "app", &bundle);
        assert_eq!(tree(&bundle.join("rootfs/app")), tree(&ctx.join("files")));
    }

    // Logout forgets the registry; a push then is refused with 401, naming host and repo.
    let out = keep(run(ws.rbuild().args(["logout", &host])));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        ws.docker_config_json()["auths"].get(&host).is_none(),
        "{}",
        ws.docker_config_json()
    );
    // (`build --push` need not keep the image in the store: tag it there first.)
    ok(ws.build(&ctx, &["-t", &name]));
    let out = keep(run(ws.rbuild().args(["push", "--registry-ca", &ca, &name])));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    assert!(out.stderr.contains("team/app"), "{out}");
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized"),
        "{out}"
    );
    // Not even a 401: without the CA the certificate is not trusted.
    let out = keep(ws.build(&ctx, &["-t", &name, "--push"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&host), "{out}");

    for text in &outputs {
        assert!(
            !text.contains(PASSWORD),
            "the password was printed:\n{text}"
        );
    }
}

/// Standard base64 with padding, as docker's config.json `auth` holds `user:password`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_run_step_builds_on_a_base_pulled_from_the_registry() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    if !can_run_containers("the RUN on a registry base") {
        return;
    }
    let Some(busybox) = static_busybox() else {
        return;
    };
    let ws = Workspace::new();
    let base = ws.context(
        "base",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /etc/marker\n",
        &[
            ("busybox", &fs::read(&busybox).unwrap()),
            ("marker", b"base marker\n"),
        ],
    );
    fs::set_permissions(base.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    let base_name = registry.image("base:1");
    ok(ws.build(&base, &["-t", &base_name, "--push"]));

    let app = ws.context(
        "app",
        &format!(
            "FROM {base_name}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"cat /etc/marker > /ran.txt && echo ran >> /ran.txt\"]\n"
        ),
        &[],
    );
    // A fresh state root: the base can only come from the registry.
    for (root, extra) in [("fresh", &[][..]), ("fresh", &["--pull"][..])] {
        let dest = ws.path().join(format!("out-{}", extra.len()));
        let out = run(ws
            .rbuild_on(root)
            .arg("build")
            .args(extra)
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&app));
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(
            fs::read_to_string(dest.join("etc/marker")).unwrap(),
            "base marker\n"
        );
        assert_eq!(
            fs::read_to_string(dest.join("ran.txt")).unwrap(),
            "base marker\nran\n"
        );
        assert!(dest.join("bin/busybox").is_file());
        assert_store_sound(&ws.path().join(root));
    }
}

#[test]
fn a_multi_platform_index_in_the_registry_gives_each_platform_its_base() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    if !have_tools(&["skopeo"]) {
        return;
    }
    let ws = Workspace::new();
    let native = host_arch();
    let other = if native == "arm64" { "amd64" } else { "arm64" };
    let mut manifests = Vec::new();
    for arch in [native, other] {
        let marker = format!("marker of {arch}\n");
        let ctx = ws.context(
            &format!("base-{arch}"),
            "FROM scratch\nCOPY marker /marker\n",
            &[("marker", marker.as_bytes())],
        );
        let name = registry.image(&format!("base:{arch}"));
        let platform = format!("linux/{arch}");
        ok(ws.build(&ctx, &["--platform", &platform, "-t", &name, "--push"]));
        let raw = registry.raw_manifest(&format!("base:{arch}"));
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let config = registry.raw_config(&format!("base:{arch}"));
        assert_eq!(config["architecture"], arch, "{config}");
        assert_eq!(config["os"], "linux", "{config}");
        manifests.push(serde_json::json!({
            "mediaType": manifest["mediaType"],
            "digest": sha256(&raw),
            "size": raw.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let index = serde_json::to_vec(&index).unwrap();
    let index_digest = registry.put_manifest(
        "base:multi",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    assert_eq!(registry.manifest_digest("base:multi"), index_digest);

    let app = ws.context(
        "app",
        &format!("FROM {}\nCOPY note /note\n", registry.image("base:multi")),
        &[("note", b"copied\n")],
    );
    let cases = [(Some(other), other), (Some(native), native), (None, native)];
    for (i, (platform, expected)) in cases.into_iter().enumerate() {
        let dest = ws.path().join(format!("out{i}"));
        let mut cmd = ws.rbuild_on(&format!("fresh{i}"));
        cmd.arg("build");
        if let Some(arch) = platform {
            cmd.arg("--platform").arg(format!("linux/{arch}"));
        }
        cmd.arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&app);
        let out = run(&mut cmd);
        assert_eq!(out.code, 0, "{platform:?}: {out}");
        assert_eq!(
            fs::read_to_string(dest.join("marker")).unwrap(),
            format!("marker of {expected}\n"),
            "{platform:?}"
        );
        assert_eq!(fs::read_to_string(dest.join("note")).unwrap(), "copied\n");
    }

    // `rbuild pull --platform`: that platform's blobs only.
    let layer_of = |arch: &str| {
        let m = registry.manifest_json(&format!("base:{arch}"));
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let out = run(ws
        .rbuild_on("pulled")
        .args(["pull", "--platform", &format!("linux/{other}")])
        .arg(registry.image("base:multi")));
    assert_eq!(out.code, 0, "{out}");
    let blobs = store_blobs(&ws.path().join("pulled"));
    let hex = |d: String| d.trim_start_matches("sha256:").to_string();
    assert!(blobs.contains_key(&hex(layer_of(other))), "{blobs:?}");
    assert!(!blobs.contains_key(&hex(layer_of(native))), "{blobs:?}");
    assert_store_sound(&ws.path().join("pulled"));
}

/// A context `name` of three COPY layers, each a 1 MiB random file (`fI.bin`, its bytes from
/// `seeds[I]`).
pub(crate) fn three_layer_context(ws: &Workspace, name: &str, seeds: [u64; 3]) -> PathBuf {
    let files: Vec<(String, Vec<u8>)> = seeds
        .iter()
        .enumerate()
        .map(|(i, &seed)| (format!("f{i}.bin"), random_bytes(seed, 1 << 20)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    ws.context(
        name,
        "FROM scratch\nCOPY f0.bin /f0.bin\nCOPY f1.bin /f1.bin\nCOPY f2.bin /f2.bin\n",
        &refs,
    )
}

#[test]
fn pushes_and_pulls_get_through_dropped_connections_errors_and_429() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let ws = Workspace::new();
    let ctx = three_layer_context(&ws, "app", [11, 12, 13]);
    let name = format!("{}/app:1", proxy.host());
    let built = ws.build_digests(&ctx, &["-t", &name]);

    // Push through a dropped upload, a 500 on the manifest and a 429 on a blob check.
    proxy.add_fault(
        "PUT|PATCH",
        "^/v2/app/blobs/uploads/",
        Fault::DropBeforeResponse,
        1,
    );
    proxy.add_fault("PUT", "^/v2/app/manifests/", Fault::Status(500), 1);
    let too_many = Fault::TooManyRequests {
        retry_after_secs: 1,
    };
    proxy.add_fault("HEAD", "^/v2/app/blobs/sha256:", too_many, 1);
    let out = run(ws.rbuild().args(["push", &name]));
    assert_eq!(out.code, 0, "{out}\n{}", proxy.log_text());
    assert!(
        proxy.unused_faults().is_empty(),
        "{:?}",
        proxy.unused_faults()
    );
    assert_eq!(registry.manifest_digest("app:1"), built.manifest);
    // After a 429 rbuild waits at least a second before asking about that blob again (its
    // floor for rate limits: oci-client does not pass the Retry-After header on).
    let log = proxy.requests();
    let refused = log.iter().position(|e| e.fault == Some(too_many)).unwrap();
    let blob_hex = log[refused].path.rsplit(':').next().unwrap().to_string();
    let next = log[refused + 1..]
        .iter()
        .find(|e| e.path.contains(&blob_hex) || e.query.contains(&blob_hex))
        .expect("the blob was asked about again after the 429");
    assert!(
        next.at.duration_since(log[refused].done) >= Duration::from_millis(950),
        "asked again {:?} after a 429\n{}",
        next.at.duration_since(log[refused].done),
        proxy.log_text()
    );
    let manifest = registry.manifest_json("app:1");
    let big_layer = manifest["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let big_hex = big_layer.trim_start_matches("sha256:").to_string();

    // Pull (FROM through the proxy) on fresh roots: a body cut short, then one corrupted.
    let app = ws.context(
        "from-proxy",
        &format!("FROM {name}\nLABEL pulled=yes\n"),
        &[],
    );
    let faults = [
        ("root-cut", Fault::DropMidBody),
        ("root-flip", Fault::FlipByte),
    ];
    for (root, fault) in faults {
        proxy.reset_counts();
        proxy.add_fault("GET", &format!("^/v2/app/blobs/{big_layer}$"), fault, 1);
        let dest = ws.path().join(format!("out-{root}"));
        let out = run(ws
            .rbuild_on(root)
            .arg("build")
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&app));
        assert_eq!(out.code, 0, "{fault:?}: {out}\n{}", proxy.log_text());
        assert!(
            proxy.unused_faults().is_empty(),
            "{:?}",
            proxy.unused_faults()
        );
        assert_eq!(
            fs::read(dest.join("f2.bin")).unwrap(),
            fs::read(ctx.join("f2.bin")).unwrap()
        );
        let fetched = proxy.count("GET", &format!("^/v2/app/blobs/{big_layer}$"));
        assert!(
            fetched >= 2,
            "{fault:?}: fetched {fetched} times\n{}",
            proxy.log_text()
        );
        assert_store_sound(&ws.path().join(root));
        assert!(store_blobs(&ws.path().join(root)).contains_key(&big_hex));
    }

    // Corrupted every time: the build fails naming the blob, and the store never keeps it.
    proxy.add_fault(
        "GET",
        &format!("^/v2/app/blobs/{big_layer}$"),
        Fault::FlipByte,
        100,
    );
    let out = run(ws
        .rbuild_on("root-bad")
        .arg("build")
        .arg("-o")
        .arg(format!(
            "type=local,dest={}",
            ws.path().join("out-bad").display()
        ))
        .arg(&app));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&big_hex), "{out}");
    let blobs = store_blobs(&ws.path().join("root-bad"));
    assert!(!blobs.contains_key(&big_hex), "{blobs:?}");
    assert_store_sound(&ws.path().join("root-bad"));
}

#[test]
fn a_second_build_from_a_registry_base_fetches_no_blob() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let ws = Workspace::new();
    let base = ws.context(
        "base",
        "FROM scratch\nCOPY data /data\n",
        &[("data", &random_bytes(5, 64 << 10))],
    );
    let base_name = format!("{}/base:1", proxy.host());
    ok(ws.build(&base, &["-t", &base_name, "--push"]));
    let app = ws.context(
        "app",
        &format!("FROM {base_name}\nCOPY note /note\n"),
        &[("note", b"app\n")],
    );
    let mut builds = 0;
    let mut build = |extra: &[&str]| {
        builds += 1;
        let dest = ws.path().join(format!("out{builds}"));
        let out = run(ws
            .rbuild_on("consumer")
            .arg("build")
            .args(extra)
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&app));
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(fs::read_to_string(dest.join("note")).unwrap(), "app\n");
        assert!(dest.join("data").is_file());
    };
    build(&[]);
    assert!(!proxy.blob_fetches().is_empty(), "{}", proxy.log_text());

    proxy.reset_counts();
    build(&[]);
    assert!(proxy.blob_fetches().is_empty(), "{}", proxy.log_text());
    let manifest_requests = proxy.count("GET|HEAD", "^/v2/base/manifests/");
    assert!(manifest_requests <= 1, "{}", proxy.log_text());

    // --pull asks the registry again, and still has every blob.
    proxy.reset_counts();
    build(&["--pull"]);
    assert!(
        proxy.count("GET|HEAD", "^/v2/base/manifests/") >= 1,
        "{}",
        proxy.log_text()
    );
    assert!(proxy.blob_fetches().is_empty(), "{}", proxy.log_text());
}

#[test]
fn an_incremental_push_uploads_only_the_changed_layer_and_the_config() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let ws = Workspace::new();
    let ctx = three_layer_context(&ws, "app", [21, 22, 23]);
    let v1 = format!("{}/app:v1", proxy.host());
    ok(ws.build(
        &ctx,
        &["-t", &v1, "--push", "--max-concurrent-uploads", "1"],
    ));
    let first = registry.manifest_json("app:v1");
    let counts = upload_counts(&proxy);
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        manifest_blobs(&first),
        "{}",
        proxy.log_text()
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // One upload at a time: no two requests carrying blob data overlapped.
    let uploads = proxy.blob_upload_attempts();
    assert_eq!(max_in_flight(&uploads), 1, "{}", proxy.log_text());

    fs::write(ctx.join("f2.bin"), random_bytes(99, 1 << 20)).unwrap();
    proxy.reset_counts();
    let v2 = format!("{}/app:v2", proxy.host());
    ok(ws.build(&ctx, &["-t", &v2, "--push"]));
    let second = registry.manifest_json("app:v2");
    assert_eq!(first["layers"][0], second["layers"][0]);
    assert_eq!(first["layers"][1], second["layers"][1]);
    assert_ne!(first["layers"][2], second["layers"][2]);
    let expected: BTreeMap<String, usize> = [
        (
            second["layers"][2]["digest"].as_str().unwrap().to_string(),
            1,
        ),
        (second["config"]["digest"].as_str().unwrap().to_string(), 1),
    ]
    .into();
    assert_eq!(upload_counts(&proxy), expected, "{}", proxy.log_text());
    assert_eq!(proxy.manifest_puts().len(), 1, "{}", proxy.log_text());
}

#[test]
fn several_tags_push_one_manifest_and_each_blob_once() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    if !have_tools(&["skopeo"]) {
        return;
    }
    let proxy = FaultProxy::start(&registry.host());
    let ws = Workspace::new();
    let ctx = three_layer_context(&ws, "app", [31, 32, 33]);
    let (a, b) = (
        format!("{}/app:a", proxy.host()),
        format!("{}/app:b", proxy.host()),
    );
    ok(ws.build(
        &ctx,
        &[
            "-t",
            &a,
            "-t",
            &b,
            "--push",
            "--max-concurrent-uploads",
            "3",
        ],
    ));
    let digest = registry.manifest_digest("app:a");
    assert_eq!(registry.manifest_digest("app:b"), digest);
    let counts = upload_counts(&proxy);
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        manifest_blobs(&registry.manifest_json("app:a")),
        "{}",
        proxy.log_text()
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "{counts:?}\n{}",
        proxy.log_text()
    );
    assert!(!proxy.manifest_puts().is_empty());
    assert!(
        proxy.manifest_puts().iter().all(|e| e.status == Some(201)),
        "{}",
        proxy.log_text()
    );
}

/// A local address other than loopback, where a registry is HTTPS unless told otherwise.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing: it only picks the route and source address.
    // Several destinations, since a machine may route only some (one has no default route).
    for destination in ["192.0.2.1:9", "198.51.100.1:9", "10.0.0.1:9", "8.8.8.8:9"] {
        let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            continue;
        };
        if socket.connect(destination).is_err() {
            continue;
        }
        if let Ok(addr) = socket.local_addr() {
            let ip = addr.ip();
            if !ip.is_loopback() && !ip.is_unspecified() {
                return Some(ip);
            }
        }
    }
    None
}

#[test]
fn insecure_registries_are_plain_http_only_when_named() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    let ws = Workspace::new();
    let ctx = ws.context("app", "FROM scratch\nCOPY f /f\n", &[("f", b"f\n")]);

    // localhost is plain HTTP without being named.
    let local = format!("localhost:{}/app:local", registry.port());
    ok(ws.build(&ctx, &["-t", &local, "--push"]));
    assert!(!registry.raw_manifest("app:local").is_empty());

    let Some(ip) = non_loopback_ip() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the --insecure-registry checks need a non-loopback address under CI=true"
        );
        eprintln!("skipping the --insecure-registry checks: no non-loopback address");
        return;
    };
    let proxy = FaultProxy::start_on(ip, &registry.host());
    let host = proxy.host();
    let name = format!("{host}/app:remote");
    ok(ws.build(&ctx, &["-t", &name]));
    // Another host is HTTPS: the plain proxy refuses the handshake.
    let out = run(ws.rbuild().args(["push", &name]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    assert_eq!(proxy.manifest_puts().len(), 0);
    ok(run(ws
        .rbuild()
        .args(["push", "--insecure-registry", "other.example:5000"])
        .args(["--insecure-registry", &host, &name])));
    assert_eq!(proxy.manifest_puts().len(), 1, "{}", proxy.log_text());
    proxy.reset_counts();
    ok(run(ws
        .rbuild()
        .env(
            "RBUILD_INSECURE_REGISTRIES",
            format!("other.example,{host}"),
        )
        .args(["push", &name])));
    assert_eq!(proxy.manifest_puts().len(), 1, "{}", proxy.log_text());
    let checked_out = checked(
        registry
            .curl()
            .arg(format!("{}/v2/app/tags/list", registry.url())),
        "curl tags/list",
    );
    let tags: serde_json::Value = serde_json::from_slice(&checked_out.stdout).unwrap();
    let tags: BTreeSet<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, BTreeSet::from(["local", "remote"]));
}
