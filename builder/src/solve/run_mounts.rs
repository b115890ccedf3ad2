//! `RUN --mount`: what each mount type binds into the step's container, prepared before the
//! step runs and held (caches locked, snapshot views mounted, secrets on a tmpfs) until it
//! is over.
//!
//! - `cache`: a persistent directory of the state root ([`crate::cache_mounts`]);
//! - `bind`: a stage, an image or the build context (the default) at `source`, read-only
//!   unless `rw`, whose writes are discarded with the step;
//! - `tmpfs`: an empty tmpfs (`size`);
//! - `secret`: a `--secret` as a file (default `/run/secrets/ID`, mode 0400) or, with `env=`,
//!   a variable of the step's process only;
//! - `ssh`: a `--ssh` agent socket (default `/run/buildkit/ssh_agent.0`), and `SSH_AUTH_SOCK`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use rbuild_frontend::graph::{CopyAction, Edge, ExecOp};
use rbuild_frontend::instructions::{CacheSharing, Mount, MountType};

use super::{Job, Solved, SolvedLayer};
use crate::cache_mounts::HeldCacheMount;
use crate::executor::{BindMount, TmpfsMount};
use crate::fileop::SourceTree;
use crate::snapshot::{Active, View};

/// Where BuildKit puts the first SSH agent socket when a mount names no target.
const SSH_DEFAULT_TARGET: &str = "/run/buildkit/ssh_agent.0";

/// A step's mounts, ready to bind; what they hold is released when this drops.
#[derive(Default)]
pub(super) struct PreparedMounts {
    pub binds: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    /// `KEY=value` for the step's process only (secrets with `env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    _caches: Vec<HeldCacheMount>,
    _views: Vec<View>,
    _writable: Vec<Active>,
    _scratch: Vec<tempfile::TempDir>,
    /// Owner locks of secret directories: one whose lock can be taken belongs to a process
    /// that is gone (killed), and the next build removes it.
    _owners: Vec<rbuild_cache::lock::StateLock>,
}

impl Job<'_, '_> {
    pub(super) fn run_mounts(&self, exec: &ExecOp) -> anyhow::Result<PreparedMounts> {
        let mut prepared = PreparedMounts::default();
        self.cache_mounts(exec, &mut prepared)?;
        for m in &exec.mounts {
            let target = m.target.clone().unwrap_or_default();
            let what = || format!("RUN --mount=type={},target={target}", m.kind.name());
            match m.kind {
                MountType::Cache => {}
                MountType::Bind => self
                    .bind_mount(m, &target, &mut prepared)
                    .with_context(what)?,
                MountType::Tmpfs => prepared.tmpfs.push(TmpfsMount {
                    target,
                    size: m.size,
                }),
                MountType::Secret => self.secret_mount(m, &mut prepared).with_context(what)?,
                MountType::Ssh => self.ssh_mount(m, &mut prepared).with_context(what)?,
            }
        }
        Ok(prepared)
    }

    /// The step's cache mounts, held, each bound at its target. Taken in id order, so two
    /// steps locking the same caches never wait for each other crosswise.
    fn cache_mounts(&self, exec: &ExecOp, prepared: &mut PreparedMounts) -> anyhow::Result<()> {
        let mut caches: Vec<(&str, &Mount)> = exec
            .mounts
            .iter()
            .filter(|m| m.kind == MountType::Cache)
            .map(|m| (cache_mount_id(m), m))
            .collect();
        caches.sort_by_key(|(id, _)| *id);
        for (i, (id, m)) in caches.iter().copied().enumerate() {
            let target = m.target.clone().unwrap_or_default();
            // One id mounted twice in a step is one instance, held once (a second lock on
            // it would wait for the first forever).
            if i > 0 && caches[i - 1].0 == id {
                let data = prepared._caches.last().expect("held above").data.clone();
                prepared.binds.push(BindMount {
                    source: data,
                    target,
                    readonly: m.read_only,
                });
                continue;
            }
            let sharing = m.sharing.unwrap_or(CacheSharing::Shared);
            let owner = (m.uid.unwrap_or(0), m.gid.unwrap_or(0));
            let mode = m.mode.unwrap_or(0o755);
            let seed = MountSeed {
                job: self,
                mount: m,
                id,
            };
            let cache = self
                .solver
                .cache_mounts
                .acquire(id, sharing, owner, mode, &seed)
                .with_context(|| format!("RUN --mount=type=cache,target={target}"))?;
            prepared.binds.push(BindMount {
                source: cache.data.clone(),
                target,
                readonly: m.read_only,
            });
            prepared._caches.push(cache);
        }
        Ok(())
    }

