//! Registries as people meet them beyond a bare distribution: token auth (Docker Hub, GHCR,
//! Harbor) through a token server of the test's own, images in Docker's schema 2 format and
//! Docker manifest lists (what `docker push` and older tools wrote, still most of Docker Hub),
//! and credentials kept by a docker credential helper instead of config.json.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::registry_fixture::{
    checked, have_tools, host_arch, index_of, other_arch, platform_entry, sha256, TestRegistry,
};
use crate::registry_harness::{assert_file_text, login_via_stdin, ok, rename_in_store, Workspace};
use crate::token_server::TokenRequest;
use crate::util::{run, Output};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Everything rbuild printed in a test, to check no secret ever shows.
#[derive(Default)]
struct Printed(Vec<String>);

impl Printed {
    fn keep(&mut self, out: Output) -> Output {
        self.0.push(out.to_string());
        out
    }

    fn assert_never_shows(&self, secret: &str) {
        for text in &self.0 {
            assert!(!text.contains(secret), "a secret was printed:\n{text}");
        }
    }
}

#[test]
fn bearer_tokens_from_the_realm_let_a_login_a_push_and_a_pull_through() {
    const USER: &str = "tokenuser";
    const PASSWORD: &str = "tok-Pw93-must-not-be-printed";
    let Some(registry) =
        TestRegistry::with_token_auth(USER, PASSWORD).filter(|_| have_tools(&["skopeo"]))
    else {
        return;
    };
    let tokens = registry.token_server();
    let ws = Workspace::new();
    let host = registry.host();
    let mut printed = Printed::default();
    let login = |password: &str| login_via_stdin(&mut ws.rbuild(), &host, USER, password);

    // A wrong password: the realm refuses it with 401, and rbuild says so naming the registry.
    let wrong = "wrong-Tq55-password";
    let out = printed.keep(login(wrong));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("401"), "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    assert!(!out.to_string().contains(wrong), "{out}");
    assert!(ws.docker_config_json()["auths"].get(&host).is_none());
    assert!(
        tokens.requests().iter().any(|r| r.status == 401),
        "the token server was not asked:\n{}",
        tokens.log_text()
    );

    // The right one: a token for the user, and docker's config.json entry.
    tokens.reset();
    let out = printed.keep(login(PASSWORD));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Login Succeeded"), "{out}");
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.status == 200 && r.user.as_deref() == Some(USER)),
        "{}",
        tokens.log_text()
    );
    let config = ws.docker_config_json();
    assert_eq!(
        config["auths"][&host]["auth"].as_str(),
        Some(STANDARD.encode(format!("{USER}:{PASSWORD}")).as_str()),
        "{config}"
    );

    // Build and push: the token asked for covers pull and push of the repository.
    tokens.reset();
    let ctx = ws.context(
        "app",
        "FROM scratch\nCOPY files/ /app/\n",
        &[
            ("files/hello.txt", b"hello through a bearer token\n"),
            ("files/sub/data.txt", b"some data\n"),
        ],
    );
    let name = registry.image("team/app:1");
    let (built, out) = ws.build_with_metadata(&ctx, &["-t", &name, "--push"]);
    printed.keep(out);
    assert_eq!(registry.manifest_digest("team/app:1"), built.manifest);
    let requests = tokens.requests();
    let push_scope = TokenRequest {
        user: Some(USER.to_string()),
        scopes: vec!["repository:team/app:pull,push".to_string()],
        service: tokens.service().to_string(),
        status: 200,
    };
    assert!(requests.contains(&push_scope), "{}", tokens.log_text());
    assert!(
        requests
            .iter()
            .all(|r| r.status == 200 && r.user.as_deref() == Some(USER)),
        "{}",
        tokens.log_text()
    );

    // A fresh state root builds FROM the pushed image: pulled with a pull token.
    tokens.reset();
    let consumer = ws.context(
        "consumer",
        &format!("FROM {name}\nCOPY note /note\n"),
        &[("note", b"pulled with a token\n")],
    );
    let dest = ws.build_to_local("fresh", &[], "fresh", &consumer);
    assert_file_text(&dest, "app/hello.txt", "hello through a bearer token\n");
    assert_file_text(&dest, "app/sub/data.txt", "some data\n");
    assert_file_text(&dest, "note", "pulled with a token\n");
    assert!(
        tokens.requests().iter().any(|r| r.status == 200
            && r.user.as_deref() == Some(USER)
            && r.scopes == ["repository:team/app:pull"]),
        "{}",
        tokens.log_text()
    );

    // Someone who never logged in gets an anonymous token that grants nothing: the push is
    // refused with 401, naming the registry, and nothing lands.
    tokens.reset();
    let stranger = Workspace::new();
    let ctx2 = stranger.context("app", "FROM scratch\nCOPY f /f\n", &[("f", b"f\n")]);
    let name2 = registry.image("team/app:2");
    let out = printed.keep(stranger.build(&ctx2, &["-t", &name2, "--push"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized"),
        "{out}"
    );
    let requests = tokens.requests();
    assert!(!requests.is_empty(), "no token was asked for");
    assert!(
        requests.iter().all(|r| r.user.is_none()),
        "{}",
        tokens.log_text()
    );
    assert!(!registry.has_manifest("team/app:2"));

    printed.assert_never_shows(PASSWORD);
}

#[test]
fn docker_schema2_images_and_manifest_lists_are_bases_and_keep_their_digest() {
    let Some(registry) = TestRegistry::plain().filter(|_| have_tools(&["skopeo"])) else {
        return;
    };
    let ws = Workspace::new();
    let native = host_arch();
    let other = other_arch();

    // One base per platform, built by rbuild into an OCI layout and copied to the registry by
    // skopeo in Docker's format.
    let mut entries = Vec::new();
    for arch in [native, other] {
        let marker = format!("marker of {arch}\n");
        let ctx = ws.context(
            &format!("base-{arch}"),
            "FROM scratch\nCOPY marker /marker\nCOPY shared/ /shared/\n",
            &[
                ("marker", marker.as_bytes()),
                ("shared/base.txt", b"from a docker v2s2 base\n"),
            ],
        );
        let layout = ws.path().join(format!("layout-{arch}"));
        ok(ws.build(
            &ctx,
            &[
                "--platform",
                &format!("linux/{arch}"),
                "-o",
                &format!("type=oci,dest={},tar=false", layout.display()),
            ],
        ));
        let tag = format!("dbase:{arch}");
        registry.copy_from_oci_as_docker_v2s2(&layout, &tag);
        let raw = registry.raw_manifest(&tag);
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{manifest}");
        assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG, "{manifest}");
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], DOCKER_LAYER_GZIP, "{manifest}");
        }
        entries.push(platform_entry(DOCKER_MANIFEST, &raw, arch));
    }
    // Indented, as docker writes lists: only the exact bytes give the digest.
    let list = serde_json::to_vec_pretty(&index_of(DOCKER_MANIFEST_LIST, entries)).unwrap();
    let list_digest = registry.put_manifest("dbase:multi", DOCKER_MANIFEST_LIST, &list);
    assert_eq!(registry.manifest_digest("dbase:multi"), list_digest);

    // FROM the single-platform v2s2 image.
    let from_single = ws.context(
        "from-single",
        &format!(
            "FROM {}\nCOPY note /note\n",
            registry.image(&format!("dbase:{native}"))
        ),
        &[("note", b"on a v2s2 base\n")],
    );
    let dest = ws.build_to_local("single", &[], "single", &from_single);
    assert_file_text(&dest, "marker", &format!("marker of {native}\n"));
    assert_file_text(&dest, "shared/base.txt", "from a docker v2s2 base\n");
    assert_file_text(&dest, "note", "on a v2s2 base\n");

    // FROM the manifest list: each platform gets its own base, the machine's by default.
    let from_list = ws.context(
        "from-list",
        &format!("FROM {}\nCOPY note /note\n", registry.image("dbase:multi")),
        &[("note", b"on a manifest list\n")],
    );
    let cases = [(Some(other), other), (Some(native), native), (None, native)];
    for (i, (platform, expected)) in cases.into_iter().enumerate() {
        let flag = platform.map(|arch| format!("linux/{arch}"));
        let extra: Vec<&str> = flag.iter().flat_map(|f| ["--platform", f]).collect();
        let root = format!("list{i}");
        let dest = ws.build_to_local(&root, &extra, &root, &from_list);
        assert_eq!(
            fs::read_to_string(dest.join("marker")).unwrap(),
            format!("marker of {expected}\n"),
            "{platform:?}"
        );
        assert_file_text(&dest, "shared/base.txt", "from a docker v2s2 base\n");
        assert_file_text(&dest, "note", "on a manifest list\n");
    }

    // `rbuild pull`, then a push to another repository: the very manifest bytes, so the same
    // digest and Docker's media type. (rbuild has no `tag`: the pulled image is renamed through
    // `save` and `load`, which keep every byte.)
    let single = registry.image(&format!("dbase:{native}"));
    let original = registry.raw_manifest(&format!("dbase:{native}"));
    let digest = sha256(&original);
    let out = ok(run(ws.rbuild_on("mover").args(["pull", &single])));
    assert!(out.stdout.contains(&digest), "{out}");
    let moved_name = registry.image("moved/dbase:1");
    rename_in_store(&ws, "mover", &single, &moved_name, |index| {
        assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index}");
        assert_eq!(
            index["manifests"][0]["mediaType"], DOCKER_MANIFEST,
            "{index}"
        );
    });
    ok(run(ws.rbuild_on("mover").args(["push", &moved_name])));
    let moved = registry.raw_manifest("moved/dbase:1");
    assert_eq!(sha256(&moved), digest);
    assert_eq!(moved, original);
    let moved: serde_json::Value = serde_json::from_slice(&moved).unwrap();
    assert_eq!(moved["mediaType"], DOCKER_MANIFEST);
    // And back to where it came from: still the same.
    ok(run(ws.rbuild_on("mover").args(["push", &single])));
    assert_eq!(registry.manifest_digest(&format!("dbase:{native}")), digest);
}

