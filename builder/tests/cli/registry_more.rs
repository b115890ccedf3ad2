//! More registry behaviour against a real registry: a tag re-resolved by every build, blobs
//! mounted from a sibling repository (with and without token auth), a login refused with a
//! 5xx, a registry that answers manifest PUTs without `Location` (as Amazon ECR did), an index
//! named by digest completed for a second platform, a pull cut short, and a manifest that
//! lists one layer twice.

use std::collections::BTreeSet;
use std::fs;

use crate::fault_proxy::{Exchange, Fault, FaultProxy};
use crate::registry_fixture::{
    checked, have_tools, host_arch, other_arch, sha256, sha256_hex, store_blobs, with_digest_query,
    TestRegistry,
};
use crate::registry_harness::{
    assert_file_text, assert_store_sound, layers_of, login_via_stdin, manifest_blobs, ok,
    proxied_registry, push_platform_index, random_bytes, rename_in_store, store_has,
    three_layer_context, uploaded_digest, Workspace,
};
use crate::util::run;

/// The digest at the end of a blob request's path (`/v2/REPO/blobs/sha256:…`).
fn blob_of(exchange: &Exchange) -> String {
    exchange.path.rsplit('/').next().unwrap().to_string()
}

/// The digests of the blobs fetched through `proxy`, each once.
fn fetched_blobs(proxy: &FaultProxy) -> BTreeSet<String> {
    proxy.blob_fetches().iter().map(blob_of).collect()
}

#[test]
fn a_tag_is_resolved_again_by_every_build_and_a_moved_tag_fetches_only_its_new_blobs() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let base = ws.context(
        "base",
        "FROM scratch\nCOPY shared /shared\nCOPY marker /marker\n",
        &[
            ("shared", &random_bytes(41, 64 << 10)),
            ("marker", b"first marker\n"),
        ],
    );
    // Pushed straight to the registry: the proxy sees only the consumer.
    let pushed = registry.image("base:1");
    ok(ws.build(&base, &["-t", &pushed, "--push"]));
    let app = ws.context(
        "app",
        &format!("FROM {}/base:1\nCOPY note /note\n", proxy.host()),
        &[("note", b"app\n")],
    );

    let dest = ws.build_to_local("consumer", &[], "1", &app);
    assert_file_text(&dest, "marker", "first marker\n");
    assert!(!proxy.blob_fetches().is_empty(), "{}", proxy.log_text());

    // Again: one HEAD of the tag, nothing else from the registry's manifests or blobs.
    proxy.reset_counts();
    let dest = ws.build_to_local("consumer", &[], "2", &app);
    assert_file_text(&dest, "marker", "first marker\n");
    let manifest_requests: Vec<String> = proxy
        .matching(".*", "^/v2/base/manifests/")
        .iter()
        .map(Exchange::line)
        .collect();
    assert_eq!(
        manifest_requests,
        ["HEAD /v2/base/manifests/1 -> 200"],
        "{}",
        proxy.log_text()
    );
    assert!(proxy.blob_fetches().is_empty(), "{}", proxy.log_text());

    // The tag moves to an image with another marker: the next build sees it, and fetches
    // only what the old image did not have.
    let old = registry.manifest_json("base:1");
    fs::write(base.join("marker"), "second marker\n").unwrap();
    ok(ws.build(&base, &["-t", &pushed, "--push"]));
    let new = registry.manifest_json("base:1");
    assert_eq!(old["layers"][0], new["layers"][0], "the shared layer");
    assert_ne!(old["layers"][1], new["layers"][1], "the marker layer");
    proxy.reset_counts();
    let dest = ws.build_to_local("consumer", &[], "3", &app);
    assert_file_text(&dest, "marker", "second marker\n");
    assert_file_text(&dest, "note", "app\n");
    assert_eq!(
        proxy.count("HEAD", "^/v2/base/manifests/1$"),
        1,
        "{}",
        proxy.log_text()
    );
    let new_blobs: BTreeSet<String> = manifest_blobs(&new)
        .difference(&manifest_blobs(&old))
        .cloned()
        .collect();
    assert_eq!(new_blobs.len(), 2, "the marker layer and the config");
    assert_eq!(fetched_blobs(&proxy), new_blobs, "{}", proxy.log_text());
    assert_eq!(
        proxy.blob_fetches().len(),
        new_blobs.len(),
        "{}",
        proxy.log_text()
    );
    assert_store_sound(&ws.path().join("consumer"));
}