    /// A stage or image (`from`) or the build context, at `source`.
    fn bind_mount(
        &self,
        m: &Mount,
        target: &str,
        prepared: &mut PreparedMounts,
    ) -> anyhow::Result<()> {
        let source = m.source.as_deref().unwrap_or("/").trim_start_matches('/');
        let writable = !m.read_only;
        let root = match self.mount_input(target)? {
            Some(layers) => {
                let dirs = self.solver.layer_dirs(&layers)?;
                if writable {
                    let active = self.solver.snapshots.prepare(&dirs)?;
                    let root = active.root().to_path_buf();
                    prepared._writable.push(active);
                    root
                } else {
                    let view = self.solver.snapshots.view(&dirs)?;
                    let root = view.root().to_path_buf();
                    prepared._views.push(view);
                    root
                }
            }
            // The context, as the step's key saw it (`.dockerignore` applied): a copy, so the
            // step sees no ignored file and its writes reach nothing of the user's.
            None => {
                let copy = self.context_copy(source)?;
                // A file (`source=go.mod`) is bound as that file, a directory as its contents.
                let name = Path::new(source).file_name();
                let root = match name.map(|n| copy.path().join(n)) {
                    Some(file) if file.is_file() => file,
                    _ => copy.path().to_path_buf(),
                };
                prepared._scratch.push(copy);
                prepared.binds.push(BindMount {
                    source: root,
                    target: target.to_string(),
                    readonly: !writable,
                });
                return Ok(());
            }
        };
        // Inside the stage: `..` and symlinks (`ln -s / h`) never reach the host.
        let path = crate::fileop::inside(&root, source)?;
        if !path.exists() {
            bail!(
                "{} does not exist in the mount's source",
                m.source.as_deref().unwrap_or("/")
            );
        }
        prepared.binds.push(BindMount {
            source: path,
            target: target.to_string(),
            readonly: !writable,
        });
        Ok(())
    }

    /// `source` of the build context (after `.dockerignore`), copied into a scratch directory.
    fn context_copy(&self, source: &str) -> anyhow::Result<tempfile::TempDir> {
        let context = self
            .solver
            .context
            .context("this build has no context (PATH `-`), so a bind mount cannot read it")?;
        let scratch = self.solver.state.temp_dir()?;
        let tree = SourceTree {
            root: &context.root,
            ignore: context.ignore.as_ref(),
            is_context: true,
        };
        let action = context_selection(source);
        crate::fileop::copy(&action, &tree, scratch.path())?;
        Ok(scratch)
    }

    /// A `--secret` as a file on a tmpfs-backed scratch directory, or a variable.
    fn secret_mount(&self, m: &Mount, prepared: &mut PreparedMounts) -> anyhow::Result<()> {
        let id = secret_id(m);
        let Some(value) = self.solver.secrets.and_then(|s| s.get(&id)) else {
            if m.required {
                bail!("the secret {id:?} is required: give it with --secret id={id},src=FILE");
            }
            return Ok(());
        };
        if let Some(var) = &m.env {
            let text = String::from_utf8(value.to_vec())
                .with_context(|| format!("the secret {id:?} is not UTF-8, so not a variable"))?;
            prepared.env.push(format!("{var}={text}"));
            if m.target.is_none() {
                return Ok(());
            }
        }
        let Some(target) = m.target.clone() else {
            return Ok(());
        };
        let (dir, owner) = secret_dir()?;
        let file = dir.path().join("secret");
        std::fs::write(&file, value).context("writing the secret for the step")?;
        std::fs::set_permissions(&file, PermissionsExt::from_mode(m.mode.unwrap_or(0o400)))?;
        std::os::unix::fs::chown(&file, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
        prepared.binds.push(BindMount {
            source: file,
            target,
            readonly: true,
        });
        prepared._scratch.push(dir);
        prepared._owners.push(owner);
        Ok(())
    }

    /// A `--ssh` agent's socket, and `SSH_AUTH_SOCK` pointing at it.
    fn ssh_mount(&self, m: &Mount, prepared: &mut PreparedMounts) -> anyhow::Result<()> {
        let id = m.id.as_deref().unwrap_or("default");
        let Some(socket) = self.solver.ssh.and_then(|s| s.socket(id)) else {
            if m.required {
                bail!("the SSH agent {id:?} is required: give it with --ssh {id}[=SOCKET|KEY]");
            }
            return Ok(());
        };
        let target = m
            .target
            .clone()
            .unwrap_or_else(|| SSH_DEFAULT_TARGET.to_string());
        prepared.binds.push(BindMount {
            source: socket.to_path_buf(),
            target: target.clone(),
            readonly: false,
        });
        // The first agent is the one `ssh` finds, as in BuildKit.
        if !prepared.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            prepared.env.push(format!("SSH_AUTH_SOCK={target}"));
        }
        Ok(())
    }

    /// The layers of the input a `RUN --mount` with `from` reads, by the mount's target.
    fn mount_input(&self, target: &str) -> anyhow::Result<Option<Vec<SolvedLayer>>> {
        let input = self.input_vertex(|e| matches!(e, Edge::Mount { target: t } if t == target));
        match input.map(|i| &self.inputs[&i].solved) {
            None => Ok(None),
            Some(Solved::Layers(layers)) => Ok(Some(layers.clone())),
            Some(Solved::Context) => bail!("a mount from the build context is not a stage"),
        }
    }
}