/// A docker credential helper (`docker-credential-testhelper`, POSIX sh) that keeps each
/// server's credentials in a file of `store` and logs `ACTION SERVER` lines to `log`.
fn write_credential_helper(bin: &Path, store: &Path, log: &Path) {
    let script = format!(
        r#"#!/bin/sh
# docker-credential-helpers protocol: get, store and erase, the request on stdin.
store='{store}'
log='{log}'
input=$(cat)
case "$1" in
store)
    server=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
    ;;
*)
    server=$input
    ;;
esac
printf '%s %s\n' "$1" "$server" >>"$log"
file="$store/$(printf '%s' "$server" | tr -c 'A-Za-z0-9.-' '_')"
not_found() {{
    echo "credentials not found in native keychain"
    exit 1
}}
case "$1" in
store)
    printf '%s' "$input" >"$file"
    ;;
get)
    [ -f "$file" ] || not_found
    cat "$file"
    ;;
erase)
    [ -f "$file" ] || not_found
    rm "$file"
    ;;
*)
    echo "unknown action $1"; exit 1
    ;;
esac
"#,
        store = store.display(),
        log = log.display()
    );
    let path = bin.join("docker-credential-testhelper");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_credential_helper_stores_gives_and_erases_the_login_of_a_real_registry() {
    const USER: &str = "helperuser";
    const PASSWORD: &str = "helper-Pw41-must-not-be-printed";
    let Some(registry) =
        TestRegistry::tls_with_htpasswd(USER, PASSWORD).filter(|_| have_tools(&["skopeo"]))
    else {
        return;
    };
    let ws = Workspace::new();
    let host = registry.host();
    let ca = registry.ca_path().to_path_buf();
    let (bin, store) = (ws.path().join("helper-bin"), ws.path().join("helper-store"));
    fs::create_dir(&bin).unwrap();
    fs::create_dir(&store).unwrap();
    let log = ws.path().join("helper.log");
    write_credential_helper(&bin, &store, &log);
    fs::create_dir_all(ws.docker_config()).unwrap();
    fs::write(
        ws.docker_config().join("config.json"),
        r#"{"credsStore":"testhelper"}"#,
    )
    .unwrap();
    // The helper's directory first on PATH, for rbuild only.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let rbuild = || {
        let mut cmd = ws.rbuild();
        cmd.env("PATH", &path).env("SSL_CERT_FILE", &ca);
        cmd
    };
    let helper_calls = || fs::read_to_string(&log).unwrap_or_default();
    let stored_file = store.join(host.replace(':', "_"));
    let mut printed = Printed::default();

    // Login: the helper stores the credentials; config.json only marks the registry.
    let out = printed.keep(login_via_stdin(&mut rbuild(), &host, USER, PASSWORD));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Login Succeeded"), "{out}");
    assert!(
        helper_calls().contains(&format!("store {host}\n")),
        "{}",
        helper_calls()
    );
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&stored_file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", stored_file.display()));
    assert_eq!(stored["ServerURL"], host.as_str(), "{stored}");
    assert_eq!(stored["Username"], USER, "{stored}");
    assert_eq!(stored["Secret"], PASSWORD);
    let config = ws.docker_config_json();
    assert_eq!(config["credsStore"], "testhelper", "{config}");
    let entry = config["auths"].get(&host);
    assert!(
        entry.is_some_and(|e| e.get("auth").is_none()),
        "config.json: {config}"
    );
    let config_text = fs::read_to_string(ws.docker_config().join("config.json")).unwrap();
    assert!(!config_text.contains(PASSWORD), "{config_text}");
    assert!(
        !config_text.contains(&STANDARD.encode(format!("{USER}:{PASSWORD}"))),
        "{config_text}"
    );

    // A push gets the credentials from the helper.
    fs::write(&log, "").unwrap();
    let ctx = ws.context(
        "app",
        "FROM scratch\nCOPY f /f\n",
        &[("f", b"pushed with a helper's credentials\n")],
    );
    let name = registry.image("helped/app:1");
    let out = printed.keep(run(rbuild()
        .arg("build")
        .args(["-t", &name, "--push"])
        .arg(&ctx)));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        helper_calls().contains(&format!("get {host}\n")),
        "{}",
        helper_calls()
    );
    assert!(registry.has_manifest("helped/app:1"));

    // Logout: the helper erases them; a push then is refused.
    fs::write(&log, "").unwrap();
    let out = printed.keep(run(rbuild().args(["logout", &host])));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains(&format!("Removing login credentials for {host}")),
        "{out}"
    );
    assert!(
        helper_calls().contains(&format!("erase {host}\n")),
        "{}",
        helper_calls()
    );
    assert!(!stored_file.exists());
    let config = ws.docker_config_json();
    assert!(config["auths"].get(&host).is_none(), "{config}");
    assert_eq!(config["credsStore"], "testhelper", "{config}");
    let name2 = registry.image("helped/app:2");
    let out = printed.keep(run(rbuild()
        .arg("build")
        .args(["-t", &name2, "--push"])
        .arg(&ctx)));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&host), "{out}");
    assert!(out.stderr.contains("401"), "{out}");
    assert!(!registry.has_manifest("helped/app:2"));

    printed.assert_never_shows(PASSWORD);
}

