//! The registry handle: one oci-client per registry host (plain HTTP or HTTPS decided per host,
//! as Docker decides), the user's credentials for it, and a retry loop around every request.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use rbuild_cache::image::ImageName;

use super::auth::{Credentials, DockerConfig};
use super::error::{Failure, RegistryError};
use super::mount::Challenge;
use crate::solve::progress;

/// Attempts per request before a retryable failure is reported.
const ATTEMPTS: u32 = 5;
/// First pause between attempts; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A rate limit without a `Retry-After` rbuild can read (oci-client drops the headers of the
/// requests it makes) waits at least this.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(1);
/// A `Retry-After` longer than this ends the attempts: the build should not hang for it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The operation named in login errors.
pub(super) const LOGIN_OP: &str = "log in";

/// How long an insecure host may take to answer over HTTPS before plain HTTP is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

const USER_AGENT: &str = concat!("rbuild/", env!("CARGO_PKG_VERSION"));

/// How to reach registries; from the command line and the environment.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) that may speak plain HTTP, beside localhost and 127.0.0.0/8.
    pub insecure: Vec<String>,
    /// PEM files of extra certificate authorities, trusted beside the system roots.
    pub ca_files: Vec<PathBuf>,
    pub max_concurrent_uploads: usize,
    pub max_concurrent_downloads: usize,
}

impl RegistryOptions {
    /// Docker's defaults: 5 uploads and 3 downloads at a time.
    pub fn new(insecure: Vec<String>, ca_files: Vec<PathBuf>) -> RegistryOptions {
        RegistryOptions {
            insecure,
            ca_files,
            max_concurrent_uploads: 5,
            max_concurrent_downloads: 3,
        }
    }

