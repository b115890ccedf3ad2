//! A token server for distribution's token auth, the flow Docker Hub, GHCR and Harbor use:
//! the registry answers 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, the
//! client asks the realm for a token (`GET ?service=…&scope=…`, HTTP basic auth with the
//! user's credentials) and retries with `Authorization: Bearer TOKEN`.
//!
//! HTTP/1.1 with std only (a thread per connection, keep-alive), reusing the fault proxy's
//! message reader. The tokens are JWTs as distribution 2.8 verifies them
//! (registry/auth/token/token.go): RS256, signed by `openssl dgst -sha256 -sign` with a key
//! whose self-signed certificate is the registry's `rootcertbundle` and rides in the header's
//! `x5c`; claims `iss` (the issuer), `aud` (the service), `sub`, `exp`/`nbf`/`iat`, `jti` and
//! `access`, each scope asked for granted in full to the user. An anonymous client gets a
//! token that grants nothing, as Docker Hub gives one; a wrong password gets a 401. Every
//! request is logged, so a test can see what a client asked for.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::fault_proxy::{read_body, read_head, split_connection, Acceptor, Head};
use crate::registry_fixture::checked;

/// How long a token is valid, in seconds.
const TOKEN_LIFETIME: u64 = 300;

/// One request for a token, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The user the request authenticated as: `None` for an anonymous request (and for one
    /// whose credentials were refused: see `status`).
    pub user: Option<String>,
    /// Each `scope` asked for (`repository:team/app:pull,push`), in order.
    pub scopes: Vec<String>,
    /// The `service` query parameter.
    pub service: String,
    /// 200 with a token, 401 for wrong credentials, 400 or 404 for a malformed request.
    pub status: u16,
}

struct Shared {
    user: String,
    password: String,
    service: String,
    issuer: String,
    key: PathBuf,
    /// The signing certificate, base64 DER, for the `x5c` header.
    cert_b64: String,
    log: Mutex<Vec<TokenRequest>>,
    issued: AtomicU64,
}

/// A running token server; stops accepting connections when dropped.
pub struct TokenServer {
    shared: Arc<Shared>,
    cert: PathBuf,
    acceptor: Acceptor,
}

impl TokenServer {
    /// A server on a free 127.0.0.1 port that lets in `user` with `password` and issues
    /// tokens for `service` as `issuer`, signed with an RSA key made in `dir` (`token.key`,
    /// and its certificate `token.crt`, see `cert_path`).
    pub fn start(
        dir: &Path,
        user: &str,
        password: &str,
        service: &str,
        issuer: &str,
    ) -> TokenServer {
        let (key, cert) = (dir.join("token.key"), dir.join("token.crt"));
        let mut openssl = Command::new("openssl");
        openssl
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-days", "2", "-subj", "/CN=rbuild test token issuer"]);
        checked(&mut openssl, "openssl req (token signing key)");
        let pem = std::fs::read_to_string(&cert).unwrap();
        // The PEM body is the DER certificate in standard base64, which `x5c` wants.
        let cert_b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let shared = Arc::new(Shared {
            user: user.to_string(),
            password: password.to_string(),
            service: service.to_string(),
            issuer: issuer.to_string(),
            key,
            cert_b64,
            log: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
        });
        let for_connections = shared.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let acceptor = Acceptor::start(listener, move |client| {
            serve_connection(client, &for_connections)
        });
        TokenServer {
            shared,
            cert,
            acceptor,
        }
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.acceptor.addr())
    }

    /// The PEM certificate of the signing key: the registry's `rootcertbundle`.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    pub fn service(&self) -> &str {
        &self.shared.service
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Every request since the start or the last `reset`.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn reset(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// The log, one request a line, for assertion messages.
    pub fn log_text(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {} service={} -> {}\n",
                    r.user.as_deref().unwrap_or("(anonymous)"),
                    r.scopes.join(" "),
                    r.service,
                    r.status
                )
            })
            .collect()
    }
}

/// An answer: status, extra header lines (each ending in CRLF), JSON body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            headers: String::new(),
            body: serde_json::json!({ "details": message }).to_string(),
        }
    }
}

fn serve_connection(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let (mut reader, mut writer) = split_connection(client)?;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        // A GET has no body, but one sent anyway must not be taken for the next request.
        read_body(&mut reader, &head, false)?;
        let mut parts = head.start.split_whitespace();
        let (method, target, version) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let close_after = version.eq_ignore_ascii_case("HTTP/1.0")
            || head
                .header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let answer = answer(shared, method, target, &head);
        let reason = match answer.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            _ => "Not Found",
        };
        let connection = if close_after { "close" } else { "keep-alive" };
        write!(
            writer,
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             {}Connection: {connection}\r\n\r\n{}",
            answer.status,
            answer.body.len(),
            answer.headers,
            answer.body
        )?;
        writer.flush()?;
        if close_after {
            return Ok(());
        }
    }
}

/// Checks the request and issues a token for it, logging it.
fn answer(shared: &Shared, method: &str, target: &str, head: &Head) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let param = |name: &'static str| {
        params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v)
    };
    // Clients send a `scope` parameter per scope; some join several with spaces in one.
    let scopes: Vec<String> = param("scope")
        .flat_map(|v| v.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let service = param("service").next().cloned().unwrap_or_default();
    let log = |user: Option<&str>, status: u16| {
        shared.log.lock().unwrap().push(TokenRequest {
            user: user.map(str::to_string),
            scopes: scopes.clone(),
            service: service.clone(),
            status,
        });
    };

    if method != "GET" || path != "/token" {
        log(None, 404);
        return Answer::error(404, "GET /token is the only thing served here");
    }
    if service != shared.service {
        log(None, 400);
        return Answer::error(400, &format!("unknown service {service:?}"));
    }
    let user = match head.header("authorization") {
        None => None,
        Some(value) => {
            let decoded = value
                .strip_prefix("Basic ")
                .and_then(|b64| STANDARD.decode(b64.trim()).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((user, password)) if user == shared.user && password == shared.password => {
                    Some(user.to_string())
                }
                _ => {
                    log(None, 401);
                    return Answer {
                        headers: "WWW-Authenticate: Basic realm=\"rbuild test token server\"\r\n"
                            .to_string(),
                        ..Answer::error(401, "incorrect username or password")
                    };
                }
            }
        }
    };
    let mut access = Vec::new();
    if user.is_some() {
        for scope in &scopes {
            // TYPE:NAME:ACTIONS; a name may hold a colon (a registry port), the others not.
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            access.push(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions,
            }));
        }
    }
    let token = sign_token(shared, user.as_deref().unwrap_or(""), access);
    log(user.as_deref(), 200);
    Answer {
        status: 200,
        headers: String::new(),
        body: serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME,
        })
        .to_string(),
    }
}

/// A compact JWS: base64url header and claims, RS256 over `header.claims`.
fn sign_token(shared: &Shared, subject: &str, access: Vec<serde_json::Value>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let n = shared.issued.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "RS256",
        "x5c": [shared.cert_b64],
    });
    let claims = serde_json::json!({
        "iss": shared.issuer,
        "sub": subject,
        "aud": shared.service,
        "exp": now + TOKEN_LIFETIME,
        "nbf": now.saturating_sub(1),
        "iat": now,
        "jti": format!("rbuild-test-{}-{n}", std::process::id()),
        "access": access,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = openssl_sign(&shared.key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// `openssl dgst -sha256 -sign KEY` of `data`: for an RSA key, the PKCS#1 v1.5 signature.
fn openssl_sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl starts");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl dgst -sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `%XX` escapes and `+` (a space in a query) decoded; a malformed escape is kept as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
