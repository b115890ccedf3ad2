//! Registries: `build --push`, `push`, `pull`, `FROM` a registry image, `login`/`logout`, TLS
//! with a CA of the test's own, and retries, against Debian's distribution registry (with a
//! fault proxy in front of it where a test breaks or counts requests). What rbuild pushed is
//! read back with skopeo and umoci: the digests must be the ones rbuild reports
//! (`--metadata-file`) and writes (`rbuild save`), since a push keeps every byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::fault_proxy::{max_in_flight, Fault, FaultProxy};
use crate::registry_fixture::{
    checked, have_tools, host_arch, oci_layout_config, oci_layout_manifest,
    oci_layout_manifest_digest, other_arch, sha256_hex, store_blobs, umoci_unpack, write_file,
    TestRegistry,
};
use crate::registry_harness::{
    assert_file_text, assert_store_sound, layers_of, login_via_stdin, manifest_blobs, ok,
    proxied_registry, push_platform_index, random_bytes, store_has, three_layer_context,
    uploaded_digest, Workspace,
};
use crate::util::{can_run_containers, run, Output};

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

/// The digests of the completed blob uploads the proxy saw, with how often each.
fn upload_counts(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for upload in proxy.completed_blob_uploads() {
        *counts.entry(uploaded_digest(&upload)).or_default() += 1;
    }
    counts
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
    let Some(registry) = TestRegistry::plain().filter(|_| have_tools(&["skopeo", "umoci"])) else {
        return;
    };
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
    // The store keeps the layers as the steps committed them (uncompressed, as Docker's
    // store does; `rbuild save` writes those bytes); a push sends them gzip, the very
    // manifest the `--push` build of the same image sent.
    assert_eq!(built3.config, built.config);
    assert_ne!(built3.manifest, built.manifest);
    for name in ["app:3", "other/app:4"] {
        assert_eq!(registry.manifest_digest(name), built.manifest, "{name}");
    }
    let saved = ws.save_to_layout("root", &name3, "saved");
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
    let Some(registry) =
        TestRegistry::tls_with_htpasswd("tester", PASSWORD).filter(|_| have_tools(&["skopeo"]))
    else {
        return;
    };
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
    let out = keep(login_via_stdin(
        ws.rbuild().env("SSL_CERT_FILE", &ca),
        &host,
        "tester",
        PASSWORD,
    ));
    assert_eq!(out.code, 0, "{out}");
    let config = ws.docker_config_json();
    let entry = &config["auths"][&host];
    assert_eq!(
        entry["auth"].as_str(),
        Some(STANDARD.encode(format!("tester:{PASSWORD}")).as_str()),
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

#[test]
fn a_run_step_builds_on_a_base_pulled_from_the_registry() {
    let Some(registry) = TestRegistry::plain() else {
        return;
    };
    if !can_run_containers("the RUN on a registry base") {
        return;
    }
    let Some(busybox) = crate::util::host_static_busybox() else {
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
        let dest = ws.build_to_local(root, extra, &extra.len().to_string(), &app);
        assert_file_text(&dest, "etc/marker", "base marker\n");
        assert_file_text(&dest, "ran.txt", "base marker\nran\n");
        assert!(dest.join("bin/busybox").is_file());
        assert_store_sound(&ws.path().join(root));
    }
}

#[test]
fn a_multi_platform_index_in_the_registry_gives_each_platform_its_base() {
    let Some(registry) = TestRegistry::plain().filter(|_| have_tools(&["skopeo"])) else {
        return;
    };
    let ws = Workspace::new();
    let native = host_arch();
    let other = other_arch();
    push_platform_index(&ws, &registry, "base", [native, other]);
    for arch in [native, other] {
        let config = registry.raw_config(&format!("base:{arch}"));
        assert_eq!(config["architecture"], arch, "{config}");
        assert_eq!(config["os"], "linux", "{config}");
    }

    let app = ws.context(
        "app",
        &format!("FROM {}\nCOPY note /note\n", registry.image("base:multi")),
        &[("note", b"copied\n")],
    );
    let cases = [(Some(other), other), (Some(native), native), (None, native)];
    for (i, (platform, expected)) in cases.into_iter().enumerate() {
        let dest = ws.path().join(format!("out{i}"));
        let flag = platform.map(|arch| format!("linux/{arch}"));
        let extra: Vec<&str> = flag.iter().flat_map(|f| ["--platform", f]).collect();
        let out = ws.build_local(&format!("fresh{i}"), &extra, &dest, &app);
        assert_eq!(out.code, 0, "{platform:?}: {out}");
        assert_eq!(
            fs::read_to_string(dest.join("marker")).unwrap(),
            format!("marker of {expected}\n"),
            "{platform:?}"
        );
        assert_file_text(&dest, "note", "copied\n");
    }

    // `rbuild pull --platform`: that platform's blobs only.
    let layer_of =
        |arch: &str| layers_of(&registry.manifest_json(&format!("base:{arch}")))[0].clone();
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

#[test]
fn pushes_and_pulls_get_through_dropped_connections_errors_and_429() {
    let Some((registry, proxy, ws)) = proxied_registry(&[]) else {
        return;
    };
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
        retry_after_secs: 2,
    };
    proxy.add_fault("HEAD", "^/v2/app/blobs/sha256:", too_many, 1);
    let out = run(ws.rbuild().args(["push", &name]));
    assert_eq!(out.code, 0, "{out}\n{}", proxy.log_text());
    proxy.assert_faults_all_fired();
    // The image built into the store, its layers gzip for the registry.
    let pushed = registry.manifest_json("app:1");
    assert_eq!(pushed["config"]["digest"], built.config.as_str());
    // After a 429 rbuild waits what its Retry-After says (2 s, twice its own floor for rate
    // limits) before asking about that blob again.
    let log = proxy.requests();
    let refused = log.iter().position(|e| e.fault == Some(too_many)).unwrap();
    let blob_hex = log[refused].path.rsplit(':').next().unwrap().to_string();
    let next = log[refused + 1..]
        .iter()
        .find(|e| e.path.contains(&blob_hex) || e.query.contains(&blob_hex))
        .expect("the blob was asked about again after the 429");
    assert!(
        next.at.duration_since(log[refused].done) >= Duration::from_millis(1950),
        "asked again {:?} after a 429\n{}",
        next.at.duration_since(log[refused].done),
        proxy.log_text()
    );
    let big_layer = layers_of(&registry.manifest_json("app:1"))[2].clone();
    let big_hex = big_layer.trim_start_matches("sha256:").to_string();

    // Pull (FROM through the proxy) on fresh roots: a body cut short, then one corrupted.
    let app = ws.context(
        "from-proxy",
        &format!("FROM {name}\nLABEL pulled=yes\n"),
        &[],
    );
    // A rate-limited tag resolve waits what its Retry-After says too.
    let slow = Fault::TooManyRequests {
        retry_after_secs: 2,
    };
    proxy.add_fault("HEAD", "^/v2/app/manifests/1$", slow, 1);
    let out = ws.build_local("root-429", &[], &ws.path().join("out-429"), &app);
    assert_eq!(out.code, 0, "{out}\n{}", proxy.log_text());
    proxy.assert_faults_all_fired();
    let log = proxy.requests();
    let refused = log.iter().rposition(|e| e.fault == Some(slow)).unwrap();
    let next = log[refused + 1..]
        .iter()
        .find(|e| e.path == "/v2/app/manifests/1")
        .expect("the tag was resolved again after the 429");
    assert!(
        next.at.duration_since(log[refused].done) >= Duration::from_millis(1950),
        "resolved again {:?} after a 429\n{}",
        next.at.duration_since(log[refused].done),
        proxy.log_text()
    );
    let faults = [
        ("root-cut", Fault::DropMidBody),
        ("root-flip", Fault::FlipByte),
    ];
    for (root, fault) in faults {
        proxy.reset_counts();
        proxy.add_fault("GET", &format!("^/v2/app/blobs/{big_layer}$"), fault, 1);
        let dest = ws.path().join(format!("out-{root}"));
        let out = ws.build_local(root, &[], &dest, &app);
        assert_eq!(out.code, 0, "{fault:?}: {out}\n{}", proxy.log_text());
        proxy.assert_faults_all_fired();
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
        assert!(store_has(&ws.path().join(root), &big_layer));
    }

    // Corrupted every time: the build fails naming the blob, and the store never keeps it.
    proxy.add_fault(
        "GET",
        &format!("^/v2/app/blobs/{big_layer}$"),
        Fault::FlipByte,
        100,
    );
    let out = ws.build_local("root-bad", &[], &ws.path().join("out-bad"), &app);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&big_hex), "{out}");
    let blobs = store_blobs(&ws.path().join("root-bad"));
    assert!(!blobs.contains_key(&big_hex), "{blobs:?}");
    assert_store_sound(&ws.path().join("root-bad"));
}

#[test]
fn a_second_build_from_a_registry_base_fetches_no_blob() {
    let Some((_registry, proxy, ws)) = proxied_registry(&[]) else {
        return;
    };
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
        let dest = ws.build_to_local("consumer", extra, &builds.to_string(), &app);
        assert_file_text(&dest, "note", "app\n");
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
    let Some((registry, proxy, ws)) = proxied_registry(&[]) else {
        return;
    };
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
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
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
