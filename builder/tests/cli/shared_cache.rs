//! The shared build cache: two "machines" (state roots A and B) share step results through an
//! OCI layout directory or a loopback registry. rawjson progress says which steps hit; the
//! content stores and a fault proxy's log say what B fetched.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cache::Steps;
use crate::fault_proxy::Fault;
use crate::registry_harness::{
    assert_store_sound, layers_of, ok, proxied_registry, random_bytes, Workspace,
};
use crate::util::{run, Output};

/// Two stages: `build` copies a big file the final image never carries. Its files sit at the
/// root, keeping their context mtimes: a directory COPY creates gets the time it was made (as
/// in BuildKit), and a stage run again on another machine must make the same layers.
const TWO_STAGES: &str = "FROM scratch AS build
COPY a.txt b.txt /
COPY big /big
FROM scratch
COPY --from=build /a.txt /b.txt /app/
COPY note /note
";

fn two_stage_context(ws: &Workspace) -> PathBuf {
    let big = random_bytes(7, 300 << 10);
    ws.context(
        "ctx",
        TWO_STAGES,
        &[
            ("a.txt", b"a\n"),
            ("b.txt", b"b\n"),
            ("big", &big),
            ("note", b"first note\n"),
        ],
    )
}

/// `rbuild build --progress=rawjson ARGS… CTX` on state root `root`, which must succeed; its
/// steps and the config digest it built (the image ID).
fn build(ws: &Workspace, root: &str, ctx: &Path, args: &[&str]) -> (Steps, String) {
    let iid = ws.path().join(format!("{root}.iid"));
    let out = run(ws
        .rbuild_on(root)
        .args(["build", "--progress=rawjson"])
        .args(args)
        .arg("--iidfile")
        .arg(&iid)
        .arg(ctx));
    assert_eq!(out.code, 0, "{out}");
    (Steps::read(out), fs::read_to_string(&iid).unwrap())
}

/// The messages of a rawjson build (warnings, transfers), one per line.
fn messages(out: &Output) -> String {
    let mut text = String::new();
    for line in out.stderr.lines() {
        let status: serde_json::Value = serde_json::from_str(line).unwrap();
        for m in status["rbuildMessages"].as_array().into_iter().flatten() {
            text.push_str(m.as_str().unwrap());
            text.push('\n');
        }
    }
    text
}

