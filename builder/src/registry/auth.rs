//! Registry credentials in docker's `config.json`, found, saved and removed as the docker CLI
//! does (`cli/config/configfile`, `cli/config/credentials`), so `docker login` and rbuild
//! share one login: a registry's own helper (`credHelpers`), else the default helper
//! (`credsStore`), else `auths` with `user:password` in base64.
//!
//! The file is kept as parsed JSON rather than as a struct, so a rewrite keeps every key rbuild
//! does not know (docker's own settings, other tools'). No secret is ever put in an error or a
//! Debug output.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::Serialize;
use serde_json::{Map, Value};

use super::credhelper::Helper;

/// The key docker uses for Docker Hub in config.json and with helpers.
pub(crate) const INDEX_SERVER: &str = "https://index.docker.io/v1/";

/// A user's credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// docker's `identitytoken` (helpers return Username "<token>"): an OAuth2 refresh token.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = format_args!("<redacted>");
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &redacted)
                .finish(),
            Credentials::IdentityToken { username, .. } => f
                .debug_struct("IdentityToken")
                .field("username", username)
                .field("token", &redacted)
                .finish(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("neither DOCKER_CONFIG nor HOME is set: cannot find docker's config.json")]
    NoHome,
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid JSON: {source}")]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("credential helper {program} for {registry}: {message}")]
    Helper {
        program: String,
        registry: String,
        message: String,
    },
    #[error("cannot save credentials for {registry}: {message}")]
    Unstorable {
        registry: String,
        message: &'static str,
    },
}

/// docker's config.json: where it is, what it holds, and where helpers are looked for.
pub struct DockerConfig {
    path: PathBuf,
    json: Map<String, Value>,
    helper_dir: Option<PathBuf>,
}

// By hand: the parsed file holds secrets.
impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("helper_dir", &self.helper_dir)
            .finish_non_exhaustive()
    }
}

/// An `auths` entry, decoded as docker's LoadFromReader decodes it.
struct Entry {
    username: String,
    password: String,
    identity_token: String,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`. A missing file is an
    /// empty config (not an error); a malformed one is an error naming the file.
    pub fn load() -> Result<DockerConfig, AuthError> {
        let dir = config_dir(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))?;
        Self::load_from(&dir)
    }

    /// No credentials at all: for going on when the user's config cannot be read.
    pub fn empty() -> DockerConfig {
        DockerConfig {
            path: PathBuf::new(),
            json: Map::new(),
            helper_dir: None,
        }
    }

    /// `dir/config.json`.
    pub fn load_from(dir: &Path) -> Result<DockerConfig, AuthError> {
        let path = dir.join("config.json");
        let json = match fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(source) => return Err(AuthError::Read { path, source }),
        };
        let config = DockerConfig {
            path,
            json,
            helper_dir: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// Looks for `docker-credential-*` programs in `dir` before PATH.
    #[cfg(test)]
    pub(crate) fn with_helper_dir(mut self, dir: PathBuf) -> Self {
        self.helper_dir = Some(dir);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Credentials for a registry host as rbuild names it ("docker.io", "ghcr.io",
    /// "127.0.0.1:5000"). As docker: the registry's helper, else `credsStore`, else `auths`.
    /// With a helper configured, `auths` is not consulted (its entry is only a marker).
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        let key = server_key(registry);
        if let Some(helper) = self.helper(registry, &key) {
            return helper.get(&key);
        }
        let Some((found, value)) = self.find_entry(&key) else {
            return Ok(None);
        };
        let entry = parse_entry(&self.path, found, value)?;
        Ok(if !entry.identity_token.is_empty() {
            Some(Credentials::IdentityToken {
                username: entry.username,
                token: entry.identity_token,
            })
        } else if entry.username.is_empty() && entry.password.is_empty() {
            None
        } else {
            Some(Credentials::Basic {
                username: entry.username,
                password: entry.password,
            })
        })
    }

    /// Saves as `docker login` does: through the registry's helper or `credsStore` when one
    /// is configured (then `auths` gets an empty `{}` entry, as docker writes), else base64 in
    /// `auths`. An unchanged entry is not rewritten.
    pub fn store(&mut self, registry: &str, credentials: &Credentials) -> Result<(), AuthError> {
        check_storable(registry, credentials)?;
        let key = server_key(registry);
        let entry = match self.helper(registry, &key) {
            Some(helper) => {
                helper.store(&key, credentials)?;
                Value::Object(Map::new())
            }
            None => encode_entry(credentials),
        };
        let auths = self.auths_mut();
        if auths.get(&key) == Some(&entry) {
            return Ok(());
        }
        auths.insert(key, entry);
        self.save()
    }

    /// Removes as `docker logout` does: the host's key and, for a registry other than Docker
    /// Hub, its `http://` and `https://` forms older clients wrote, each from its helper and
    /// from `auths`. A helper that fails keeps its `auths` entry too. As docker, one removal
    /// makes it a success; with none, the first helper failure is the error. Returns whether
    /// anything was removed.
    pub fn erase(&mut self, registry: &str) -> Result<bool, AuthError> {
        let key = server_key(registry);
        let mut keys = vec![key.clone()];
        if key != INDEX_SERVER {
            keys.extend([format!("http://{key}"), format!("https://{key}")]);
        }
        let (mut removed, mut changed, mut failures) = (false, false, Vec::new());
        for key in &keys {
            if let Some(helper) = self.helper(registry, key) {
                match helper.erase(key) {
                    Ok(erased) => removed |= erased,
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                }
            }
            if self.remove_entry(key) {
                (removed, changed) = (true, true);
            }
        }
        if changed {
            self.save()?;
        }
        match failures.into_iter().next() {
            Some(failure) if !removed => Err(failure),
            _ => Ok(removed),
        }
    }

