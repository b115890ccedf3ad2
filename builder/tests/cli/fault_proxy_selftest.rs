//! The fault proxy checked on its own, without rbuild: raw HTTP on one keep-alive
//! connection, each fault as a client sees it, and skopeo pushing and pulling through it.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::fault_proxy::{max_in_flight, read_body, read_head, status_of, Fault, FaultProxy, Head};
use crate::registry_fixture::{
    have_tools, oci_layout_manifest_digest, read_blob, sha256, small_oci_layout, with_digest_query,
    TestRegistry,
};

/// A registry and a proxy in front of it, or `None` when the tools are missing (outside CI).
fn proxied() -> Option<(TestRegistry, FaultProxy)> {
    let registry = TestRegistry::plain()?;
    let proxy = FaultProxy::start(&registry.host());
    Some((registry, proxy))
}

/// One client connection, for as many requests as the test sends on it.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(host: &str) -> Client {
        let stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends `METHOD TARGET` with `headers` (each `Name: value`) and `body` framed as given
    /// in the headers (the caller writes Content-Length or chunked framing itself).
    fn send(&mut self, method: &str, target: &str, headers: &[&str], body: &[u8]) {
        let mut out = format!("{method} {target} HTTP/1.1\r\nHost: proxy.test\r\n");
        for h in headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        self.writer.write_all(&out).unwrap();
    }

    /// The next response: status, head and body (none for HEAD).
    fn response(&mut self, head_request: bool) -> std::io::Result<(u16, Head, Vec<u8>)> {
        let head = read_head(&mut self.reader)?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let status = status_of(&head)?;
        let body = if head_request {
            Vec::new()
        } else {
            read_body(&mut self.reader, &head, false)?
        };
        Ok((status, head, body))
    }

    /// Opens a blob upload to `repo` (a POST without a body), which must answer 202; returns
    /// the response's head.
    fn start_upload(&mut self, repo: &str) -> Head {
        let target = format!("/v2/{repo}/blobs/uploads/");
        self.send("POST", &target, &["Content-Length: 0"], b"");
        let (status, head, _) = self.response(false).unwrap();
        assert_eq!(status, 202);
        head
    }
}

#[test]
fn head_and_get_of_v2_pass_through_on_one_connection() {
    let Some((registry, proxy)) = proxied() else {
        return;
    };
    let mut client = Client::connect(&proxy.host());
    client.send("HEAD", "/v2/", &[], b"");
    let (status, head, body) = client.response(true).unwrap();
    assert_eq!(status, 200);
    assert!(body.is_empty());
    // A HEAD keeps the length of the body it does not carry.
    assert_eq!(head.header("content-length"), Some("2"));
    assert_eq!(
        head.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    client.send("GET", "/v2/", &[], b"");
    let (status, _, body) = client.response(false).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));
    client.send("GET", "/v2/nothere/manifests/1", &[], b"");
    let (status, _, body) = client.response(false).unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_UNKNOWN"));
    let log: Vec<String> = proxy.requests().iter().map(|e| e.line()).collect();
    assert_eq!(
        log,
        [
            "HEAD /v2/ -> 200",
            "GET /v2/ -> 200",
            "GET /v2/nothere/manifests/1 -> 404"
        ]
    );
    proxy.reset_counts();
    assert!(proxy.requests().is_empty());
    // The registry's log is captured, its access log included.
    let log = registry.log();
    assert!(
        log.contains("\"GET /v2/nothere/manifests/1 HTTP/1.1\" 404"),
        "{log}"
    );
}

