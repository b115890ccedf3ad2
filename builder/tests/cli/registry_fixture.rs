//! A real registry for the registry tests: Debian's `docker-registry` (distribution 2.8) on a
//! free 127.0.0.1 port with storage of its own, plain HTTP, HTTPS with htpasswd auth, or plain
//! HTTP with token auth (a `TokenServer` of the test's own as the realm), killed when dropped.
//! Also what those tests share for looking at a registry from outside (skopeo, curl, umoci)
//! and at rbuild's content store.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rbuild_cache::Digest;
use tempfile::TempDir;

use crate::token_server::TokenServer;
use crate::util::require_tool;

/// Whether every tool in `tools` is installed; each missing one is reported (and under
/// `CI=true` fails the test, see `require_tool`).
pub fn have_tools(tools: &[&str]) -> bool {
    // Every missing tool is named, not only the first.
    let missing = tools.iter().filter(|tool| !require_tool(tool)).count();
    missing == 0
}

/// One running `docker-registry serve`; the process is killed on drop.
pub struct TestRegistry {
    dir: TempDir,
    work: PathBuf,
    port: u16,
    child: Child,
    tls: Option<Tls>,
    /// The user and password the registry lets in, when it has auth.
    credentials: Option<(String, String)>,
    /// The realm of a registry with token auth.
    token: Option<TokenServer>,
}

/// What a client needs to trust an HTTPS registry.
struct Tls {
    ca: PathBuf,
    /// A directory holding only `ca.crt`, for skopeo's `--cert-dir`.
    cert_dir: PathBuf,
}

/// How `TestRegistry::start` sets up a registry.
struct Setup {
    tls: Option<Tls>,
    credentials: Option<(String, String)>,
    token: Option<TokenServer>,
    /// The `auth:` section of the configuration, or empty.
    auth_yaml: String,
}

/// The `service` and `issuer` of a registry with token auth.
pub const TOKEN_SERVICE: &str = "rbuild-test-registry";
pub const TOKEN_ISSUER: &str = "rbuild-test-token-issuer";

impl TestRegistry {
    /// A plain-HTTP registry without auth, or `None` (with the reason printed) when
    /// `docker-registry` or `curl` is missing outside CI.
    pub fn plain() -> Option<TestRegistry> {
        if !have_tools(&["docker-registry", "curl"]) {
            return None;
        }
        let setup = Setup {
            tls: None,
            credentials: None,
            token: None,
            auth_yaml: String::new(),
        };
        Some(TestRegistry::start(TempDir::new().unwrap(), setup))
    }

    /// A plain-HTTP registry with distribution's token auth: its realm is a `TokenServer`
    /// (see `token_server`) that gives `user` with `password` every scope asked for. `None`
    /// (with the reason printed) when a tool is missing outside CI.
    pub fn with_token_auth(user: &str, password: &str) -> Option<TestRegistry> {
        if !have_tools(&["docker-registry", "curl", "openssl"]) {
            return None;
        }
        let dir = TempDir::new().unwrap();
        let pki = dir.path().join("pki");
        fs::create_dir(&pki).unwrap();
        let token = TokenServer::start(&pki, user, password, TOKEN_SERVICE, TOKEN_ISSUER);
        let auth_yaml = format!(
            "auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
",
            realm = token.realm(),
            service = token.service(),
            issuer = token.issuer(),
            bundle = token.cert_path().display(),
        );
        let setup = Setup {
            tls: None,
            credentials: Some((user.to_string(), password.to_string())),
            token: Some(token),
            auth_yaml,
        };
        Some(TestRegistry::start(dir, setup))
    }