    /// The helper for `key`: `credHelpers[key]` when present (an empty name there means the
    /// file, not `credsStore`, as in docker), else `credsStore`.
    fn helper<'a>(&'a self, registry: &'a str, key: &str) -> Option<Helper<'a>> {
        let own = json_field(&self.json, "credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| helpers.get(key));
        let name = match own {
            Some(name) => name.as_str(),
            None => json_field(&self.json, "credsStore").and_then(Value::as_str),
        };
        name.filter(|n| !n.is_empty()).map(|name| Helper {
            name,
            extra_dir: self.helper_dir.as_deref(),
            registry,
        })
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        json_field(&self.json, "auths").and_then(Value::as_object)
    }

    /// The entry under `key`, else (for files older clients wrote) the first whose key names
    /// the same host once reduced as docker's ConvertToHostname reduces it.
    fn find_entry(&self, key: &str) -> Option<(&str, &Value)> {
        let auths = self.auths()?;
        auths
            .get_key_value(key)
            .or_else(|| auths.iter().find(|(k, _)| convert_to_hostname(k) == key))
            .map(|(k, v)| (k.as_str(), v))
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let name = field_name(&self.json, "auths").unwrap_or_else(|| "auths".to_string());
        let slot = self
            .json
            .entry(name)
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            // Only null gets here (validate refuses other types): docker writes it back as {}.
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(map) => map,
            _ => unreachable!("the slot was just made an object"),
        }
    }

    fn remove_entry(&mut self, key: &str) -> bool {
        let name = field_name(&self.json, "auths");
        let auths = name.and_then(|n| self.json.get_mut(&n));
        auths
            .and_then(Value::as_object_mut)
            .is_some_and(|auths| auths.remove(key).is_some())
    }

