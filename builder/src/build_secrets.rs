//! What `--secret` and `--ssh` hand to `RUN --mount=type=secret|ssh`: secret values read once
//! at the start of the build (never printed, never written to the state root), and SSH agent
//! sockets — the user's, or an `ssh-agent` started here for key files and stopped with the
//! build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// `--secret` values by id.
#[derive(Default)]
pub struct Secrets {
    by_id: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: a value must never reach a log.
        f.debug_set().entries(self.by_id.keys()).finish()
    }
}

impl Secrets {
    /// Reads each `--secret id=ID[,src=PATH|,env=VAR][,type=file|env]` as buildx does: `src`
    /// (or `source`) is a file, `env` a variable; with neither, the variable named ID if it is
    /// set, else the file ID.
    pub fn read(specs: &[String]) -> anyhow::Result<Secrets> {
        let mut secrets = Secrets::default();
        for spec in specs {
            let (id, value) = read_one(spec).with_context(|| format!("--secret {spec}"))?;
            secrets.by_id.insert(id, value);
        }
        Ok(secrets)
    }

    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.by_id.get(id).map(Vec::as_slice)
    }
}

fn read_one(spec: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let attrs = crate::output::attributes(spec).map_err(anyhow::Error::msg)?;
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for (key, value) in attrs {
        match key.as_str() {
            "id" => id = Some(value),
            "src" | "source" => src = Some(value),
            "env" => env = Some(value),
            "type" => kind = Some(value),
            other => bail!("unknown attribute {other:?} (expected id, src, env or type)"),
        }
    }
    let id = id.filter(|i| !i.is_empty()).context("missing `id=`")?;
    let from_env = |var: &str| -> anyhow::Result<Vec<u8>> {
        std::env::var_os(var)
            .map(std::os::unix::ffi::OsStringExt::into_vec)
            .with_context(|| format!("the environment variable {var} is not set"))
    };
    let from_file = |path: &str| -> anyhow::Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("reading {path}"))
    };
    let value = match (kind.as_deref(), src, env) {
        (Some("env"), src, env) => from_env(env.or(src).as_deref().unwrap_or(&id))?,
        (Some("file") | None, Some(src), None) => from_file(&src)?,
        (Some("file"), None, None) => from_file(&id)?,
        (None, None, Some(env)) => from_env(&env)?,
        (None, None, None) => match std::env::var_os(&id) {
            Some(_) => from_env(&id)?,
            None => from_file(&id)?,
        },
        (Some(other), _, _) if other != "file" => {
            bail!("type={other}: expected file or env")
        }
        _ => bail!("give either src= or env=, not both"),
    };
    Ok((id, value))
}

/// `--ssh` agent sockets by id.
#[derive(Default)]
pub struct SshAgents {
    by_id: BTreeMap<String, PathBuf>,
    /// Agents started here for key files, killed when the build ends (or on a signal).
    started: Vec<Child>,
    _on_signal: Vec<crate::interrupt::Guard>,
    /// Where the started agents' sockets are.
    dir: Option<tempfile::TempDir>,
}

impl Drop for SshAgents {
    fn drop(&mut self) {
        for agent in &mut self.started {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

impl SshAgents {
    /// Each `--ssh ID[=SOCKET|KEY[,KEY…]]`: `default` alone is `$SSH_AUTH_SOCK`; a socket is
    /// forwarded as it is; key files get an `ssh-agent` of their own holding them.
    pub fn start(specs: &[String]) -> anyhow::Result<SshAgents> {
        let mut agents = SshAgents::default();
        for spec in specs {
            agents.add(spec).with_context(|| format!("--ssh {spec}"))?;
        }
        Ok(agents)
    }

    pub fn socket(&self, id: &str) -> Option<&Path> {
        self.by_id.get(id).map(PathBuf::as_path)
    }

    fn add(&mut self, spec: &str) -> anyhow::Result<()> {
        let (id, paths) = match spec.split_once('=') {
            Some((id, paths)) => (id, paths.split(',').map(PathBuf::from).collect::<Vec<_>>()),
            None => (spec, Vec::new()),
        };
        if id.is_empty() {
            bail!("missing the id (`default`, or a name RUN --mount=type=ssh,id=… uses)");
        }
        let socket = match paths.as_slice() {
            [] => std::env::var_os("SSH_AUTH_SOCK")
                .map(PathBuf::from)
                .context("SSH_AUTH_SOCK is not set: name a socket or key files")?,
            [one] if is_socket(one) => one.clone(),
            keys => self.agent_for(keys)?,
        };
        if !is_socket(&socket) {
            bail!("{} is not a socket", socket.display());
        }
        self.by_id.insert(id.to_string(), socket);
        Ok(())
    }

    /// An `ssh-agent` holding `keys`, on a socket in a directory of this build.
    fn agent_for(&mut self, keys: &[PathBuf]) -> anyhow::Result<PathBuf> {
        if self.dir.is_none() {
            self.dir =
                Some(tempfile::TempDir::new().context("creating a directory for ssh-agent")?);
        }
        let dir = self.dir.as_ref().expect("just made").path();
        let socket = dir.join(format!("agent.{}", self.started.len()));
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ssh-agent for the key files (install openssh-client)")?;
        let pid = agent.id();
        self._on_signal.push(crate::interrupt::register(move || {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive"),
                rustix::process::Signal::TERM,
            );
        }));
        self.started.push(agent);
        for _ in 0..200 {
            if is_socket(&socket) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for key in keys {
            let added = Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &socket)
                .stdin(Stdio::null())
                .output()
                .context("running ssh-add")?;
            if !added.status.success() {
                bail!(
                    "ssh-add {}: {}",
                    key.display(),
                    String::from_utf8_lossy(&added.stderr).trim()
                );
            }
        }
        Ok(socket)
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_and_variables_and_never_show() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cr3t-file").unwrap();
        std::env::set_var("RBUILD_TEST_SECRET_VAR", "s3cr3t-env");
        let secrets = Secrets::read(&[
            format!("id=a,src={}", file.display()),
            "id=b,env=RBUILD_TEST_SECRET_VAR".into(),
            "id=RBUILD_TEST_SECRET_VAR".into(),
            format!("id=c,type=file,source={}", file.display()),
        ])
        .unwrap();
        assert_eq!(secrets.get("a"), Some(&b"s3cr3t-file"[..]));
        assert_eq!(secrets.get("b"), Some(&b"s3cr3t-env"[..]));
        assert_eq!(
            secrets.get("RBUILD_TEST_SECRET_VAR"),
            Some(&b"s3cr3t-env"[..])
        );
        assert_eq!(secrets.get("c"), Some(&b"s3cr3t-file"[..]));
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
        let err = |spec: &str| format!("{:#}", Secrets::read(&[spec.to_string()]).unwrap_err());
        assert!(err("src=/x").contains("missing `id=`"));
        assert!(err("id=x,src=/nonexistent/secret").contains("reading /nonexistent/secret"));
        assert!(err("id=x,env=RBUILD_TEST_UNSET_VAR_42").contains("is not set"));
    }
}