/// Asserts the push of `two` through `proxy` mounted every one of `layers` from `one`, with
/// a 201, and never sent their bytes; and that rbuild said so.
fn assert_mounted_from_one(proxy: &FaultProxy, layers: &[String], stderr: &str) {
    let mount = regex::Regex::new(r"(?:^|&)mount=sha256(?::|%3[Aa])([0-9a-f]{64})").unwrap();
    let posts = proxy.matching("POST", "^/v2/two/blobs/uploads/$");
    let mounted: BTreeSet<String> = posts
        .iter()
        .filter(|e| e.status == Some(201) && e.query.split('&').any(|p| p == "from=one"))
        .filter_map(|e| mount.captures(&e.query))
        .map(|caps| format!("sha256:{}", &caps[1]))
        .collect();
    let sent: BTreeSet<String> = proxy
        .blob_upload_attempts()
        .iter()
        .filter(|e| e.query.contains("digest="))
        .map(uploaded_digest)
        .collect();
    for layer in layers {
        assert!(
            mounted.contains(layer),
            "{layer} was not mounted from one\n{}",
            proxy.log_text()
        );
        assert!(
            !sent.contains(layer),
            "{layer} was uploaded\n{}",
            proxy.log_text()
        );
    }
    assert!(stderr.contains("mounted from one"), "{stderr}");
}

/// Pushes image A (one COPY) to `PROXY/one:1`, then B (A and one more COPY) to
/// `PROXY/two:1`, both with rbuild on the workspace's main root. Returns what the second push
/// printed on stderr; the proxy's log then holds the second build and push only.
fn push_one_then_two(ws: &Workspace, proxy: &FaultProxy) -> String {
    let a = ws.context(
        "a",
        "FROM scratch\nCOPY a.bin /a.bin\n",
        &[("a.bin", &random_bytes(51, 64 << 10))],
    );
    let one = format!("{}/one:1", proxy.host());
    ok(ws.build(&a, &["-t", &one, "--push"]));
    proxy.reset_counts();
    let b = ws.context(
        "b",
        &format!("FROM {one}\nCOPY b.bin /b.bin\n"),
        &[("b.bin", &random_bytes(52, 64 << 10))],
    );
    let two = format!("{}/two:1", proxy.host());
    let out = ok(ws.build(&b, &["-t", &two, "--push"]));
    out.stderr
}

#[test]
fn a_push_mounts_the_layers_of_a_sibling_repository() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let stderr = push_one_then_two(&ws, &proxy);
    let a_layers = layers_of(&registry.manifest_json("one:1"));
    let b = registry.manifest_json("two:1");
    assert_eq!(layers_of(&b)[..a_layers.len()], a_layers[..]);
    assert_mounted_from_one(&proxy, &a_layers, &stderr);
}

#[test]
fn a_push_with_token_auth_mounts_with_a_token_for_both_repositories() {
    const USER: &str = "mounter";
    const PASSWORD: &str = "mount-Pw17";
    let Some(registry) =
        TestRegistry::with_token_auth(USER, PASSWORD).filter(|_| have_tools(&["skopeo"]))
    else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let tokens = registry.token_server();
    let ws = Workspace::new();
    ok(login_via_stdin(
        &mut ws.rbuild(),
        &proxy.host(),
        USER,
        PASSWORD,
    ));
    let stderr = push_one_then_two(&ws, &proxy);
    let a_layers = layers_of(&registry.manifest_json("one:1"));
    assert_mounted_from_one(&proxy, &a_layers, &stderr);
    assert!(
        tokens.requests().iter().any(|r| r.status == 200
            && r.user.as_deref() == Some(USER)
            && r.scopes.iter().any(|s| s == "repository:two:pull,push")
            && r.scopes.iter().any(|s| s == "repository:one:pull")),
        "no token was asked for with both scopes:\n{}",
        tokens.log_text()
    );
}