    /// Refuses what docker's decoder would refuse, so a bad file fails on load, naming itself,
    /// rather than on the first look-up of some other registry.
    fn validate(&self) -> Result<(), AuthError> {
        let invalid = |message: String| AuthError::Invalid {
            path: self.path.clone(),
            message,
        };
        match json_field(&self.json, "auths") {
            None | Some(Value::Null) => {}
            Some(Value::Object(auths)) => {
                for (key, value) in auths {
                    parse_entry(&self.path, key, value)?;
                }
            }
            Some(_) => return Err(invalid("`auths` is not an object".to_string())),
        }
        match json_field(&self.json, "credsStore") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => return Err(invalid("`credsStore` is not a string".to_string())),
        }
        match json_field(&self.json, "credHelpers") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(helpers)) => match helpers
                .iter()
                .find(|(_, v)| !matches!(v, Value::String(_) | Value::Null))
            {
                Some((key, _)) => Err(invalid(format!("credHelpers[{key:?}] is not a string"))),
                None => Ok(()),
            },
            Some(_) => Err(invalid("`credHelpers` is not an object".to_string())),
        }
    }

    /// Writes the file as docker does: tab-indented, through a temp file renamed over it in
    /// the same directory (a crash leaves the old or the new file, never half of one), through
    /// a symlinked config.json to its target, mode 0600 since it may hold passwords.
    fn save(&self) -> Result<(), AuthError> {
        let write_err = |source| AuthError::Write {
            path: self.path.clone(),
            source,
        };
        let target = follow_symlinks(&self.path);
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
        let mut text = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
        self.json
            .serialize(&mut serializer)
            .map_err(|e| write_err(e.into()))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(dir)
            .map_err(write_err)?;
        // Set, not requested at creation: the umask could only take bits away.
        let file = temp.as_file();
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
        temp.write_all(&text).map_err(write_err)?;
        temp.as_file().sync_all().map_err(write_err)?;
        temp.persist(&target).map_err(|e| write_err(e.error))?;
        // The rename is durable once the directory is synced.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)
    }
}

/// The key docker uses in config.json and with helpers: [`INDEX_SERVER`] for Docker Hub
/// ("docker.io", "index.docker.io"), else the host itself ("ghcr.io", "127.0.0.1:5000").
pub(crate) fn server_key(registry: &str) -> String {
    let host = convert_to_hostname(registry);
    match host.as_str() {
        "docker.io" | "index.docker.io" => INDEX_SERVER.to_string(),
        _ => host,
    }
}

/// docker's ConvertToHostname: the `host[:port]` of a URL ("https://host:5000/v2/" →
/// "host:5000"), else everything before the first `/`.
pub(crate) fn convert_to_hostname(address: &str) -> String {
    if let Some((_, rest)) = address.split_once("://") {
        if let Some(host) = url_host(rest) {
            return host;
        }
    }
    address.split('/').next().unwrap_or_default().to_string()
}

/// What Go's url.Parse makes of the part after the scheme: Hostname(), with Port() rejoined
/// as net.JoinHostPort does (brackets back around an IPv6 address). None where Go's parse
/// fails (a port that is not digits) or finds no host.
fn url_host(after_scheme: &str) -> Option<String> {
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            match after {
                "" => (host, ""),
                _ => (host, after.strip_prefix(':')?),
            }
        }
        None => host_port.rsplit_once(':').unwrap_or((host_port, "")),
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match (port.is_empty(), host.contains(':')) {
        (true, _) => host.to_string(),
        (false, true) => format!("[{host}]:{port}"),
        (false, false) => format!("{host}:{port}"),
    })
}

/// A field of a JSON object as Go's encoding/json finds a struct field: the exact name, else
/// any case of it (so `"Auths"` or a helper's `"username"` is read as docker reads it).
pub(super) fn json_field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    field_name(object, name).and_then(|key| object.get(&key))
}

