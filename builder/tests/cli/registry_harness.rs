//! What the registry tests share: a workspace of their own for rbuild (state roots, contexts,
//! a docker config), a plain registry with a fault proxy in front of it, and the steps and
//! checks several tests take (builds to a local directory, a login, an index of platforms,
//! a rename through `save` and `load`, a sound content store).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::fault_proxy::{Exchange, FaultProxy};
use crate::registry_fixture::{
    checked, have_tools, index_of, platform_entry, store_blobs, write_file, TestRegistry,
};
use crate::util::{rbuild, run, xorshift_bytes, Output};

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

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

    /// `rbuild build EXTRA… -o type=local,dest=DEST CONTEXT` on the state root `root`.
    pub(crate) fn build_local(
        &self,
        root: &str,
        extra: &[&str],
        dest: &Path,
        ctx: &Path,
    ) -> Output {
        run(self
            .rbuild_on(root)
            .arg("build")
            .args(extra)
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(ctx))
    }

    /// `build_local` into `out-NAME` of the workspace, which must succeed; returns that
    /// directory.
    pub(crate) fn build_to_local(
        &self,
        root: &str,
        extra: &[&str],
        name: &str,
        ctx: &Path,
    ) -> PathBuf {
        let dest = self.path().join(format!("out-{name}"));
        let out = self.build_local(root, extra, &dest, ctx);
        assert_eq!(out.code, 0, "{extra:?}: {out}");
        dest
    }

    /// `rbuild save NAME` on the state root `root`, unpacked into the directory `dir` of the
    /// workspace (an OCI layout), which is returned.
    pub(crate) fn save_to_layout(&self, root: &str, name: &str, dir: &str) -> PathBuf {
        let tar = self.path().join(format!("{dir}.tar"));
        ok(run(self
            .rbuild_on(root)
            .args(["save", name, "-o"])
            .arg(&tar)));
        let layout = self.path().join(dir);
        fs::create_dir(&layout).unwrap();
        let mut untar = Command::new("tar");
        untar.arg("-xf").arg(&tar).arg("-C").arg(&layout);
        checked(&mut untar, "tar -xf");
        layout
    }

    /// The OCI layout directory `layout`, tarred, `rbuild load`ed on the state root `root`.
    pub(crate) fn load_layout(&self, root: &str, layout: &Path) {
        let tar = layout.with_extension("loaded.tar");
        let mut pack = Command::new("tar");
        pack.arg("-cf").arg(&tar).arg("-C").arg(layout).arg(".");
        checked(&mut pack, "tar -cf");
        ok(run(self.rbuild_on(root).arg("load").arg("-i").arg(&tar)));
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
    xorshift_bytes(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), len)
}

/// The `sha256:…` digests of a manifest's config and layers.
pub(crate) fn manifest_blobs(manifest: &serde_json::Value) -> BTreeSet<String> {
    let mut blobs: BTreeSet<String> = layers_of(manifest).into_iter().collect();
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

/// A plain registry with a fault proxy in front of it, and a workspace; `None` (with the
/// reason printed) when the registry's tools or one of `tools` are missing outside CI.
pub(crate) fn proxied_registry(tools: &[&str]) -> Option<(TestRegistry, FaultProxy, Workspace)> {
    let registry = TestRegistry::plain().filter(|_| have_tools(tools))?;
    let proxy = FaultProxy::start(&registry.host());
    Some((registry, proxy, Workspace::new()))
}

/// `rbuild login HOST -u USER --password-stdin` with `cmd`, the password on stdin.
pub(crate) fn login_via_stdin(
    cmd: &mut assert_cmd::Command,
    host: &str,
    user: &str,
    password: &str,
) -> Output {
    run(cmd
        .args(["login", host, "-u", user, "--password-stdin"])
        .write_stdin(format!("{password}\n")))
}

/// The `sha256:…` digests of a manifest's layers, in order.
pub(crate) fn layers_of(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts the file `name` of `dir` holds the text `expected`.
#[track_caller]
pub(crate) fn assert_file_text(dir: &Path, name: &str, expected: &str) {
    assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), expected);
}

/// Whether the store of the state root `root` holds the blob `digest` (`sha256:…`).
pub(crate) fn store_has(root: &Path, digest: &str) -> bool {
    store_blobs(root).contains_key(digest.trim_start_matches("sha256:"))
}

/// Renames the image `from` of the state root `root` to `to` (`REPO:TAG` names), through
/// `rbuild save` and `rbuild load`, which keep every byte (rbuild has no `tag`). `check`
/// looks at the saved `index.json` first.
pub(crate) fn rename_in_store(
    ws: &Workspace,
    root: &str,
    from: &str,
    to: &str,
    check: impl FnOnce(&serde_json::Value),
) {
    let layout = ws.save_to_layout(root, from, "rename-layout");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    check(&index);
    let tag = to.rsplit_once(':').unwrap().1;
    index["manifests"][0]["annotations"] = serde_json::json!({
        "io.containerd.image.name": to,
        "org.opencontainers.image.ref.name": tag,
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    ws.load_layout(root, &layout);
}

/// An index `REPO:multi` in `registry` of two images built by rbuild, one per platform of
/// `arches`, in that order (`REPO:ARCH`, each `FROM scratch` with `/marker` saying its
/// architecture). Returns the index's bytes.
pub(crate) fn push_platform_index(
    ws: &Workspace,
    registry: &TestRegistry,
    repo: &str,
    arches: [&str; 2],
) -> Vec<u8> {
    let mut manifests = Vec::new();
    for arch in arches {
        let marker = format!("marker of {arch}\n");
        let ctx = ws.context(
            &format!("base-{arch}"),
            "FROM scratch\nCOPY marker /marker\n",
            &[("marker", marker.as_bytes())],
        );
        let tag = format!("{repo}:{arch}");
        let platform = format!("linux/{arch}");
        let name = registry.image(&tag);
        ok(ws.build(&ctx, &["--platform", &platform, "-t", &name, "--push"]));
        let raw = registry.raw_manifest(&tag);
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        manifests.push(platform_entry(manifest["mediaType"].clone(), &raw, arch));
    }
    let index = serde_json::to_vec(&index_of(OCI_INDEX, manifests)).unwrap();
    let digest = registry.put_manifest(&format!("{repo}:multi"), OCI_INDEX, &index);
    assert_eq!(registry.manifest_digest(&format!("{repo}:multi")), digest);
    index
}