    /// An HTTPS registry (a certificate for IP 127.0.0.1 and DNS localhost, signed by a CA
    /// made here, see `ca_path`) that lets in `user` with `password` (htpasswd, bcrypt).
    pub fn tls_with_htpasswd(user: &str, password: &str) -> Option<TestRegistry> {
        if !have_tools(&["docker-registry", "curl", "openssl", "htpasswd"]) {
            return None;
        }
        let dir = TempDir::new().unwrap();
        let pki = dir.path().join("pki");
        fs::create_dir(&pki).unwrap();
        make_certificates(&pki);
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        assert!(htpasswd.status.success(), "htpasswd -Bbn failed");
        fs::write(pki.join("htpasswd"), &htpasswd.stdout).unwrap();
        let cert_dir = dir.path().join("client-certs");
        fs::create_dir(&cert_dir).unwrap();
        fs::copy(pki.join("ca.crt"), cert_dir.join("ca.crt")).unwrap();
        let setup = Setup {
            tls: Some(Tls {
                ca: pki.join("ca.crt"),
                cert_dir,
            }),
            credentials: Some((user.to_string(), password.to_string())),
            token: None,
            auth_yaml: format!(
                "auth:
  htpasswd:
    realm: rbuild-test
    path: {}
",
                pki.join("htpasswd").display()
            ),
        };
        Some(TestRegistry::start(dir, setup))
    }

    fn start(dir: TempDir, setup: Setup) -> TestRegistry {
        let Setup {
            tls,
            credentials,
            token,
            auth_yaml,
        } = setup;
        fs::create_dir(dir.path().join("storage")).unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let log_path = dir.path().join("registry.log");
        // The port found free may be taken before the registry binds it: then try another.
        for attempt in 1..=3 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            let yaml = config_yaml(dir.path(), port, tls.is_some(), &auth_yaml);
            fs::write(&config, yaml).unwrap();
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry starts");
            match wait_until_ready(&mut child, port, tls.as_ref()) {
                Ok(()) => {
                    return TestRegistry {
                        dir,
                        work,
                        port,
                        child,
                        tls,
                        credentials,
                        token,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if attempt < 3 && log.contains("address already in use") {
                        continue;
                    }
                    panic!("the registry did not start: {why}\n--- registry log\n{log}");
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `127.0.0.1:PORT`, as image names and `rbuild login` take it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://HOST` or `https://HOST`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The CA certificate that signed the server's (TLS registries only).
    pub fn ca_path(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS registry").ca
    }

    /// The token server of a registry with token auth.
    pub fn token_server(&self) -> &TokenServer {
        self.token.as_ref().expect("a registry with token auth")
    }

    /// A scratch directory for the test, removed with the registry.
    pub fn dir(&self) -> &Path {
        &self.work
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `HOST/NAME`, e.g. `127.0.0.1:PORT/app:1`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// skopeo's options to reach this registry, for a command whose flags carry `prefix`
    /// (`""` for inspect, `"src-"` or `"dest-"` for copy).
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut flags = match &self.tls {
            None => vec![format!("--{prefix}tls-verify=false")],
            Some(tls) => vec![format!("--{prefix}cert-dir={}", tls.cert_dir.display())],
        };
        if let Some((user, password)) = &self.credentials {
            flags.push(format!("--{prefix}creds={user}:{password}"));
        }
        flags
    }

    /// The manifest (or index) `NAME` (`app:1`) as the registry serves it, byte for byte.
    pub fn raw_manifest(&self, name: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect")
            .arg("--raw")
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{}", self.image(name)));
        checked(&mut cmd, "skopeo inspect --raw").stdout
    }

    /// `sha256:…` of the manifest `NAME` points at in the registry.
    pub fn manifest_digest(&self, name: &str) -> String {
        sha256(&self.raw_manifest(name))
    }

    /// The manifest `NAME` points at, parsed.
    pub fn manifest_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.raw_manifest(name)).unwrap()
    }

    /// The image config of `NAME` (for an index, of the machine's platform), parsed.
    pub fn raw_config(&self, name: &str) -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--config", "--raw"])
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{}", self.image(name)));
        serde_json::from_slice(&checked(&mut cmd, "skopeo inspect --config").stdout).unwrap()
    }

    /// `skopeo copy` of `NAME` from the registry to the OCI layout `layout` as `tag`.
    pub fn copy_to_oci(&self, name: &str, layout: &Path, tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy")
            .args(self.skopeo_flags("src-"))
            .arg(format!("docker://{}", self.image(name)))
            .arg(format!("oci:{}:{tag}", layout.display()));
        checked(&mut cmd, "skopeo copy");
    }

    /// `skopeo copy` of the OCI layout image `layout:tag` to `NAME` in the registry.
    pub fn copy_from_oci(&self, layout: &Path, tag: &str, name: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy")
            .args(self.skopeo_flags("dest-"))
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}", self.image(name)));
        checked(&mut cmd, "skopeo copy");
    }