fn field_name(object: &Map<String, Value>, name: &str) -> Option<String> {
    if object.contains_key(name) {
        return Some(name.to_string());
    }
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

fn config_dir(
    docker_config: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, AuthError> {
    if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = home.filter(|h| !h.is_empty()).ok_or(AuthError::NoHome)?;
    Ok(PathBuf::from(home).join(".docker"))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, AuthError> {
    // An empty file is an empty config to docker (its decoder stops at EOF).
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AuthError::Invalid {
            path: path.to_path_buf(),
            message: "not a JSON object".to_string(),
        }),
        Err(source) => Err(AuthError::Malformed {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// An `auths` entry: `auth` (base64 "user:password") wins over `username`/`password`, as in
/// docker. Errors name the entry's key but never quote a value.
fn parse_entry(path: &Path, key: &str, value: &Value) -> Result<Entry, AuthError> {
    let invalid = |what: String| AuthError::Invalid {
        path: path.to_path_buf(),
        message: format!("auths[{key:?}]: {what}"),
    };
    let object = match value {
        Value::Object(object) => Some(object),
        Value::Null => None,
        _ => return Err(invalid("not an object".to_string())),
    };
    let text = |name: &str| match object.and_then(|o| json_field(o, name)) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(format!("`{name}` is not a string"))),
    };
    let (mut username, mut password) = (text("username")?, text("password")?);
    let auth = text("auth")?;
    if !auth.is_empty() {
        (username, password) = decode_auth(&auth)
            .ok_or_else(|| invalid("`auth` is not base64 of \"user:password\"".to_string()))?;
    }
    Ok(Entry {
        username,
        password,
        identity_token: text("identitytoken")?,
    })
}

/// Go's base64.StdEncoding as docker's decodeAuth uses it: line breaks skipped, trailing bits
/// ignored; padding is not insisted on.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// docker's decodeAuth: "user:password", the user not empty, NULs trimmed off the password.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    let compact: String = auth.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let decoded = String::from_utf8(GO_STD.decode(compact).ok()?).ok()?;
    let (username, password) = decoded.split_once(':')?;
    if username.is_empty() {
        return None;
    }
    Some((
        username.to_string(),
        password.trim_matches('\0').to_string(),
    ))
}

/// The entry docker's SaveToWriter writes: `auth` as base64 "user:password" (for a token
/// "user:", and none without a user), and `identitytoken`.
fn encode_entry(credentials: &Credentials) -> Value {
    let mut entry = Map::new();
    let (username, password, token) = match credentials {
        Credentials::Basic { username, password } => (username, password.as_str(), None),
        Credentials::IdentityToken { username, token } => (username, "", Some(token)),
    };
    if !username.is_empty() || !password.is_empty() {
        let auth = GO_STD.encode(format!("{username}:{password}"));
        entry.insert("auth".to_string(), Value::String(auth));
    }
    if let Some(token) = token {
        entry.insert("identitytoken".to_string(), Value::String(token.clone()));
    }
    Value::Object(entry)
}

/// Refuses what could not be read back: `auth` splits at the first `:` and needs a user.
fn check_storable(registry: &str, credentials: &Credentials) -> Result<(), AuthError> {
    let refuse = |message| {
        Err(AuthError::Unstorable {
            registry: registry.to_string(),
            message,
        })
    };
    match credentials {
        Credentials::Basic { username, .. } if username.is_empty() => {
            refuse("the username is empty")
        }
        Credentials::IdentityToken { token, .. } if token.is_empty() => {
            refuse("the identity token is empty")
        }
        Credentials::Basic { username, .. } | Credentials::IdentityToken { username, .. }
            if username.contains(':') =>
        {
            refuse("the username contains ':'")
        }
        _ => Ok(()),
    }
}

/// Where a config.json that is a symlink (dotfile managers make them) points, so the rename
/// replaces the target and the link survives. A dangling link gives its target, as in docker.
fn follow_symlinks(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    // Bounded, as the kernel bounds it, so a link loop ends.
    for _ in 0..40 {
        let Ok(target) = fs::read_link(&path) else {
            break;
        };
        path = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(username: &str, password: &str) -> Credentials {
        Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    fn identity_token(username: impl Into<String>, token: impl Into<String>) -> Credentials {
        Credentials::IdentityToken {
            username: username.into(),
            token: token.into(),
        }
    }

    /// Asserts `config` gives `host` the basic credentials `username` and `password`.
    #[track_caller]
    fn assert_basic(config: &DockerConfig, host: &str, username: &str, password: &str) {
        assert_eq!(
            config.credentials(host).unwrap(),
            Some(basic(username, password))
        );
    }

    /// Asserts `config` has no credentials for `host`.
    #[track_caller]
    fn assert_no_credentials(config: &DockerConfig, host: &str) {
        assert_eq!(config.credentials(host).unwrap(), None);
    }

    /// A config dir holding `json` as config.json.
    fn config_with(json: &str) -> (tempfile::TempDir, DockerConfig) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), json).unwrap();
        let config = DockerConfig::load_from(dir.path()).unwrap();
        (dir, config)
    }

    fn file_json(config: &DockerConfig) -> Value {
        serde_json::from_slice(&fs::read(config.path()).unwrap()).unwrap()
    }

    /// A credential helper backed by one file per server URL in `dir/NAME.d`, logging each
    /// call ("ACTION URL") to `dir/NAME.calls`; as real helpers, it answers "credentials not
    /// found in native keychain" for a server it does not hold.
    fn write_helper(dir: &Path, name: &str) {
        let data = dir.join(format!("{name}.d"));
        fs::create_dir(&data).unwrap();
        let script = format!(
            r#"#!/bin/sh
data='{data}'
input=$(cat)
case "$1" in
store) url=$(printf %s "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p') ;;
*) url=$input ;;
esac
echo "$1 $url" >> '{calls}'
file="$data/$(printf %s "$url" | tr '/:' '__')"
case "$1" in
get) [ -f "$file" ] && exec cat "$file" ;;
store) printf %s "$input" > "$file"; exit 0 ;;
erase) [ -f "$file" ] && exec rm "$file" ;;
*) echo "unknown action $1"; exit 2 ;;
esac
echo "credentials not found in native keychain"
exit 1
"#,
            data = data.display(),
            calls = dir.join(format!("{name}.calls")).display(),
        );
        write_script(dir, name, &script);
    }

    fn write_script(dir: &Path, name: &str, script: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn helper_calls(dir: &Path, name: &str) -> Vec<String> {
        fs::read_to_string(dir.join(format!("{name}.calls")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A config with `json`, its helpers looked for in a second temp dir.
    fn config_with_helpers(json: &str) -> (tempfile::TempDir, tempfile::TempDir, DockerConfig) {
        let (dir, config) = config_with(json);
        let helpers = tempfile::tempdir().unwrap();
        let config = config.with_helper_dir(helpers.path().to_path_buf());
        (dir, helpers, config)
    }

    #[test]
    fn auths_entry_with_base64_auth() {
        // "alice:s3cr:et" — the password keeps its colon.
        let (_dir, config) =
            config_with(r#"{"auths":{"ghcr.io":{"auth":"YWxpY2U6czNjcjpldA=="}}}"#);
        let creds = config.credentials("ghcr.io").unwrap();
        assert_eq!(creds, Some(basic("alice", "s3cr:et")));
        assert_no_credentials(&config, "quay.io");
    }

    #[test]
    fn auths_entry_with_username_and_password_fields() {
        let (_dir, config) = config_with(
            r#"{"auths":{"quay.io":{"username":"bob","password":"pw"},
                 "a.io":{"username":"x","password":"y","auth":"Ym9iOnB3"},
                 "b.io":{"Username":"carol","Password":"pw2"}}}"#,
        );
        assert_basic(&config, "quay.io", "bob", "pw");
        // `auth` wins over the fields, as in docker.
        assert_basic(&config, "a.io", "bob", "pw");
        // Go matches struct fields whatever their case.
        assert_basic(&config, "b.io", "carol", "pw2");
    }

    #[test]
    fn auths_entry_with_identity_token() {
        let (_dir, config) = config_with(
            r#"{"auths":{"ghcr.io":{"auth":"YWxpY2U6","identitytoken":"refresh-tok"}}}"#,
        );
        assert_eq!(
            config.credentials("ghcr.io").unwrap(),
            Some(identity_token("alice", "refresh-tok"))
        );
    }

    #[test]
    fn empty_entry_and_missing_file_are_no_credentials() {
        let (_dir, config) = config_with(r#"{"auths":{"ghcr.io":{},"quay.io":null}}"#);
        assert_no_credentials(&config, "ghcr.io");
        assert_no_credentials(&config, "quay.io");

        let dir = tempfile::tempdir().unwrap();
        let config = DockerConfig::load_from(&dir.path().join("nowhere")).unwrap();
        assert_eq!(config.path(), dir.path().join("nowhere/config.json"));
        assert_no_credentials(&config, "ghcr.io");
        let (_dir, config) = config_with("\n");
        assert_no_credentials(&config, "ghcr.io");
    }

    #[test]
    fn auths_keys_match_after_reduction_to_the_host() {
        let (_dir, config) = config_with(
            r#"{"auths":{
                "https://127.0.0.1:5000/v2/":{"auth":"dTE6cDE="},
                "http://localhost:5000":{"auth":"dTI6cDI="},
                "registry.example/v1/":{"auth":"dTM6cDM="},
                "https://quay.io":{"auth":"dTQ6cDQ="},
                "quay.io":{"auth":"dTU6cDU="}}}"#,
        );
        assert_basic(&config, "127.0.0.1:5000", "u1", "p1");
        assert_basic(&config, "localhost:5000", "u2", "p2");
        assert_basic(&config, "registry.example", "u3", "p3");
        // The exact key comes first.
        assert_basic(&config, "quay.io", "u5", "p5");
        // Another port is another registry.
        assert_no_credentials(&config, "127.0.0.1:5001");
        assert_no_credentials(&config, "localhost");
    }

    #[test]
    fn docker_hub_is_keyed_by_the_index_url() {
        assert_eq!(server_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_key("index.docker.io"), INDEX_SERVER);
        assert_eq!(server_key("ghcr.io"), "ghcr.io");
        assert_eq!(server_key("127.0.0.1:5000"), "127.0.0.1:5000");
        let (_dir, config) =
            config_with(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnB3"}}}"#);
        assert_basic(&config, "docker.io", "hub", "pw");
        // A plain "docker.io" key is not docker's and docker would not read it.
        let (_dir, config) = config_with(r#"{"auths":{"docker.io":{"auth":"aHViOnB3"}}}"#);
        assert_no_credentials(&config, "docker.io");
    }

    #[test]
    fn hostname_conversion_follows_docker() {
        let cases = [
            ("https://host:5000/v2/", "host:5000"),
            ("http://host", "host"),
            ("host/v1/", "host"),
            ("host:5000", "host:5000"),
            ("https://user@host:443/x?y", "host:443"),
            ("https://[::1]:5000/v2/", "[::1]:5000"),
            ("https://[::1]/v2/", "::1"),
            // Go's url.Parse refuses the port, and the fallback cuts at the first '/'.
            ("https://host:port/", "https:"),
        ];
        for (address, host) in cases {
            assert_eq!(convert_to_hostname(address), host, "{address}");
        }
    }

    #[test]
    fn store_round_trip_keeps_other_keys_and_is_private() {
        let (dir, mut config) = config_with(
            r#"{"auths":{"quay.io":{"auth":"dTU6cDU="}},"currentContext":"remote",
                "proxies":{"default":{"httpProxy":"http://proxy:3128"}}}"#,
        );
        config.store("ghcr.io", &basic("alice", "pw:1")).unwrap();
        let token = identity_token("bob", "tok");
        config.store("docker.io", &token).unwrap();

        let written = file_json(&config);
        assert_eq!(written["currentContext"], "remote");
        assert_eq!(
            written["proxies"]["default"]["httpProxy"],
            "http://proxy:3128"
        );
        assert_eq!(written["auths"]["quay.io"]["auth"], "dTU6cDU=");
        assert_eq!(
            written["auths"]["ghcr.io"],
            serde_json::json!({"auth": "YWxpY2U6cHc6MQ=="})
        );
        assert_eq!(
            written["auths"][INDEX_SERVER],
            serde_json::json!({"auth": "Ym9iOg==", "identitytoken": "tok"})
        );
        let mode = fs::metadata(config.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing but config.json is left in the directory (the temp file was renamed).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let reread = DockerConfig::load_from(dir.path()).unwrap();
        assert_basic(&reread, "ghcr.io", "alice", "pw:1");
        assert_eq!(reread.credentials("docker.io").unwrap(), Some(token));
        assert_basic(&reread, "quay.io", "u5", "p5");
    }

    #[test]
    fn store_creates_a_private_directory() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("home/.docker");
        let mut config = DockerConfig::load_from(&dir).unwrap();
        config.store("ghcr.io", &basic("a", "b")).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let written = file_json(&config);
        assert_eq!(
            written,
            serde_json::json!({"auths": {"ghcr.io": {"auth": "YTpi"}}})
        );
        // Tab-indented, as docker writes it.
        let text = fs::read_to_string(config.path()).unwrap();
        assert!(text.contains("\n\t\"auths\""), "{text}");
    }

    #[test]
    fn store_through_a_symlink_keeps_the_link() {
        let (dir, _) = config_with("{}");
        let real = dir.path().join("real.json");
        fs::rename(dir.path().join("config.json"), &real).unwrap();
        std::os::unix::fs::symlink("real.json", dir.path().join("config.json")).unwrap();
        let mut config = DockerConfig::load_from(dir.path()).unwrap();
        config.store("ghcr.io", &basic("a", "b")).unwrap();
        let link = fs::symlink_metadata(dir.path().join("config.json")).unwrap();
        assert!(link.file_type().is_symlink());
        assert!(fs::read_to_string(&real).unwrap().contains("YTpi"));
    }

    #[test]
    fn unreadable_credentials_are_refused() {
        let (_dir, mut config) = config_with("{}");
        for creds in [basic("", "pw"), basic("a:b", "pw")] {
            let err = config.store("ghcr.io", &creds).unwrap_err();
            assert!(matches!(err, AuthError::Unstorable { .. }), "{err}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        assert_eq!(fs::read_to_string(config.path()).unwrap(), "{}");
    }

    #[test]
    fn erase_removes_the_host_and_its_url_forms() {
        let (dir, mut config) = config_with(
            r#"{"auths":{"ghcr.io":{"auth":"YTpi"},"https://ghcr.io":{"auth":"YTpi"},
                "quay.io":{"auth":"YTpi"}},"psFormat":"table"}"#,
        );
        assert!(config.erase("ghcr.io").unwrap());
        assert_no_credentials(&config, "ghcr.io");
        assert!(!config.erase("ghcr.io").unwrap());
        let written = file_json(&config);
        assert_eq!(written["psFormat"], "table");
        let keys: Vec<_> = written["auths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["quay.io"]);
        let reread = DockerConfig::load_from(dir.path()).unwrap();
        assert_basic(&reread, "quay.io", "a", "b");
        // Nothing to remove writes nothing.
        let empty = tempfile::tempdir().unwrap();
        let mut config = DockerConfig::load_from(empty.path()).unwrap();
        assert!(!config.erase("docker.io").unwrap());
        assert!(!config.path().exists());
    }

    #[test]
    fn malformed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        for (text, expected) in [
            (r#"{"auths": {"#, "is not valid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"auths": []}"#, "`auths` is not an object"),
            (
                r#"{"auths": {"h": {"auth": "%%%"}}}"#,
                "auths[\"h\"]: `auth` is not base64",
            ),
            // Base64 of "nocolon": no user/password split.
            (
                r#"{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}"#,
                "`auth` is not base64",
            ),
            (
                r#"{"credHelpers": {"h": 1}}"#,
                "credHelpers[\"h\"] is not a string",
            ),
        ] {
            fs::write(&path, text).unwrap();
            let err = DockerConfig::load_from(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("nocolon"), "{err}");
        }
    }

    #[test]
    fn config_dir_prefers_docker_config() {
        let dir = config_dir(Some("/etc/dc".into()), Some("/home/u".into())).unwrap();
        assert_eq!(dir, Path::new("/etc/dc"));
        let dir = config_dir(Some("".into()), Some("/home/u".into())).unwrap();
        assert_eq!(dir, Path::new("/home/u/.docker"));
        assert!(matches!(config_dir(None, None), Err(AuthError::NoHome)));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!(
            "{:?} {:?}",
            basic("alice", "hunter2"),
            identity_token("bob", "tok-xyz")
        );
        assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-xyz"),
            "{shown}"
        );
        let (_dir, config) = config_with(r#"{"auths":{"h":{"auth":"YWxpY2U6aHVudGVyMg=="}}}"#);
        let shown = format!("{config:?}");
        assert!(!shown.contains("YWxp"), "{shown}");
    }

    #[test]
    fn creds_store_holds_the_secret_and_auths_a_marker() {
        let (dir, helpers, mut config) = config_with_helpers(
            r#"{"credsStore":"fake","auths":{"ghcr.io":{"auth":"b2xkOm9sZA=="}}}"#,
        );
        write_helper(helpers.path(), "fake");
        // With a helper, a plain auths entry is not read: the helper holds nothing yet.
        assert_no_credentials(&config, "ghcr.io");

        config.store("ghcr.io", &basic("alice", "s3cret")).unwrap();
        let token = identity_token("", "refresh");
        config.store("docker.io", &token).unwrap();
        let text = fs::read_to_string(config.path()).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("refresh"),
            "{text}"
        );
        let written: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(written["auths"]["ghcr.io"], serde_json::json!({}));
        assert_eq!(written["auths"][INDEX_SERVER], serde_json::json!({}));
        assert_eq!(written["credsStore"], "fake");

        let reread = DockerConfig::load_from(dir.path())
            .unwrap()
            .with_helper_dir(helpers.path().to_path_buf());
        assert_basic(&reread, "ghcr.io", "alice", "s3cret");
        assert_eq!(reread.credentials("docker.io").unwrap(), Some(token));
        let calls = helper_calls(helpers.path(), "fake");
        assert!(
            calls.contains(&format!("store {INDEX_SERVER}")),
            "{calls:?}"
        );
        assert!(calls.contains(&format!("get {INDEX_SERVER}")), "{calls:?}");

        assert!(config.erase("ghcr.io").unwrap());
        assert_no_credentials(&config, "ghcr.io");
        assert!(file_json(&config)["auths"].get("ghcr.io").is_none());
        assert!(!config.erase("ghcr.io").unwrap());
    }

    #[test]
    fn cred_helpers_override_the_store_per_registry() {
        let (_dir, helpers, mut config) = config_with_helpers(
            r#"{"credsStore":"general","credHelpers":{"ghcr.io":"special","quay.io":""}}"#,
        );
        write_helper(helpers.path(), "general");
        write_helper(helpers.path(), "special");
        config.store("ghcr.io", &basic("a", "special-pw")).unwrap();
        config
            .store("localhost:5000", &basic("b", "general-pw"))
            .unwrap();
        // An empty helper name means the file itself, not credsStore.
        config.store("quay.io", &basic("c", "d")).unwrap();

        assert_eq!(helper_calls(helpers.path(), "special"), ["store ghcr.io"]);
        assert_eq!(
            helper_calls(helpers.path(), "general"),
            ["store localhost:5000"]
        );
        assert_eq!(file_json(&config)["auths"]["quay.io"]["auth"], "Yzpk");
        assert_basic(&config, "ghcr.io", "a", "special-pw");
        assert_basic(&config, "localhost:5000", "b", "general-pw");
        assert_basic(&config, "quay.io", "c", "d");
    }

    #[test]
    fn failing_helper_errors_name_it_but_never_the_secret() {
        let (_dir, helpers, mut config) = config_with_helpers(r#"{"credsStore":"broken"}"#);
        // It echoes its request, secret included, and fails.
        write_script(
            helpers.path(),
            "broken",
            "#!/bin/sh\necho \"keychain locked: $(cat)\"\necho 'see the log' >&2\nexit 3\n",
        );
        let err = config
            .store("registry.example", &basic("alice", "TOPSECRET"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("docker-credential-broken"), "{err}");
        assert!(err.contains("registry.example"), "{err}");
        assert!(
            err.contains("keychain locked") && err.contains("see the log"),
            "{err}"
        );
        assert!(
            err.contains("<redacted>") && !err.contains("TOPSECRET"),
            "{err}"
        );
        let text = fs::read_to_string(config.path()).unwrap();
        assert_eq!(
            text, r#"{"credsStore":"broken"}"#,
            "a failed store writes no marker"
        );

        let err = config
            .credentials("registry.example")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keychain locked") && err.contains("exit status: 3"),
            "{err}"
        );
    }

    #[test]
    fn helper_printing_an_answer_then_failing_is_not_quoted() {
        let (_dir, helpers, config) = config_with_helpers(r#"{"credsStore":"odd"}"#);
        write_script(
            helpers.path(),
            "odd",
            "#!/bin/sh\necho '{\"Username\":\"u\",\"Secret\":\"LEAKED\"}'\nexit 1\n",
        );
        let err = config.credentials("ghcr.io").unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-odd") && !err.contains("LEAKED"),
            "{err}"
        );
    }

    #[test]
    fn missing_helper_is_an_error_naming_it() {
        let (_dir, helpers, config) =
            config_with_helpers(r#"{"credHelpers":{"ghcr.io":"nonexistent-rbuild-test"}}"#);
        let err = config.credentials("ghcr.io").unwrap_err();
        assert!(matches!(err, AuthError::Helper { .. }));
        let err = err.to_string();
        assert!(
            err.contains("docker-credential-nonexistent-rbuild-test"),
            "{err}"
        );
        assert!(err.contains("ghcr.io"), "{err}");
        // A file without the execute bit is not a helper.
        fs::write(
            helpers
                .path()
                .join("docker-credential-nonexistent-rbuild-test"),
            "",
        )
        .unwrap();
        assert!(config.credentials("ghcr.io").is_err());
    }
}