#[test]
fn a_login_answered_503_fails_naming_the_host_and_stores_nothing() {
    let Some((_registry, proxy, ws)) = proxied_registry(&[]) else {
        return;
    };
    proxy.add_fault(".*", "", Fault::Status(503), 1000);
    let host = proxy.host();
    let out = run(ws.rbuild().args(["login", &host, "-u", "u", "-p", "p"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    assert!(out.stderr.contains("503"), "{out}");
    assert!(
        proxy
            .requests()
            .iter()
            .any(|e| e.fault == Some(Fault::Status(503))),
        "{}",
        proxy.log_text()
    );
    let config = ws.docker_config_json();
    assert!(
        config.get("auths").and_then(|a| a.get(&host)).is_none(),
        "{config}"
    );
}

#[test]
fn an_index_pushes_to_a_registry_that_answers_manifest_puts_without_location() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let index = push_platform_index(&ws, &registry, "x", ["amd64", "arm64"]);
    let index_digest = sha256(&index);

    // Both platforms pulled: the whole index is in the store.
    let source = registry.image("x:multi");
    for platform in ["linux/arm64", "linux/amd64"] {
        ok(run(ws.rbuild_on("mover").args([
            "pull",
            "--platform",
            platform,
            &source,
        ])));
    }
    let target = format!("{}/y:multi", proxy.host());
    rename_in_store(&ws, "mover", &source, &target, |index| {
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    });

    proxy.add_fault("PUT", "^/v2/y/manifests/", Fault::StripLocation, 1000);
    let out = run(ws.rbuild_on("mover").args(["push", &target]));
    assert_eq!(out.code, 0, "{out}\n{}", proxy.log_text());
    let puts = proxy.manifest_puts();
    assert_eq!(puts.len(), 3, "{}", proxy.log_text());
    assert!(
        puts.iter()
            .all(|e| e.status == Some(201) && e.fault == Some(Fault::StripLocation)),
        "{}",
        proxy.log_text()
    );
    assert_eq!(registry.raw_manifest("y:multi"), index);
    assert_eq!(registry.manifest_digest("y:multi"), index_digest);
    for arch in ["amd64", "arm64"] {
        let digest = registry.manifest_digest(&format!("x:{arch}"));
        assert!(
            registry.has_manifest(&format!("y@{digest}")),
            "y lacks the {arch} manifest {digest}"
        );
    }
}

#[test]
fn an_index_named_by_digest_and_pulled_for_one_platform_is_completed_for_another() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let index_digest = sha256(&push_platform_index(
        &ws,
        &registry,
        "x",
        ["amd64", "arm64"],
    ));
    let native = host_arch();
    let other = other_arch();
    let pinned = format!("{}/x@{index_digest}", proxy.host());
    ok(run(ws.rbuild_on("pinned").args([
        "pull",
        "--platform",
        &format!("linux/{other}"),
        &pinned,
    ])));

    proxy.reset_counts();
    let app = ws.context(
        "app",
        &format!("FROM {pinned}\nCOPY note /note\n"),
        &[("note", b"on the pinned index\n")],
    );
    let dest = ws.build_to_local("pinned", &[], "app", &app);
    assert_file_text(&dest, "marker", &format!("marker of {native}\n"));
    assert_file_text(&dest, "note", "on the pinned index\n");
    // The machine's platform came from the registry; the other one's blobs did not again.
    let fetched = fetched_blobs(&proxy);
    let native_blobs = manifest_blobs(&registry.manifest_json(&format!("x:{native}")));
    let other_blobs = manifest_blobs(&registry.manifest_json(&format!("x:{other}")));
    assert_eq!(fetched, native_blobs, "{}", proxy.log_text());
    assert!(fetched.is_disjoint(&other_blobs), "{}", proxy.log_text());
    assert_store_sound(&ws.path().join("pinned"));
}

#[test]
fn a_pull_cut_short_leaves_the_store_usable() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let base = three_layer_context(&ws, "base", [61, 62, 63]);
    ok(ws.build(&base, &["-t", &registry.image("app:1"), "--push"]));
    let layer = layers_of(&registry.manifest_json("app:1"))[1].clone();
    let app = ws.context(
        "app",
        &format!("FROM {}/app:1\nCOPY note /note\n", proxy.host()),
        &[("note", b"after the cut\n")],
    );

    // Every fetch of the middle layer is dropped: the build fails naming it.
    proxy.add_fault(
        "GET",
        &format!("^/v2/app/blobs/{layer}$"),
        Fault::DropBeforeResponse,
        1000,
    );
    let cut = ws.path().join("cut");
    let out = ws.build_local("cut", &[], &ws.path().join("out-failed"), &app);
    assert_eq!(out.code, 1, "{out}\n{}", proxy.log_text());
    assert!(out.stderr.contains(&layer), "{out}");
    assert!(
        proxy.count("GET", &format!("^/v2/app/blobs/{layer}$")) >= 1,
        "{}",
        proxy.log_text()
    );
    assert_store_sound(&cut);
    let kept: BTreeSet<String> = store_blobs(&cut).into_keys().collect();
    assert!(
        !kept.contains(layer.trim_start_matches("sha256:")),
        "{kept:?}"
    );

    // Without the fault the same build succeeds, fetching only what the store lacks.
    proxy.clear_faults();
    proxy.reset_counts();
    let dest = ws.build_to_local("cut", &[], "app", &app);
    for i in 0..3 {
        let name = format!("f{i}.bin");
        assert_eq!(
            fs::read(dest.join(&name)).unwrap(),
            fs::read(base.join(&name)).unwrap(),
            "{name}"
        );
    }
    assert_file_text(&dest, "note", "after the cut\n");
    let fetched = fetched_blobs(&proxy);
    assert!(fetched.contains(&layer), "{}", proxy.log_text());
    for digest in &fetched {
        assert!(
            !kept.contains(digest.trim_start_matches("sha256:")),
            "{digest} was in the store and fetched again\n{}",
            proxy.log_text()
        );
    }
    assert_store_sound(&cut);
}