/// A secret's id: its `id`, else its `source`, else its target's file name (BuildKit's order).
fn secret_id(m: &Mount) -> String {
    m.id.clone()
        .or_else(|| m.source.clone())
        .or_else(|| {
            m.target
                .as_deref()
                .and_then(|t| Path::new(t).file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

/// Secrets are written to memory, not disk: `/dev/shm` when it is a usable tmpfs. The
/// directory holds an owner lock, so what a killed build left is removed by the next.
fn secret_dir() -> anyhow::Result<(tempfile::TempDir, rbuild_cache::lock::StateLock)> {
    const SHM: &str = "/dev/shm";
    sweep_dead_secret_dirs(Path::new(SHM));
    let in_memory = tempfile::Builder::new()
        .prefix(SECRET_PREFIX)
        .tempdir_in(SHM);
    let dir = match in_memory {
        Ok(dir) => dir,
        Err(e) => {
            super::progress(format_args!(
                "WARNING: {SHM} is not usable ({e}): the secret goes to a temporary file on \
                 disk for the step"
            ));
            tempfile::Builder::new()
                .prefix(SECRET_PREFIX)
                .tempdir()
                .context("creating a directory for the secret")?
        }
    };
    let owner = rbuild_cache::lock::StateLock::exclusive(dir.path().join("owner"))
        .context("locking the secret's directory")?;
    Ok((dir, owner))
}

const SECRET_PREFIX: &str = "rbuild-secret-";

/// Removes the secret directories in `dir` whose owner is gone.
fn sweep_dead_secret_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(SECRET_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        // Without an owner file yet, another build is making it right now.
        let owner = path.join("owner");
        if !owner.exists() {
            continue;
        }
        if let Ok(Some(_gone)) = rbuild_cache::lock::StateLock::try_exclusive(&owner) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// What a bind mount of the context reads: `source`'s contents (the whole context for `/`).
pub(super) fn context_selection(source: &str) -> CopyAction {
    let source = source.trim_matches('/');
    CopyAction {
        sources: vec![if source.is_empty() {
            ".".into()
        } else {
            source.to_string()
        }],
        dest: "/".into(),
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        from: None,
        user: String::new(),
        heredocs: Vec::new(),
    }
}

/// A cache mount's id: its `id`, else its target (BuildKit's default).
fn cache_mount_id(m: &rbuild_frontend::instructions::Mount) -> &str {
    m.id.as_deref().or(m.target.as_deref()).unwrap_or_default()
}

/// What a new cache mount instance starts with: the `source` of its `from`, else what an
/// imported cache holds for its id, else nothing.
struct MountSeed<'j, 's, 'a> {
    job: &'j Job<'s, 'a>,
    mount: &'j rbuild_frontend::instructions::Mount,
    id: &'j str,
}

impl crate::cache_mounts::Seed for MountSeed<'_, '_, '_> {
    fn seed(&self, data: &Path) -> anyhow::Result<()> {
        let solver = self.job.solver;
        let target = self.mount.target.as_deref().unwrap_or_default();
        if let Some(layers) = self.job.mount_input(target)? {
            let dirs = solver.layer_dirs(&layers)?;
            let view = solver.snapshots.view(&dirs)?;
            let source = self.mount.source.as_deref().unwrap_or("/");
            let from = crate::fileop::inside(view.root(), source)?;
            return crate::cache_mounts::copy_tree(&from, data);
        }
        if let Some(imported) = solver.imported {
            if let Some((diff_id, blob)) = imported.cache_mount(self.id) {
                imported.fetch(solver.state, solver.bases, &blob)?;
                let reader = std::io::BufReader::new(solver.state.content.open_blob(&blob.digest)?);
                let apply = rbuild_cache::layer::ApplyOptions::for_current_user(
                    rbuild_cache::layer::WhiteoutMode::Apply,
                );
                rbuild_cache::layer::apply_layer(reader, data, &apply, Some(&diff_id))
                    .with_context(|| format!("unpacking the imported cache mount {:?}", self.id))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_directories_of_gone_builds_are_swept_and_live_ones_kept() {
        let shm = tempfile::TempDir::new().unwrap();
        let live = shm.path().join(format!("{SECRET_PREFIX}live"));
        let dead = shm.path().join(format!("{SECRET_PREFIX}dead"));
        let other = shm.path().join("someone-else");
        for dir in [&live, &dead, &other] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("secret"), "x").unwrap();
        }
        let _held = rbuild_cache::lock::StateLock::exclusive(live.join("owner")).unwrap();
        // A lock taken and released: its holder is gone.
        drop(rbuild_cache::lock::StateLock::exclusive(dead.join("owner")).unwrap());
        sweep_dead_secret_dirs(shm.path());
        assert!(live.join("secret").is_file());
        assert!(!dead.exists());
        assert!(other.join("secret").is_file());
    }
}