#[test]
fn rules_fire_the_given_number_of_times_then_forward() {
    let Some((_registry, proxy)) = proxied() else {
        return;
    };
    proxy.add_fault("GET", "^/v2/$", Fault::Status(500), 1);
    proxy.add_fault(
        "HEAD",
        "^/v2/$",
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
        2,
    );
    let mut client = Client::connect(&proxy.host());
    client.send("GET", "/v2/", &[], b"");
    let (status, _, body) = client.response(false).unwrap();
    assert_eq!(status, 500);
    assert!(!body.is_empty());
    assert_eq!(
        proxy.unused_faults().len(),
        1,
        "{:?}",
        proxy.unused_faults()
    );
    client.send("GET", "/v2/", &[], b"");
    assert_eq!(client.response(false).unwrap().0, 200);
    for expected in [429, 429, 200] {
        client.send("HEAD", "/v2/", &[], b"");
        let (status, head, _) = client.response(true).unwrap();
        assert_eq!(status, expected);
        if status == 429 {
            assert_eq!(head.header("retry-after"), Some("7"));
        }
    }
    assert!(proxy.unused_faults().is_empty());
    let faults: Vec<Option<Fault>> = proxy.requests().iter().map(|e| e.fault).collect();
    assert_eq!(
        faults,
        [
            Some(Fault::Status(500)),
            None,
            Some(Fault::TooManyRequests {
                retry_after_secs: 7
            }),
            Some(Fault::TooManyRequests {
                retry_after_secs: 7
            }),
            None
        ]
    );
}

#[test]
fn forwards_chunked_and_sized_upload_bodies_and_keeps_the_host() {
    let Some((_registry, proxy)) = proxied() else {
        return;
    };
    let mut client = Client::connect(&proxy.host());
    let head = client.start_upload("self");
    let location = head.header("location").unwrap().to_string();
    // distribution builds the URL from the Host header the proxy passed on.
    let target = location
        .strip_prefix("http://proxy.test")
        .unwrap_or_else(|| panic!("Location {location} is not on the client's Host"))
        .to_string();
    client.send(
        "PATCH",
        &target,
        &[
            "Transfer-Encoding: chunked",
            "Content-Type: application/octet-stream",
        ],
        b"6\r\nhello \r\n3;ext=1\r\nwor\r\n0\r\n\r\n",
    );
    let (status, head, _) = client.response(false).unwrap();
    assert_eq!(status, 202);
    assert_eq!(head.header("range"), Some("0-8"));
    let target = head
        .header("location")
        .unwrap()
        .trim_start_matches("http://proxy.test")
        .to_string();
    let digest = sha256(b"hello world");
    client.send(
        "PUT",
        &with_digest_query(&target, &digest),
        &["Content-Length: 2", "Expect: 100-continue"],
        b"",
    );
    // The proxy says go on before it reads the body.
    let (status, _, _) = client.response(false).unwrap();
    assert_eq!(status, 100);
    client.writer.write_all(b"ld").unwrap();
    let (status, _, _) = client.response(false).unwrap();
    assert_eq!(status, 201);
    client.send("GET", &format!("/v2/self/blobs/{digest}"), &[], b"");
    let (status, _, body) = client.response(false).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(
        proxy.completed_blob_uploads().len(),
        1,
        "{}",
        proxy.log_text()
    );
    assert_eq!(
        proxy.blob_upload_attempts().len(),
        2,
        "{}",
        proxy.log_text()
    );
    assert_eq!(proxy.blob_fetches().len(), 1, "{}", proxy.log_text());
}