/// The fixture itself: the token server grants every scope asked for (several `scope`
/// parameters), refuses a wrong password, gives an anonymous client a token that grants
/// nothing, and the registry takes its tokens.
#[test]
fn the_token_server_issues_tokens_the_registry_accepts() {
    let Some(registry) = TestRegistry::with_token_auth("u", "p") else {
        return;
    };
    let tokens = registry.token_server();
    let fetch = |credentials: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"]);
        if let Some(credentials) = credentials {
            cmd.arg("-u").arg(credentials);
        }
        cmd.arg(format!(
            "{}?service={}&scope=repository:team/a:pull&scope=repository%3Ab%3Apull%2Cpush",
            tokens.realm(),
            tokens.service()
        ));
        let out = String::from_utf8(checked(&mut cmd, "curl token").stdout).unwrap();
        let (body, status) = out.rsplit_once('\n').unwrap();
        (status.to_string(), body.to_string())
    };
    let token_in = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let claims = |token: &str| -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let registry_status = |token: &str, path: &str| {
        let out = checked(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .arg(format!("{}{path}", registry.url())),
            "curl registry",
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let (status, body) = fetch(Some("u:p"));
    assert_eq!(status, "200", "{body}");
    let token = token_in(&body);
    let granted = claims(&token);
    assert_eq!(
        granted["access"],
        serde_json::json!([
            {"type": "repository", "name": "team/a", "actions": ["pull"]},
            {"type": "repository", "name": "b", "actions": ["pull", "push"]},
        ]),
        "{granted}"
    );
    assert_eq!(granted["aud"], tokens.service());
    assert_eq!(granted["iss"], tokens.issuer());
    assert_eq!(granted["sub"], "u");
    assert_eq!(registry_status(&token, "/v2/"), "200");
    // A scope granted: the registry answers for the repository (404: nothing pushed yet).
    assert_eq!(registry_status(&token, "/v2/team/a/tags/list"), "404");
    assert_eq!(registry_status(&token, "/v2/other/tags/list"), "401");

    let (status, body) = fetch(Some("u:wrong"));
    assert_eq!(status, "401", "{body}");

    let (status, body) = fetch(None);
    assert_eq!(status, "200", "{body}");
    let anonymous = token_in(&body);
    assert_eq!(claims(&anonymous)["access"], serde_json::json!([]));
    assert_eq!(registry_status(&anonymous, "/v2/team/a/tags/list"), "401");

    let seen: Vec<(Option<String>, u16)> = tokens
        .requests()
        .into_iter()
        .map(|r| (r.user, r.status))
        .collect();
    assert_eq!(
        seen,
        [(Some("u".to_string()), 200), (None, 401), (None, 200)],
        "{}",
        tokens.log_text()
    );
    assert!(tokens
        .requests()
        .iter()
        .all(|r| r.scopes == ["repository:team/a:pull", "repository:b:pull,push"]));
}