/// Uploads `bytes` as a blob of `repo` with curl: POST opens an upload, one PUT to its
/// `Location` with `digest=` sends the bytes. Returns the digest.
fn upload_blob(registry: &TestRegistry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let file = registry.dir().join(format!("blob-{}", sha256_hex(bytes)));
    fs::write(&file, bytes).unwrap();
    let out = checked(
        registry
            .curl()
            .args(["-X", "POST", "-o", "/dev/null", "-D", "-"])
            .arg(format!("{}/v2/{repo}/blobs/uploads/", registry.url())),
        "curl POST upload",
    );
    let headers = String::from_utf8(out.stdout).unwrap();
    let location = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Location in\n{headers}"));
    let location = if location.starts_with('/') {
        format!("{}{location}", registry.url())
    } else {
        location
    };
    checked(
        registry
            .curl()
            .args(["-X", "PUT", "-H", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(with_digest_query(&location, &digest)),
        "curl PUT blob",
    );
    digest
}

/// A base whose manifest lists its one layer twice (and its config the diff ID twice):
/// `app:1` (`FROM scratch`, `COPY data /data`) built and pushed by rbuild, its manifest and
/// config rewritten and uploaded with curl as `app:dup`.
struct DoubledLayer {
    /// `/data` of the image.
    data: Vec<u8>,
    layer: String,
    config: String,
}

fn push_doubled_layer(ws: &Workspace, registry: &TestRegistry) -> DoubledLayer {
    let data = random_bytes(71, 64 << 10);
    let base = ws.context(
        "base",
        "FROM scratch\nCOPY data /data\n",
        &[("data", &data)],
    );
    ok(ws.build(&base, &["-t", &registry.image("app:1"), "--push"]));

    let mut manifest = registry.manifest_json("app:1");
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config = checked(
        registry
            .curl()
            .arg("-L")
            .arg(format!("{}/v2/app/blobs/{config_digest}", registry.url())),
        "curl GET config",
    )
    .stdout;
    assert_eq!(sha256(&config), config_digest);
    let mut config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array_mut().unwrap();
    assert_eq!(diff_ids.len(), 1, "{config}");
    diff_ids.push(diff_ids[0].clone());
    let config = serde_json::to_vec(&config).unwrap();
    let new_config = upload_blob(registry, "app", &config);
    manifest["config"]["digest"] = new_config.clone().into();
    manifest["config"]["size"] = config.len().into();
    let layers = manifest["layers"].as_array_mut().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    layers.push(layers[0].clone());
    let layer = layers[0]["digest"].as_str().unwrap().to_string();
    let media_type = manifest["mediaType"].as_str().unwrap().to_string();
    registry.put_manifest(
        "app:dup",
        &media_type,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    assert_eq!(
        layers_of(&registry.manifest_json("app:dup")),
        [layer.clone(), layer.clone()]
    );
    DoubledLayer {
        data,
        layer,
        config: new_config,
    }
}

/// Asserts the proxy saw one GET of each of the doubled image's layer and config.
fn assert_fetched_once(proxy: &FaultProxy, doubled: &DoubledLayer) {
    for blob in [&doubled.layer, &doubled.config] {
        assert_eq!(
            proxy.count("GET", &format!("^/v2/app/blobs/{blob}$")),
            1,
            "{blob}\n{}",
            proxy.log_text()
        );
    }
}

#[test]
fn a_layer_listed_twice_is_fetched_once() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let doubled = push_doubled_layer(&ws, &registry);
    ok(run(ws
        .rbuild_on("fresh")
        .args(["pull", &format!("{}/app:dup", proxy.host())])));
    assert_fetched_once(&proxy, &doubled);
    assert!(store_has(&ws.path().join("fresh"), &doubled.layer));
    assert_store_sound(&ws.path().join("fresh"));
}

#[test]
fn a_base_listing_a_layer_twice_builds() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let doubled = push_doubled_layer(&ws, &registry);
    let app = ws.context(
        "app",
        &format!("FROM {}/app:dup\nCOPY note /note\n", proxy.host()),
        &[("note", b"on a doubled layer\n")],
    );
    let dest = ws.build_to_local("fresh", &[], "app", &app);
    assert_eq!(fs::read(dest.join("data")).unwrap(), doubled.data);
    assert_file_text(&dest, "note", "on a doubled layer\n");
    assert_fetched_once(&proxy, &doubled);
    assert_store_sound(&ws.path().join("fresh"));
}

/// A build for two platforms resolves a base's tag once (one HEAD), so both images come from
/// the same index even if the tag moves meanwhile.
#[test]
fn a_two_platform_build_resolves_its_base_tag_once() {
    let Some((registry, proxy, ws)) = proxied_registry(&[]) else {
        return;
    };
    let (native, other) = (host_arch(), other_arch());
    push_platform_index(&ws, &registry, "base", [native, other]);
    let app = ws.context(
        "app",
        &format!("FROM {}/base:multi\nCOPY note /note\n", proxy.host()),
        &[("note", b"app\n")],
    );
    proxy.reset_counts();
    let platforms = format!("linux/{native},linux/{other}");
    let dest = ws.build_to_local("two", &["--platform", &platforms], "two", &app);
    for arch in [native, other] {
        assert_file_text(
            &dest.join(format!("linux_{arch}")),
            "marker",
            &format!("marker of {arch}\n"),
        );
    }
    assert_eq!(
        proxy.count("HEAD", "^/v2/base/manifests/multi$"),
        1,
        "{}",
        proxy.log_text()
    );
}