#[test]
fn drops_and_corrupts_responses() {
    let Some((registry, proxy)) = proxied() else {
        return;
    };
    let blob = vec![b'x'; 1000];
    let digest = sha256(&blob);
    // Straight to the registry: POST opens the upload, one PUT sends the whole blob.
    let mut client = Client::connect(&registry.host());
    let head = client.start_upload("self");
    let location = head.header("location").unwrap();
    let target = location.trim_start_matches(&format!("http://{}", registry.host()));
    client.send(
        "PUT",
        &with_digest_query(target, &digest),
        &["Content-Length: 1000"],
        &blob,
    );
    assert_eq!(client.response(false).unwrap().0, 201);
    let path = format!("/v2/self/blobs/{digest}");

    proxy.add_fault("GET", "/blobs/", Fault::DropBeforeResponse, 1);
    let mut client = Client::connect(&proxy.host());
    client.send("GET", &path, &[], b"");
    assert!(client.response(false).is_err(), "no answer, closed");

    proxy.add_fault("GET", "/blobs/", Fault::DropMidBody, 1);
    let mut client = Client::connect(&proxy.host());
    client.send("GET", &path, &[], b"");
    let head = read_head(&mut client.reader).unwrap().unwrap();
    assert_eq!(head.header("content-length"), Some("1000"));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client.reader, &mut got).unwrap();
    assert_eq!(got.len(), 500);

    proxy.add_fault("GET", "/blobs/", Fault::FlipByte, 1);
    let mut client = Client::connect(&proxy.host());
    client.send("GET", &path, &[], b"");
    let (status, _, body) = client.response(false).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.len(), 1000);
    assert_ne!(sha256(&body), digest);
    assert_eq!(body.iter().filter(|&&b| b != b'x').count(), 1);
    client.send("GET", &path, &[], b"");
    let (_, _, body) = client.response(false).unwrap();
    assert_eq!(sha256(&body), digest);

    let statuses: Vec<Option<u16>> = proxy.requests().iter().map(|e| e.status).collect();
    assert_eq!(statuses, [None, Some(200), Some(200), Some(200)]);
    assert!(proxy.unused_faults().is_empty());
}

#[test]
fn strips_the_location_header_and_keeps_the_rest() {
    let Some((_registry, proxy)) = proxied() else {
        return;
    };
    proxy.add_fault("POST", "/blobs/uploads/", Fault::StripLocation, 1);
    let mut client = Client::connect(&proxy.host());
    for expect_location in [false, true] {
        let head = client.start_upload("self");
        assert_eq!(head.header("location").is_some(), expect_location);
        assert!(head.header("docker-upload-uuid").is_some());
    }
    let faults: Vec<Option<Fault>> = proxy.requests().iter().map(|e| e.fault).collect();
    assert_eq!(faults, [Some(Fault::StripLocation), None]);
    assert!(proxy.unused_faults().is_empty());
}