/// The digests of the blobs in a state root's content store.
fn store_digests(ws: &Workspace, root: &str) -> BTreeSet<String> {
    let dir = ws.path().join(root).join("content/blobs/sha256");
    fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

/// The layer digests of the cache manifest an OCI layout names `latest`.
fn cache_layers(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    layers_of(&blob_json(dir, digest))
}

fn blob_json(dir: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The layers of the image a state root built (its config digest `iid`), from its store.
fn image_layers(ws: &Workspace, root: &str) -> Vec<String> {
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(ws.path().join(format!("{root}.meta.json"))).unwrap())
            .unwrap();
    let manifest = meta["containerimage.digest"].as_str().unwrap();
    let hex = manifest.strip_prefix("sha256:").unwrap();
    let path = ws.path().join(root).join("content/blobs/sha256").join(hex);
    layers_of(&serde_json::from_slice(&fs::read(path).unwrap()).unwrap())
}

#[test]
fn a_second_machine_hits_every_step_from_a_local_cache_and_fetches_only_the_final_layers() {
    let ws = Workspace::new();
    let ctx = two_stage_context(&ws);
    let cache = ws.path().join("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    let (a, a_id) = build(&ws, "a", &ctx, &["--cache-to", &to]);
    assert_eq!(a.cached(), [false, false, false, false], "{a}");

    let from = format!("type=local,src={}", cache.display());
    let meta = ws.path().join("b.meta.json");
    let meta_arg = meta.to_str().unwrap();
    let (b, b_id) = build(
        &ws,
        "b",
        &ctx,
        &["--cache-from", &from, "--metadata-file", meta_arg],
    );
    assert_eq!(b.cached(), [true, true, true, true], "{b}");
    assert_eq!(b_id, a_id, "B's image is A's, config and all");
    // B holds the final image's layers, and none of the build stage's (the big file).
    let final_layers: BTreeSet<String> = image_layers(&ws, "b").into_iter().collect();
    let b_blobs = store_digests(&ws, "b");
    let cached = cache_layers(&cache);
    assert_eq!(cached.len(), 4, "{cached:?}");
    for layer in &cached {
        assert_eq!(
            b_blobs.contains(layer),
            final_layers.contains(layer),
            "{layer}: in B's store iff in the final image"
        );
    }
    assert_eq!(final_layers.len(), 2);

    // One file changes: only the step that reads it runs.
    fs::write(ctx.join("note"), "second note\n").unwrap();
    let (b, _) = build(&ws, "b", &ctx, &["--cache-from", &from]);
    assert_eq!(b.cached(), [true, true, true, false], "{b}");
    assert_eq!(b.misses(3), ["file note changed"], "{b}");
    // A change early in the build stage: it and what follows run, on layers fetched now.
    fs::write(ctx.join("b.txt"), "bee\n").unwrap();
    let out = ws.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let (b, _) = build(&ws, "b", &ctx, &["--cache-from", &from, "-o", &dest]);
    // COPY --from keys on the build stage's result, and the note's step on the files below.
    assert_eq!(b.cached(), [false, false, false, false], "{b}");
    assert_eq!(fs::read_to_string(out.join("app/b.txt")).unwrap(), "bee\n");
    assert_eq!(
        fs::read_to_string(out.join("note")).unwrap(),
        "second note\n"
    );
}

#[test]
fn an_intermediate_stage_hits_from_a_max_export_and_misses_from_a_min_one() {
    let ws = Workspace::new();
    let ctx = two_stage_context(&ws);
    let min = ws.path().join("min");
    let max = ws.path().join("max");
    build(
        &ws,
        "a",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
        ],
    );
    assert_eq!(
        cache_layers(&min).len(),
        2,
        "min carries the final image's layers"
    );
    let (from_min, _) = build(
        &ws,
        "b",
        &ctx,
        &["--cache-from", &format!("type=local,src={}", min.display())],
    );
    assert_eq!(from_min.cached(), [false, false, true, true], "{from_min}");
    let (from_max, _) = build(
        &ws,
        "c",
        &ctx,
        &["--cache-from", &format!("type=local,src={}", max.display())],
    );
    assert_eq!(from_max.cached(), [true, true, true, true], "{from_max}");
}

#[test]
fn a_corrupt_or_missing_cache_blob_is_a_miss_with_a_warning() {
    let ws = Workspace::new();
    let ctx = two_stage_context(&ws);
    let cache = ws.path().join("cache");
    // Uncompressed: the cache's blobs are the layers as A's store holds them.
    let to = format!(
        "type=local,dest={},mode=max,compression=uncompressed",
        cache.display()
    );
    build(&ws, "a", &ctx, &["--cache-to", &to]);
    let from = format!("type=local,src={}", cache.display());

    // The final image's last layer: one byte flipped.
    let meta = ws.path().join("a.meta.json");
    build(&ws, "a", &ctx, &["--metadata-file", meta.to_str().unwrap()]);
    let last = image_layers(&ws, "a").pop().unwrap();
    let path = cache
        .join("blobs/sha256")
        .join(last.strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let out = ws.path().join("out-b");
    let dest = format!("type=local,dest={}", out.display());
    let (b, _) = build(&ws, "b", &ctx, &["--cache-from", &from, "-o", &dest]);
    let said = messages(&b.out);
    assert!(
        said.contains(&format!("WARNING: layer {last} cannot be used")),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(out.join("note")).unwrap(),
        "first note\n"
    );
    // B made the layer again itself (the same bytes: it is uncompressed); nothing corrupt
    // was stored.
    assert!(store_digests(&ws, "b").contains(&last));
    assert_store_sound(&ws.path().join("b"));

    // The build stage's big layer is gone: a step that needs it is a miss too.
    fs::remove_file(&path).unwrap();
    let cached = cache_layers(&cache);
    for layer in &cached {
        let _ = fs::remove_file(
            cache
                .join("blobs/sha256")
                .join(layer.strip_prefix("sha256:").unwrap()),
        );
    }
    fs::write(ctx.join("note"), "another note\n").unwrap();
    let out = ws.path().join("out-c");
    let dest = format!("type=local,dest={}", out.display());
    let (c, _) = build(&ws, "c", &ctx, &["--cache-from", &from, "-o", &dest]);
    assert!(messages(&c.out).contains("cannot be used"), "{c}");
    assert_eq!(fs::read_to_string(out.join("app/a.txt")).unwrap(), "a\n");
    assert_eq!(
        fs::read_to_string(out.join("note")).unwrap(),
        "another note\n"
    );
    // A source that is not there at all: a warning, and the build goes on.
    let (d, _) = build(
        &ws,
        "d",
        &ctx,
        &["--cache-from", "type=local,src=/nonexistent/cache"],
    );
    assert!(messages(&d.out).contains("building without it"), "{d}");
    assert_eq!(d.cached(), [false, false, false, false], "{d}");
}

#[test]
fn two_machines_share_a_registry_cache_and_b_fetches_only_the_final_layers() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let ctx = two_stage_context(&ws);
    let cache_ref = format!("{}/app:cache", proxy.host());
    let image = format!("{}/app:1", registry.host());
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (a, a_id) = build(&ws, "a", &ctx, &["--cache-to", &to, "-t", &image, "--push"]);
    assert_eq!(a.cached(), [false, false, false, false], "{a}");
    let a_manifest = registry.manifest_json("app:1");

    proxy.reset_counts();
    let b_image = format!("{}/app:b", registry.host());
    let from = format!("type=registry,ref={cache_ref}");
    let (b, b_id) = build(
        &ws,
        "b",
        &ctx,
        &["--cache-from", &from, "-t", &b_image, "--push"],
    );
    assert_eq!(b.cached(), [true, true, true, true], "{b}");
    assert_eq!(b_id, a_id);
    assert_eq!(
        registry.manifest_json("app:b"),
        a_manifest,
        "B pushed A's image"
    );
    // B fetched the cache's config blob and the final image's layers; nothing of the build
    // stage.
    let fetched: BTreeSet<String> = proxy
        .blob_fetches()
        .iter()
        .map(|e| e.path.rsplit('/').next().unwrap().to_string())
        .collect();
    let final_layers: BTreeSet<String> = layers_of(&a_manifest).into_iter().collect();
    let cache_manifest = registry.manifest_json("app:cache");
    let cache_config = cache_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut expected = final_layers.clone();
    expected.insert(cache_config);
    assert_eq!(fetched, expected, "{}", proxy.log_text());
    assert_eq!(layers_of(&cache_manifest).len(), 4);

    // Exporting again: the blobs the cache manifest lists are not asked about one by one.
    proxy.reset_counts();
    ok(run(ws
        .rbuild_on("a")
        .args(["build", "--cache-to", &to])
        .arg(&ctx)));
    let heads = proxy.matching("HEAD", "/blobs/");
    for layer in layers_of(&cache_manifest) {
        assert!(
            !heads.iter().any(|e| e.path.ends_with(&layer)),
            "{layer} was checked: {}",
            proxy.log_text()
        );
    }
}

#[test]
fn an_inline_cache_travels_in_the_image_config() {
    let Some((registry, _proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let ctx = two_stage_context(&ws);
    let image = format!("{}/app:inline", registry.host());
    build(
        &ws,
        "a",
        &ctx,
        &["--cache-to", "type=inline", "-t", &image, "--push"],
    );
    let config_digest = registry.manifest_json("app:inline")["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let config = registry.raw_config("app:inline");
    assert!(config_digest.starts_with("sha256:"));
    assert_eq!(config["rbuild.cache.v1"]["version"], 1, "{config}");
    let (b, _) = build(&ws, "b", &ctx, &["--cache-from", &image]);
    // Inline caches are min: the final stage hits, the build stage runs.
    assert_eq!(
        b.cached(),
        [false, false, true, true],
        "{}",
        messages(&b.out)
    );
}

#[test]
fn a_corrupt_or_missing_blob_in_a_registry_cache_is_a_miss_with_a_warning() {
    let Some((registry, proxy, ws)) = proxied_registry(&["skopeo"]) else {
        return;
    };
    let ctx = two_stage_context(&ws);
    let cache_ref = format!("{}/app:cache", proxy.host());
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let image = format!("{}/app:1", registry.host());
    build(&ws, "a", &ctx, &["--cache-to", &to, "-t", &image, "--push"]);
    // The final image's two layers, both in the cache. On machine B the last one always
    // arrives with a byte flipped; on machine C the first one is gone.
    let layers = layers_of(&registry.manifest_json("app:1"));
    let from = format!("type=registry,ref={cache_ref}");
    for (root, layer, fault) in [
        ("b", &layers[1], Fault::FlipByte),
        ("c", &layers[0], Fault::Status(404)),
    ] {
        proxy.add_fault("GET", &format!("/blobs/{layer}$"), fault, 100);
        let out = ws.path().join(format!("out-{root}"));
        let dest = format!("type=local,dest={}", out.display());
        let (built, _) = build(&ws, root, &ctx, &["--cache-from", &from, "-o", &dest]);
        let said = messages(&built.out);
        assert!(
            said.contains(&format!("WARNING: layer {layer} cannot be used")),
            "{root}: {said}"
        );
        assert_eq!(fs::read_to_string(out.join("app/a.txt")).unwrap(), "a\n");
        assert_eq!(
            fs::read_to_string(out.join("note")).unwrap(),
            "first note\n"
        );
        assert_store_sound(&ws.path().join(root));
        proxy.clear_faults();
    }
}
