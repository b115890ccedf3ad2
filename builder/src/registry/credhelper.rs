//! The credential helper protocol of docker/docker-credential-helpers, as the docker CLI
//! speaks it: `docker-credential-NAME get|store|erase`, the request on stdin (the server URL,
//! or for `store` a JSON object), the answer on stdout. A helper that fails says why on
//! stdout; "credentials not found" there is an answer, not a failure.
//!
//! Secrets go to a helper on stdin and come back on stdout; neither ever reaches an error
//! message: a helper's output is quoted only with the secret cut out of it, and the output of
//! a `get` that looks like an answer is not quoted at all.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::auth::{json_field, AuthError, Credentials};

/// The username under which docker keeps an identity token in a helper.
const TOKEN_USERNAME: &str = "<token>";
/// What helpers print when they hold nothing for a server (the helpers' library prints
/// "credentials not found in native keychain"; others shorten it).
const NOT_FOUND: &str = "credentials not found";
/// A helper's message is quoted up to this many bytes, so a chatty one cannot flood an error.
const MAX_MESSAGE: usize = 500;

/// One configured helper, for one registry.
pub(super) struct Helper<'a> {
    /// The name in config.json (`credsStore`, `credHelpers`): the program is
    /// `docker-credential-NAME`.
    pub name: &'a str,
    /// Searched before PATH.
    pub extra_dir: Option<&'a Path>,
    /// The registry as rbuild names it, for messages.
    pub registry: &'a str,
}

impl Helper<'_> {
    fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    fn error(&self, message: String) -> AuthError {
        AuthError::Helper {
            program: self.program(),
            registry: self.registry.to_string(),
            message,
        }
    }

    /// The helper's credentials for `server`; None when it holds none.
    pub fn get(&self, server: &str) -> Result<Option<Credentials>, AuthError> {
        let out = self.run("get", server.as_bytes())?;
        if !out.status.success() {
            if says_not_found(&out) {
                return Ok(None);
            }
            // Output that parses is an answer printed before failing: it may hold the secret.
            let answer_like = serde_json::from_slice::<Value>(&out.stdout).is_ok();
            return Err(self.error(failure_message(&out, !answer_like, "")));
        }
        let reply: Value = serde_json::from_slice(&out.stdout)
            .map_err(|_| self.error("its answer to `get` is not JSON".to_string()))?;
        // Go decodes the answer into a struct: field names match whatever their case.
        let text = |name: &str| match reply.as_object().and_then(|o| json_field(o, name)) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Ok(String::new()),
            Some(_) => Err(self.error(format!("`{name}` in its answer is not a string"))),
        };
        let (username, secret) = (text("Username")?, text("Secret")?);
        Ok(
            if secret.is_empty() && (username.is_empty() || username == TOKEN_USERNAME) {
                None
            } else if username == TOKEN_USERNAME {
                // docker keeps no username with a token; neither can we.
                Some(Credentials::IdentityToken {
                    username: String::new(),
                    token: secret,
                })
            } else {
                Some(Credentials::Basic {
                    username,
                    password: secret,
                })
            },
        )
    }

    /// Gives `credentials` for `server` to the helper.
    pub fn store(&self, server: &str, credentials: &Credentials) -> Result<(), AuthError> {
        let (username, secret) = match credentials {
            Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
            Credentials::IdentityToken { token, .. } => (TOKEN_USERNAME, token.as_str()),
        };
        let request = serde_json::json!({
            "ServerURL": server,
            "Username": username,
            "Secret": secret,
        });
        let out = self.run("store", request.to_string().as_bytes())?;
        if out.status.success() {
            return Ok(());
        }
        Err(self.error(failure_message(&out, true, secret)))
    }

    /// Has the helper forget `server`; false when it held nothing for it.
    pub fn erase(&self, server: &str) -> Result<bool, AuthError> {
        let out = self.run("erase", server.as_bytes())?;
        if out.status.success() {
            Ok(true)
        } else if says_not_found(&out) {
            Ok(false)
        } else {
            Err(self.error(failure_message(&out, true, "")))
        }
    }

    fn run(&self, action: &str, input: &[u8]) -> Result<Output, AuthError> {
        let program = self.program();
        let Some(path) = self.find(&program) else {
            return Err(self.error(format!("{program} is not on PATH")));
        };
        let mut command = Command::new(&path);
        command
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut command)
            .map_err(|e| self.error(format!("running {}: {e}", path.display())))?;
        // The request is far smaller than a pipe, so writing it all before reading cannot block.
        // A helper that exits without reading it breaks the pipe; its exit status tells.
        if let Some(mut stdin) = child.stdin.take() {
            match stdin.write_all(input) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.error(format!("writing to {}: {e}", path.display())));
                }
                _ => {}
            }
        }
        child
            .wait_with_output()
            .map_err(|e| self.error(format!("waiting for {}: {e}", path.display())))
    }

    /// The program in the extra directory or on PATH. Relative PATH entries are skipped, as
    /// Go's exec.LookPath refuses them: they would run whatever the current directory holds.
    fn find(&self, program: &str) -> Option<PathBuf> {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        let on_path = std::env::split_paths(&path_var).filter(|d| d.is_absolute());
        self.extra_dir
            .map(Path::to_path_buf)
            .into_iter()
            .chain(on_path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Spawns, waiting out ETXTBSY: a helper being replaced (a package upgrade, or a test that has
/// just written one while another thread forked) is briefly busy.
fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..6 {
        match command.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            result => return result,
        }
    }
    command.spawn()
}

fn says_not_found(out: &Output) -> bool {
    [&out.stdout, &out.stderr]
        .iter()
        .any(|text| String::from_utf8_lossy(text).contains(NOT_FOUND))
}

/// The exit status and what the helper said (stdout when `with_stdout`, then stderr), trimmed,
/// with `secret` cut out before anything is shortened (so no prefix of it survives).
fn failure_message(out: &Output, with_stdout: bool, secret: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = [with_stdout.then_some(stdout.trim()), Some(stderr.trim())];
    let mut said = shown
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if !secret.is_empty() {
        said = said.replace(secret, "<redacted>");
    }
    if said.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !said.is_char_boundary(end) {
            end -= 1;
        }
        said.truncate(end);
        said.push('…');
    }
    if said.is_empty() {
        out.status.to_string()
    } else {
        format!("{}: {said}", out.status)
    }
}