    /// Whether `host` speaks plain HTTP: loopback names and addresses, and the listed hosts.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_without_port(host);
        let loopback = name == "localhost"
            || name
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback || self.is_listed(host)
    }

    /// Whether the user named `host` with `--insecure-registry`: as Docker does for those,
    /// its certificate is not verified. Loopback hosts get no such pass: a TLS registry on
    /// localhost is checked against the system roots and `--registry-ca`.
    pub fn is_listed(&self, host: &str) -> bool {
        let name = host_without_port(host);
        self.insecure
            .iter()
            .any(|h| h == host || (!h.contains(':') && h == name))
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // `[::1]:5000`
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A connection to every registry a command needs. Synchronous on the outside; inside, a small
/// tokio runtime drives oci-client.
pub struct Registry {
    runtime: tokio::runtime::Runtime,
    pub(super) options: RegistryOptions,
    docker_config: DockerConfig,
    connections: Mutex<HashMap<String, Connection>>,
}

/// A host's client and the credentials it was given.
#[derive(Clone)]
pub(super) struct Connection {
    pub client: Client,
    pub auth: RegistryAuth,
    /// For the few requests oci-client cannot make (two-scope mount tokens); same TLS setup.
    pub http: reqwest::Client,
    /// `https://registry` (the API host: `index.docker.io` for docker.io).
    pub base_url: String,
    /// The registry's auth challenge, read on first need.
    pub challenge: Arc<tokio::sync::OnceCell<Challenge>>,
    /// Bearer tokens rbuild fetched itself, by scope.
    pub tokens: Arc<Mutex<HashMap<String, String>>>,
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Result<Registry, RegistryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("rbuild-registry")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Setup(format!("starting the I/O runtime: {e}")))?;
        Ok(Registry {
            runtime,
            options,
            docker_config: docker_config(),
            connections: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs a registry operation to its end. A panic inside oci-client (it unwraps on some
    /// replies it does not expect) becomes an error naming `target`, not a crash.
    pub(super) fn run<T>(
        &self,
        target: &str,
        future: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.runtime.block_on(future)
        }));
        outcome.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(RegistryError::Failed {
                target: target.to_string(),
                op: "talk to the registry".into(),
                failure: Failure::Invalid(format!(
                    "the registry client failed on an unexpected reply: {message}"
                )),
            })
        })
    }

    /// The client for `host`, made on first use, with the user's credentials for it. Call it
    /// outside the runtime (it blocks on it).
    pub(super) fn connect(&self, host: &str) -> Result<Connection, RegistryError> {
        if let Some(connection) = self.connections.lock().unwrap().get(host) {
            return Ok(connection.clone());
        }
        let protocol = self.protocol_for(host)?;
        let scheme = match protocol {
            ClientProtocol::Http => "http",
            _ => "https",
        };
        let client = Client::try_from(self.client_config(host, protocol)?)
            .map_err(|e| RegistryError::Setup(format!("{host}: {e}")))?;
        let auth = self.auth_for(host)?;
        // Blob and upload calls take no credentials: oci-client looks them up by registry.
        let registry = Reference::with_tag(host.to_string(), "x".into(), "x".into())
            .resolve_registry()
            .to_string();
        self.block_on(client.store_auth_if_needed(&registry, &auth));
        let connection = Connection {
            client,
            auth,
            http: self.http_client(host)?,
            base_url: format!("{scheme}://{registry}"),
            challenge: Arc::default(),
            tokens: Arc::default(),
        };
        self.connections
            .lock()
            .unwrap()
            .insert(host.to_string(), connection.clone());
        Ok(connection)
    }

    /// HTTPS, except for insecure hosts that do not speak it: like Docker, rbuild tries HTTPS
    /// first there and falls back to plain HTTP when the TLS handshake fails. A certificate
    /// the CAs do not vouch for is an error, not a reason to drop TLS (unless the host was
    /// named with `--insecure-registry`, whose certificates are not checked).
    fn protocol_for(&self, host: &str) -> Result<ClientProtocol, RegistryError> {
        if !self.options.is_insecure(host) {
            return Ok(ClientProtocol::Https);
        }
        let client = Client::try_from(self.client_config(host, ClientProtocol::Https)?)
            .map_err(|e| RegistryError::Setup(format!("{host}: {e}")))?;
        let probe = Reference::with_tag(host.to_string(), "rbuild-probe".into(), "x".into());
        let answer = self.block_on(async {
            tokio::time::timeout(
                PROBE_TIMEOUT,
                client.auth(&probe, &RegistryAuth::Anonymous, RegistryOperation::Pull),
            )
            .await
        });
        let failure = match answer {
            Err(_elapsed) => return Ok(ClientProtocol::Http),
            Ok(Ok(_)) => return Ok(ClientProtocol::Https),
            Ok(Err(e)) => Failure::from(e),
        };
        match failure {
            Failure::Transport(cause) if cause.contains("certificate") => {
                Err(RegistryError::Failed {
                    target: host.to_string(),
                    op: "connect over HTTPS".into(),
                    failure: Failure::Transport(cause),
                })
            }
            Failure::Transport(_) => Ok(ClientProtocol::Http),
            // Any HTTP answer (a token server refusing an anonymous user, say) came over TLS.
            _ => Ok(ClientProtocol::Https),
        }
    }

    /// A plain HTTP client trusting what the oci-client does.
    fn http_client(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let mut certificates = Vec::new();
        for pem in self.ca_certificates()? {
            certificates.push(
                reqwest::Certificate::from_pem(&pem.data).map_err(|e| {
                    RegistryError::Setup(format!("a --registry-ca certificate: {e}"))
                })?,
            );
        }
        reqwest::Client::builder()
            .tls_certs_merge(certificates)
            .danger_accept_invalid_certs(self.options.is_listed(host))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| RegistryError::Setup(format!("{host}: {e}")))
    }

    fn client_config(
        &self,
        host: &str,
        protocol: ClientProtocol,
    ) -> Result<ClientConfig, RegistryError> {
        let certificates = self.ca_certificates()?;
        Ok(ClientConfig {
            protocol,
            extra_root_certificates: certificates,
            accept_invalid_certificates: self.options.is_listed(host),
            // Indexes are resolved by rbuild itself (platforms.rs), with variant defaults.
            platform_resolver: None,
            // One PUT per blob, streamed from the file with its length: no chunk buffers.
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        })
    }

    fn auth_for(&self, host: &str) -> Result<RegistryAuth, RegistryError> {
        Ok(match self.docker_config.credentials(host)? {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username, password)
            }
            Some(Credentials::IdentityToken { .. }) => {
                progress(format_args!(
                    "WARNING: the saved credentials for {host} are an identity token (an SSO \
                     login), which rbuild cannot use yet; going on without credentials. Log in \
                     with a username and a password or access token: `rbuild login {host}`"
                ));
                RegistryAuth::Anonymous
            }
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or [`ATTEMPTS`] are used up, pausing
    /// longer after each retryable failure.
    pub(super) async fn retry<T, F, Fut>(
        &self,
        target: &str,
        op: &str,
        mut attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = FIRST_BACKOFF;
        for n in 1.. {
            // Ctrl-C: stop between attempts (the build unwinds; nothing half-written stays).
            if crate::interrupt::stopping() {
                return Err(RegistryError::Failed {
                    target: target.to_string(),
                    op: op.to_string(),
                    failure: Failure::Invalid("interrupted".into()),
                });
            }
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let too_long = failure.retry_after().is_some_and(|a| a > MAX_RETRY_AFTER);
            if !failure.retryable() || n >= ATTEMPTS || too_long {
                return Err(RegistryError::Failed {
                    target: target.to_string(),
                    op: op.to_string(),
                    failure,
                });
            }
            // The registry's own `Retry-After` is the wait; without one, a rate limit waits at
            // least a second.
            let pause = match failure.retry_after() {
                // Never less than the backoff: `Retry-After: 0` must not burn every attempt.
                Some(after) => after.max(backoff),
                None if failure.is_rate_limit() => backoff.max(RATE_LIMIT_BACKOFF),
                None => backoff,
            };
            progress(format_args!(
                "{target}: {op}: {failure}; retrying in {:.1}s (attempt {} of {ATTEMPTS})",
                pause.as_secs_f64(),
                n + 1
            ));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        unreachable!("the loop returns")
    }

    /// Checks `credentials` against `host` as `docker login` does, without saving them.
    pub fn check_login(&self, host: &str, credentials: &Credentials) -> Result<(), RegistryError> {
        let Credentials::Basic { username, password } = credentials else {
            return Err(RegistryError::Setup(
                "only username and password logins are supported".into(),
            ));
        };
        let protocol = self.protocol_for(host)?;
        let client = Client::try_from(self.client_config(host, protocol)?)
            .map_err(|e| RegistryError::Setup(format!("{host}: {e}")))?;
        let auth = RegistryAuth::Basic(username.clone(), password.clone());
        // A repository nobody has: a token server must still vouch for the user, and a registry
        // with basic auth answers 401 to wrong credentials and 404 to right ones.
        let probe = Reference::with_tag(
            host.to_string(),
            "rbuild-login-check".into(),
            "latest".into(),
        );
        self.run(
            host,
            self.retry(host, LOGIN_OP, || async {
                let token = client
                    .auth(&probe, &auth, RegistryOperation::Pull)
                    .await
                    .map_err(Failure::from)?;
                if token.is_some() {
                    return Ok(());
                }
                // As `docker login`: only an answer that shows the credentials were taken counts.
                match client.fetch_manifest_digest(&probe, &auth).await {
                    Ok(_) => Ok(()),
                    Err(e) => match Failure::from(e) {
                        Failure::Status(404, _) => Ok(()),
                        Failure::Status(403, message) => Err(Failure::Status(401, message)),
                        other => Err(other),
                    },
                }
            }),
        )
    }
}

impl Registry {
    /// Every certificate of the `--registry-ca` files.
    fn ca_certificates(&self) -> Result<Vec<Certificate>, RegistryError> {
        let mut certificates = Vec::new();
        for path in &self.options.ca_files {
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let blocks = pem_certificates(&pem);
            if blocks.is_empty() {
                return Err(RegistryError::CaFile {
                    path: path.clone(),
                    message: "no PEM certificate in it".into(),
                });
            }
            certificates.extend(blocks.into_iter().map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            }));
        }
        Ok(certificates)
    }
}

