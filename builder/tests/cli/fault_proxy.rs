//! A reverse proxy in front of a plain `TestRegistry` that breaks the requests a test chooses,
//! and logs every request so a test can count what a client did (blob uploads, manifest PUTs,
//! blob fetches).
//!
//! HTTP/1.1 with std only: a thread per client connection, which may carry many requests
//! (keep-alive). Each request is read whole (Content-Length or chunked body), sent on a fresh
//! upstream connection with `Connection: close` and its body re-framed with Content-Length,
//! and the whole response is read (Content-Length, chunked, until close, or none for HEAD,
//! 1xx, 204 and 304) before the faults apply and it goes back to the client. The Host header
//! goes upstream as the client sent it, so the absolute `Location` URLs distribution builds
//! from it point at the proxy.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use regex::Regex;

/// What the proxy does to a request a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the client's connection without answering; the request never reaches the
    /// registry.
    DropBeforeResponse,
    /// Forward; send the response head (with its full Content-Length) and half of the body,
    /// then close the connection.
    DropMidBody,
    /// Answer this status with a small JSON error body, without forwarding.
    Status(u16),
    /// Answer 429 with `Retry-After: SECS`, without forwarding.
    TooManyRequests { retry_after_secs: u64 },
    /// Forward, then invert one byte in the middle of the response body (Content-Length kept).
    FlipByte,
    /// Forward, then remove the `Location` header from the response (as Amazon ECR answered
    /// manifest PUTs).
    StripLocation,
}

/// One request the proxy saw, in the order the responses were decided.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query after `?`, or empty.
    pub query: String,
    /// The status the client got (or began to get); `None` when the connection was dropped
    /// before any answer, or the upstream could not be reached.
    pub status: Option<u16>,
    /// The fault applied to it, if a rule matched.
    pub fault: Option<Fault>,
    /// When the request's head had been read (before its body).
    pub at: Instant,
    /// When the response was decided: upstream answered, or the fault applied.
    pub done: Instant,
}

impl Exchange {
    /// `METHOD /path?query -> status [fault]`, for assertion messages.
    pub fn line(&self) -> String {
        let query = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        let status = self.status.map_or("dropped".to_string(), |s| s.to_string());
        let fault = self.fault.map_or(String::new(), |f| format!(" [{f:?}]"));
        format!("{} {}{query} -> {status}{fault}", self.method, self.path)
    }
}

/// The largest number of `exchanges` in progress at one time (each from its `at` to its
/// `done`), as a proxy sees a client's concurrency.
pub fn max_in_flight(exchanges: &[Exchange]) -> usize {
    // Ends sort before starts at the same instant: touching is not overlapping.
    let mut events: Vec<(Instant, i32)> = exchanges
        .iter()
        .flat_map(|e| [(e.at, 1), (e.done, -1)])
        .collect();
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, step) in events {
        now += step;
        max = max.max(now);
    }
    max as usize
}

struct Rule {
    method: Regex,
    path: Regex,
    fault: Fault,
    remaining: usize,
    description: String,
}

struct Shared {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Exchange>>,
}

impl Shared {
    /// The fault of the first rule matching with applications left, using one up.
    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.method.is_match(method) && r.path.is_match(path))?;
        rule.remaining -= 1;
        Some(rule.fault)
    }

    fn record(&self, request: &RequestHead, status: Option<u16>, fault: Option<Fault>) {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        self.log.lock().unwrap().push(Exchange {
            method: request.method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            status,
            fault,
            at: request.at,
            done: Instant::now(),
        });
    }
}