#[test]
fn carries_a_skopeo_push_and_pull() {
    let Some((registry, proxy)) = proxied() else {
        return;
    };
    if !have_tools(&["skopeo"]) {
        return;
    }
    let dir = TempDir::new().unwrap();
    let layout = dir.path().join("layout");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    small_oci_layout(&layout, "1", &[("data/bin", &payload), ("etc/x", b"x\n")]);
    let pushed = oci_layout_manifest_digest(&layout, "1");
    let skopeo = |args: &[String]| {
        Command::new("skopeo")
            .arg("copy")
            .args(args)
            .output()
            .unwrap()
    };
    let push = skopeo(&[
        "--dest-tls-verify=false".to_string(),
        format!("oci:{}:1", layout.display()),
        format!("docker://{}/x:1", proxy.host()),
    ]);
    assert!(
        push.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&push.stderr),
        proxy.log_text()
    );
    assert_eq!(registry.manifest_digest("x:1"), pushed);
    assert_eq!(
        proxy.completed_blob_uploads().len(),
        2,
        "{}",
        proxy.log_text()
    );
    assert_eq!(proxy.manifest_puts().len(), 1, "{}", proxy.log_text());

    // Pull back through the proxy: the same bytes.
    let back = dir.path().join("back");
    let pull = |dest: &std::path::Path| {
        skopeo(&[
            "--src-tls-verify=false".to_string(),
            format!("docker://{}/x:1", proxy.host()),
            format!("oci:{}:1", dest.display()),
        ])
    };
    let out = pull(&back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(oci_layout_manifest_digest(&back, "1"), pushed);

    // Every fetch of the layer corrupted: skopeo notices and names the digest.
    let manifest: serde_json::Value = serde_json::from_slice(&read_blob(&layout, &pushed)).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.add_fault("GET", &format!("/blobs/{layer}$"), Fault::FlipByte, 100);
    let out = pull(&dir.path().join("corrupt"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(layer.trim_start_matches("sha256:")),
        "{stderr}"
    );
    proxy.clear_faults();

    // skopeo's own retries get a push through a dropped upload and a 429.
    proxy.reset_counts();
    let layout2 = dir.path().join("layout2");
    small_oci_layout(&layout2, "2", &[("data/bin", b"other")]);
    proxy.add_fault("PATCH", "/blobs/uploads/", Fault::DropBeforeResponse, 1);
    let too_many = Fault::TooManyRequests {
        retry_after_secs: 1,
    };
    proxy.add_fault("HEAD", "/blobs/", too_many, 1);
    let push = skopeo(&[
        "--retry-times=3".to_string(),
        "--dest-tls-verify=false".to_string(),
        format!("oci:{}:2", layout2.display()),
        format!("docker://{}/x:2", proxy.host()),
    ]);
    assert!(
        push.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&push.stderr),
        proxy.log_text()
    );
    proxy.assert_faults_all_fired();
    assert_eq!(
        registry.manifest_digest("x:2"),
        oci_layout_manifest_digest(&layout2, "2")
    );
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        3,
        "{}",
        proxy.log_text()
    );

    // A body cut short is an unexpected EOF to skopeo (which does not retry it).
    proxy.add_fault("GET", "/blobs/", Fault::DropMidBody, 1);
    let out = pull(&dir.path().join("cut"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unexpected EOF"), "{stderr}");
}

#[test]
fn tls_registry_fixture_wants_its_ca_and_the_password() {
    let Some(registry) = TestRegistry::tls_with_htpasswd("tester", "s3cret-pw") else {
        return;
    };
    if !have_tools(&["skopeo"]) {
        return;
    }
    let status = |args: &[&str], url: String| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ca = registry.ca_path().to_str().unwrap();
    let v2 = format!("{}/v2/", registry.url());
    assert!(v2.starts_with("https://127.0.0.1:"), "{v2}");
    // Unknown CA: no HTTP status at all.
    assert_eq!(status(&[], v2.clone()), "000");
    assert_eq!(status(&["--cacert", ca], v2.clone()), "401");
    assert_eq!(
        status(&["--cacert", ca, "-u", "tester:wrong"], v2.clone()),
        "401"
    );
    assert_eq!(
        status(&["--cacert", ca, "-u", "tester:s3cret-pw"], v2),
        "200"
    );
    let by_name = format!("https://localhost:{}/v2/", registry.port());
    assert_eq!(
        status(&["--cacert", ca, "-u", "tester:s3cret-pw"], by_name),
        "200"
    );

    let layout = registry.dir().join("layout");
    small_oci_layout(&layout, "1", &[("hello", b"world\n")]);
    registry.copy_from_oci(&layout, "1", "t/app:1");
    assert_eq!(
        registry.manifest_digest("t/app:1"),
        oci_layout_manifest_digest(&layout, "1")
    );
    let back = registry.dir().join("back");
    registry.copy_to_oci("t/app:1", &back, "x");
    assert_eq!(
        oci_layout_manifest_digest(&back, "x"),
        oci_layout_manifest_digest(&layout, "1")
    );
}

#[test]
fn overlapping_requests_show_as_in_flight_together() {
    let Some((_registry, proxy)) = proxied() else {
        return;
    };
    // A sends its head and half its body; B comes and goes; then A finishes.
    let mut a = Client::connect(&proxy.host());
    a.send(
        "POST",
        "/v2/a/blobs/uploads/",
        &["Content-Length: 4"],
        b"ab",
    );
    // Time for the proxy to read A's head, which starts A's exchange.
    std::thread::sleep(Duration::from_millis(200));
    let mut b = Client::connect(&proxy.host());
    b.start_upload("b");
    a.writer.write_all(b"cd").unwrap();
    assert_eq!(a.response(false).unwrap().0, 202);
    let both = proxy.requests();
    assert_eq!(both.len(), 2);
    assert_eq!(max_in_flight(&both), 2, "{}", proxy.log_text());
    // One after the other on a connection: never two at once.
    proxy.reset_counts();
    for _ in 0..3 {
        b.send("GET", "/v2/", &[], b"");
        assert_eq!(b.response(false).unwrap().0, 200);
    }
    assert_eq!(max_in_flight(&proxy.requests()), 1);
}