    /// `skopeo copy --format v2s2` of the only image of the OCI layout `layout` to `NAME`:
    /// Docker's schema 2 manifest and media types, the same config and layer bytes.
    pub fn copy_from_oci_as_docker_v2s2(&self, layout: &Path, name: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--format", "v2s2"])
            .args(self.skopeo_flags("dest-"))
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}", self.image(name)));
        checked(&mut cmd, "skopeo copy --format v2s2");
    }

    /// Whether the registry has the manifest `NAME` (`app:1`), asked with skopeo.
    pub fn has_manifest(&self, name: &str) -> bool {
        Command::new("skopeo")
            .arg("inspect")
            .arg("--raw")
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{}", self.image(name)))
            .output()
            .unwrap()
            .status
            .success()
    }

    /// PUTs `body` as the manifest `REPO:REF` with `media_type` (curl); returns its digest.
    pub fn put_manifest(&self, name: &str, media_type: &str, body: &[u8]) -> String {
        let (repo, reference) = name.rsplit_once(':').expect("REPO:TAG");
        let file = self
            .dir()
            .join(format!("manifest-{}.json", sha256_hex(body)));
        fs::write(&file, body).unwrap();
        let mut cmd = self.curl();
        cmd.args(["-X", "PUT", "-H"])
            .arg(format!("Content-Type: {media_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("{}/v2/{repo}/manifests/{reference}", self.url()));
        checked(&mut cmd, "curl PUT manifest");
        sha256(body)
    }

    /// curl that fails on HTTP errors, trusts the CA and sends the credentials (basic auth:
    /// a registry with token auth refuses it, curl does not fetch tokens).
    pub fn curl(&self) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "--max-time", "60"]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert").arg(&tls.ca);
        }
        if let Some((user, password)) = &self.credentials {
            cmd.arg("-u").arg(format!("{user}:{password}"));
        }
        cmd
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /v2/` until it answers 200 or 401, or the process exits.
fn wait_until_ready(child: &mut Child, port: u16, tls: Option<&Tls>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("it exited ({status})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let mut curl = Command::new("curl");
            curl.args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ]);
            let url = match tls {
                Some(tls) => {
                    curl.arg("--cacert").arg(&tls.ca);
                    format!("https://127.0.0.1:{port}/v2/")
                }
                None => format!("http://127.0.0.1:{port}/v2/"),
            };
            let out = curl.arg(url).output().unwrap();
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            if last == "200" || last == "401" {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "GET /v2/ did not answer 200 or 401 in 30 s (last status: {last:?})"
    ))
}

/// A port nothing listens on now (bound and released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// distribution's configuration: filesystem storage under `dir`, deletes allowed, no
/// background upload purging; TLS from `dir/pki` when `tls`; then `auth_yaml`.
fn config_yaml(dir: &Path, port: u16, tls: bool, auth_yaml: &str) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: rbuild-test-secret
",
        storage = dir.join("storage").display()
    );
    if tls {
        let pki = dir.join("pki");
        yaml.push_str(&format!(
            "  tls:
    certificate: {cert}
    key: {key}
",
            cert = pki.join("server.crt").display(),
            key = pki.join("server.key").display(),
        ));
    }
    yaml.push_str(auth_yaml);
    yaml
}

/// A CA (`ca.crt`, `ca.key`) and a server certificate it signed for IP 127.0.0.1 and DNS
/// localhost (`server.crt`, `server.key`), P-256 keys, valid for two days.
fn make_certificates(pki: &Path) {
    fs::write(
        pki.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
            &["-subj", "/CN=rbuild test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
            &["-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(pki).args(&args);
        checked(&mut cmd, "openssl");
    }
}

/// Runs `cmd`, which must succeed; the panic shows its stderr and stdout.
pub fn checked(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Digest::of(bytes).hex()
}

/// An upload `location` (a URL or path) with the `digest=` that completes it appended to its
/// query.
pub fn with_digest_query(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

/// The entry of an index (or Docker manifest list) for the manifest `raw`, of `media_type`,
/// for the platform linux/`arch`.
pub fn platform_entry(
    media_type: impl Into<serde_json::Value>,
    raw: &[u8],
    arch: &str,
) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type.into(),
        "digest": sha256(raw),
        "size": raw.len(),
        "platform": {"architecture": arch, "os": "linux"},
    })
}

/// An index (or Docker manifest list, by `media_type`) of the entries `manifests`.
pub fn index_of(media_type: &str, manifests: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    })
}

/// Every blob file in the content store of the state root `root`, by file name (hex), with
/// the sha256 of its content (hex): a sound store has the two equal everywhere.
pub fn store_blobs(root: &Path) -> BTreeMap<String, String> {
    let dir = root.join("content/blobs/sha256");
    let Ok(entries) = fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            let mut hasher =
                rbuild_cache::digest::HashingReader::new(fs::File::open(e.path()).unwrap());
            std::io::copy(&mut hasher, &mut std::io::sink()).unwrap();
            let (_, digest, _) = hasher.finish();
            (e.file_name().to_string_lossy().into_owned(), digest.hex())
        })
        .collect()
}

/// `umoci unpack` of `layout:tag` into `bundle` (rootless, as the other tests do).
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let mut cmd = Command::new("umoci");
    cmd.args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle);
    checked(&mut cmd, "umoci unpack");
}

/// The image config of `layout:tag` (an OCI layout directory), parsed.
pub fn oci_layout_config(layout: &Path, tag: &str) -> serde_json::Value {
    let manifest = oci_layout_manifest(layout, tag);
    let config = read_blob(layout, manifest["config"]["digest"].as_str().unwrap());
    serde_json::from_slice(&config).unwrap()
}

/// The manifest of `layout:tag`, parsed.
pub fn oci_layout_manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let digest = oci_layout_manifest_digest(layout, tag);
    serde_json::from_slice(&read_blob(layout, &digest)).unwrap()
}

/// The digest `index.json` of the OCI layout gives for `tag`.
pub fn oci_layout_manifest_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let found = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"));
    found["digest"].as_str().unwrap().to_string()
}

/// The blob `digest` of an OCI layout directory.
pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let mut bytes = Vec::new();
    fs::File::open(layout.join("blobs/sha256").join(hex))
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Writes `bytes` to `path`, creating the parent directories.
pub fn write_file(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::File::create(path).unwrap().write_all(bytes).unwrap();
}

/// An OCI layout directory `dir` holding one image, `tag`: one gzip layer with `files`
/// (path, content), for the platform rbuild builds by default. Made with the library, so
/// tests of the fixtures need no rbuild binary.
pub fn small_oci_layout(dir: &Path, tag: &str, files: &[(&str, &[u8])]) {
    use rbuild_cache::image::oci_layout::{write_oci_dir, LayoutImage};
    use rbuild_cache::image::{media_types, Blob, Descriptor, ImageConfig, Manifest, MemBlobs};
    use rbuild_cache::layer::{write_layer, ChangeSet, Compression, LayerOptions};

    let tree = TempDir::new().unwrap();
    for (path, content) in files {
        write_file(&tree.path().join(path), content);
    }
    let mut layer = Vec::new();
    let info = write_layer(
        &ChangeSet::from_dir(tree.path()).unwrap(),
        &mut layer,
        &LayerOptions {
            compression: Compression::Gzip,
            threads: 1,
            source_date_epoch: Some(0),
        },
    )
    .unwrap();
    let blobs = MemBlobs::new();
    blobs.insert(layer);
    let platform = rbuild_cache::image::Platform::new("linux", host_arch(), None);
    let mut config = ImageConfig::new_for(&platform);
    config.rootfs.diff_ids = vec![info.diff_id];
    let config = Blob::canonical(config).unwrap();
    blobs.insert(config.bytes().to_vec());
    let manifest = Manifest::new_oci(
        config.descriptor(media_types::OCI_CONFIG),
        vec![Descriptor::new(
            info.media_type(),
            info.blob_digest,
            info.size,
        )],
    );
    let manifest = Blob::canonical(manifest).unwrap();
    blobs.insert(manifest.bytes().to_vec());
    let image = LayoutImage::named(
        manifest.descriptor(media_types::OCI_MANIFEST),
        &format!("image:{tag}"),
    )
    .unwrap();
    write_oci_dir(dir, &[image], &blobs).unwrap();
}

/// A second platform's architecture for multi-platform tests: arm64, or amd64 on arm64.
pub fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// The OCI name of the machine's architecture (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