/// A running proxy; stops accepting connections when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    acceptor: Acceptor,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream` (`HOST:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> FaultProxy {
        FaultProxy::start_on(std::net::Ipv4Addr::LOCALHOST.into(), upstream)
    }

    /// A proxy on a free port of the local address `ip`.
    pub fn start_on(ip: std::net::IpAddr, upstream: &str) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let for_connections = shared.clone();
        let acceptor = Acceptor::start(TcpListener::bind((ip, 0)).unwrap(), move |client| {
            serve_connection(client, &for_connections)
        });
        FaultProxy { shared, acceptor }
    }

    /// `127.0.0.1:PORT` of the proxy, to use in image names.
    pub fn host(&self) -> String {
        self.acceptor.addr().to_string()
    }

    /// Applies `fault` to the next `times` requests whose method matches `method` (a regex
    /// matched whole: `"GET"`, `"PUT|PATCH"`, `".*"`) and whose path (without the query)
    /// matches `path` (a regex searched in it, so anchor it with `^` and `$` as needed).
    pub fn add_fault(&self, method: &str, path: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule {
            method: Regex::new(&format!("^(?:{method})$")).unwrap(),
            path: Regex::new(path).unwrap(),
            fault,
            remaining: times,
            description: format!("{fault:?} on {method} {path}"),
        });
    }

    /// The rules that still have applications left (`FAULT on METHOD PATH (N left)`): a test
    /// whose faults never fired proved nothing.
    pub fn unused_faults(&self) -> Vec<String> {
        let rules = self.shared.rules.lock().unwrap();
        rules
            .iter()
            .filter(|r| r.remaining > 0)
            .map(|r| format!("{} ({} left)", r.description, r.remaining))
            .collect()
    }

    /// Removes every rule.
    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every request seen since the start or the last `reset_counts`.
    pub fn requests(&self) -> Vec<Exchange> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far (the rules stay).
    pub fn reset_counts(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// The requests whose method matches `method` (whole) and path matches `path` (searched).
    pub fn matching(&self, method: &str, path: &str) -> Vec<Exchange> {
        let method = Regex::new(&format!("^(?:{method})$")).unwrap();
        let path = Regex::new(path).unwrap();
        self.requests()
            .into_iter()
            .filter(|e| method.is_match(&e.method) && path.is_match(&e.path))
            .collect()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.matching(method, path).len()
    }

    /// The blob uploads that completed (201): each is the PUT that closes an upload session,
    /// or a single-request POST carrying `digest=` (a monolithic upload).
    pub fn completed_blob_uploads(&self) -> Vec<Exchange> {
        self.matching("PUT|POST", "^/v2/.+/blobs/uploads/")
            .into_iter()
            .filter(|e| e.status == Some(201))
            .filter(|e| e.method == "PUT" || e.query.contains("digest="))
            .collect()
    }

    /// Every request that sent blob data (PATCH, or a PUT/POST to an upload with a digest),
    /// whatever its status.
    pub fn blob_upload_attempts(&self) -> Vec<Exchange> {
        self.matching("PUT|PATCH|POST", "^/v2/.+/blobs/uploads/")
            .into_iter()
            .filter(|e| e.method != "POST" || e.query.contains("digest="))
            .collect()
    }

    /// The `GET`s of blobs (`/v2/REPO/blobs/sha256:…`).
    pub fn blob_fetches(&self) -> Vec<Exchange> {
        self.matching("GET", "^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
    }

    /// The manifest PUTs.
    pub fn manifest_puts(&self) -> Vec<Exchange> {
        self.matching("PUT", "^/v2/.+/manifests/[^/]+$")
    }

    /// The log, one exchange a line, for assertion messages.
    pub fn log_text(&self) -> String {
        self.requests().iter().map(|e| e.line() + "\n").collect()
    }

    /// Asserts every rule fired as often as it was told to: a test whose faults never fired
    /// proved nothing.
    #[track_caller]
    pub fn assert_faults_all_fired(&self) {
        assert!(
            self.unused_faults().is_empty(),
            "{:?}",
            self.unused_faults()
        );
    }
}

/// A listener's accept loop on a thread of its own, serving each connection on a thread of
/// its own; it stops accepting when dropped.
pub struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Accepts on `listener`, handing each client to `serve`. An error `serve` returns ends
    /// that connection only: the client sees it closed.
    pub fn start<F>(listener: TcpListener, serve: F) -> Acceptor
    where
        F: Fn(TcpStream) -> io::Result<()> + Send + Sync + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let serve = serve.clone();
                std::thread::spawn(move || {
                    let _ = serve(client);
                });
            }
        });
        Acceptor {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client connection as a buffered reader and a writer, reads timing out after 120 s.
pub fn split_connection(client: TcpStream) -> io::Result<(BufReader<TcpStream>, TcpStream)> {
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    client.set_nodelay(true)?;
    Ok((BufReader::new(client.try_clone()?), client))
}

/// The start line and headers of a request or a response.
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| bad(format!("Content-Length {v:?}")))
            })
            .transpose()
    }
}