/// The user's Docker config; one that cannot be read leaves rbuild without credentials, with
/// a warning, as docker goes on with anonymous access.
fn docker_config() -> DockerConfig {
    DockerConfig::load().unwrap_or_else(|e| {
        progress(format_args!(
            "WARNING: {e}; going on without saved credentials"
        ));
        DockerConfig::empty()
    })
}

/// An oci-client reference for a name's repository with a tag or a digest.
pub(super) fn reference(name: &ImageName, tag_or_digest: TagOrDigest) -> Reference {
    match tag_or_digest {
        TagOrDigest::Tag(tag) => {
            Reference::with_tag(name.domain.clone(), name.path.clone(), tag.to_string())
        }
        TagOrDigest::Digest(digest) => {
            Reference::with_digest(name.domain.clone(), name.path.clone(), digest.to_string())
        }
    }
}

pub(super) enum TagOrDigest<'a> {
    Tag(&'a str),
    Digest(&'a rbuild_cache::digest::Digest),
}

/// Each `-----BEGIN CERTIFICATE-----` block of a PEM file (rustls wants them one by one).
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut blocks = Vec::new();
    let mut rest = &text[..];
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_are_plain_http() {
        let options = RegistryOptions::new(vec!["reg.lan:5000".into(), "other".into()], vec![]);
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "reg.lan:5000",
            "other:443",
        ] {
            assert!(options.is_insecure(host), "{host}");
        }
        for host in [
            "docker.io",
            "reg.lan:5001",
            "10.0.0.1:5000",
            "localhost.example",
        ] {
            assert!(!options.is_insecure(host), "{host}");
        }
    }

    fn registry() -> Registry {
        let home = tempfile::tempdir().unwrap();
        let mut registry = Registry::new(RegistryOptions::new(vec![], vec![])).unwrap();
        registry.docker_config = DockerConfig::load_from(home.path()).unwrap();
        registry
    }

    #[test]
    fn retryable_failures_are_retried_until_success() {
        let registry = registry();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = registry.block_on(registry.retry("r/app", "push blob", || async {
            match attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Err(Failure::Status(503, "busy".into())),
                1 => Err(Failure::Transport("connection reset".into())),
                n => Ok(n),
            }
        }));
        assert_eq!(result.unwrap(), 2);
    }

    #[test]
    fn a_final_failure_names_target_operation_and_status() {
        let registry = registry();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), _> =
            registry.block_on(
                registry.retry("r:5000/app", "check blob sha256:ab", || async {
                    attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Err(Failure::Status(401, "authentication required".into()))
                }),
            );
        assert_eq!(attempts.into_inner(), 1, "a 401 is not retried");
        let text = result.unwrap_err().to_string();
        assert!(
            text.starts_with(
                "r:5000/app: check blob sha256:ab: HTTP 401 Unauthorized: authentication required"
            ) && text.contains("rbuild login r:5000"),
            "{text}"
        );
    }

    #[test]
    fn pem_files_split_into_certificates() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let blocks = pem_certificates(pem);
        assert_eq!(blocks.len(), 2);
        assert!(String::from_utf8_lossy(&blocks[1]).contains("BBB"));
        assert!(pem_certificates(b"no certs").is_empty());
    }
}