/// A parsed request line with when it arrived.
struct RequestHead {
    method: String,
    target: String,
    at: Instant,
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "trailer",
    "expect",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Serves one client connection until it closes, a request asks to close, or a fault drops
/// it.
fn serve_connection(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let (mut reader, mut writer) = split_connection(client)?;
    loop {
        // A TLS handshake (a client trying HTTPS first) gets an answer at once, as from Go's
        // server, rather than a wait for a line end that never comes.
        if reader.fill_buf()?.first() == Some(&0x16) {
            writer.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nThis is a plain HTTP proxy.\n")?;
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let at = Instant::now();
        let mut parts = head.start.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!("request line {:?}", head.start)));
        };
        let request = RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            at,
        };
        let close_after =
            version.eq_ignore_ascii_case("HTTP/1.0") || head.has_token("connection", "close");
        let has_body = head.is_chunked() || head.content_length()?.is_some_and(|n| n > 0);
        if has_body && head.has_token("expect", "100-continue") {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = read_body(&mut reader, &head, false)?;
        let path = request.target.split('?').next().unwrap_or_default();
        let fault = shared.take_fault(&request.method, path);
        let is_head = request.method.eq_ignore_ascii_case("HEAD");
        let connection = if close_after { "close" } else { "keep-alive" };

        let answer_error = |writer: &mut TcpStream, status: u16, extra: &str| {
            shared.record(&request, Some(status), fault);
            let body = format!(
                "{{\"errors\":[{{\"code\":\"UNKNOWN\",\"message\":\"fault proxy: {status}\"}}]}}\n"
            );
            let mut out = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n{extra}Connection: {connection}\r\n\r\n",
                reason(status),
                body.len()
            )
            .into_bytes();
            if !is_head {
                out.extend_from_slice(body.as_bytes());
            }
            writer.write_all(&out)
        };
        match fault {
            Some(Fault::DropBeforeResponse) => {
                shared.record(&request, None, fault);
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Status(status)) => {
                answer_error(&mut writer, status, "")?;
                if close_after {
                    return Ok(());
                }
                continue;
            }
            Some(Fault::TooManyRequests { retry_after_secs }) => {
                answer_error(
                    &mut writer,
                    429,
                    &format!("Retry-After: {retry_after_secs}\r\n"),
                )?;
                if close_after {
                    return Ok(());
                }
                continue;
            }
            _ => {}
        }

        let (response, mut body) = match forward(&shared.upstream, &request, &head, &body) {
            Ok(response) => response,
            Err(e) => {
                // The registry is gone or broke the exchange: a 502 tells the client so.
                shared.record(&request, None, fault);
                let message = format!("fault proxy: upstream: {e}\n");
                write!(
                    writer,
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    message.len(),
                    message
                )?;
                return Ok(());
            }
        };
        let status = status_of(&response)?;
        shared.record(&request, Some(status), fault);
        let bodiless = is_head || status < 200 || status == 204 || status == 304;
        let mut out = format!("{}\r\n", response.start);
        for (name, value) in &response.headers {
            if is_hop_by_hop(name) || (!bodiless && name.eq_ignore_ascii_case("content-length")) {
                continue;
            }
            if fault == Some(Fault::StripLocation) && name.eq_ignore_ascii_case("location") {
                continue;
            }
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if !bodiless {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str(&format!("Connection: {connection}\r\n\r\n"));
        let mut out = out.into_bytes();
        match fault {
            Some(Fault::DropMidBody) => {
                out.extend_from_slice(&body[..body.len() / 2]);
                writer.write_all(&out)?;
                writer.flush()?;
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::FlipByte) if !body.is_empty() => {
                let middle = body.len() / 2;
                body[middle] ^= 0xff;
            }
            _ => {}
        }
        out.extend_from_slice(&body);
        writer.write_all(&out)?;
        writer.flush()?;
        if close_after {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Sends the request on a fresh connection to `upstream` and reads the whole response.
fn forward(
    upstream: &str,
    request: &RequestHead,
    head: &Head,
    body: &[u8],
) -> io::Result<(Head, Vec<u8>)> {
    let stream = TcpStream::connect(upstream)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    let mut out = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in &head.headers {
        if is_hop_by_hop(name) || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let framed = head.is_chunked() || head.content_length()?.is_some();
    if framed || !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    let mut writer = stream.try_clone()?;
    // The registry may answer (an error) and close before reading the whole body: its answer
    // still counts, so a failed write is not the end.
    let _ = writer.write_all(&out);
    let mut reader = BufReader::new(stream);
    loop {
        let response = read_head(&mut reader)?.ok_or_else(|| bad("no response".to_string()))?;
        let status = status_of(&response)?;
        if (100..200).contains(&status) {
            continue;
        }
        let bodiless =
            request.method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
        let body = if bodiless {
            Vec::new()
        } else {
            read_body(&mut reader, &response, true)?
        };
        return Ok((response, body));
    }
}

pub fn status_of(response: &Head) -> io::Result<u16> {
    response
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {:?}", response.start)))
}

/// Reads a start line and headers; `None` at a clean end of stream before any byte.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += n;
        if total > 256 * 1024 {
            return Err(bad("head over 256 KiB".to_string()));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if lines.is_empty() {
                // A stray CRLF between messages.
                continue;
            }
            break;
        }
        lines.push(text.to_string());
    }
    let start = lines.remove(0);
    let headers = lines
        .into_iter()
        .map(|l| match l.split_once(':') {
            Some((name, value)) => Ok((name.trim().to_string(), value.trim().to_string())),
            None => Err(bad(format!("header line {l:?}"))),
        })
        .collect::<io::Result<_>>()?;
    Ok(Some(Head { start, headers }))
}

/// Reads the body `head` announces: chunked (decoded), Content-Length, or, for a response
/// with neither, everything until the connection closes.
pub fn read_body(reader: &mut impl BufRead, head: &Head, response: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.is_chunked() {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let size = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| bad(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut trailer = String::new();
                    if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else if let Some(length) = head.content_length()? {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if response {
        reader.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Fault",
    }
}
