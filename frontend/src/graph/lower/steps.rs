//! The instructions that change the filesystem: RUN, COPY, ADD and WORKDIR.

use petgraph::stable_graph::NodeIndex;

use super::{at, Lowering, StageState};
use crate::graph::history::{self, CopyEntry, HistoryStep};
use crate::graph::op::{AddAction, CopyAction, Edge, ExecOp, FileOp, Op};
use crate::graph::values::{check_chmod, resolve_in};
use crate::graph::LowerError;
use crate::instructions::{
    Add, Copy, CopySpec, Instruction, Mount, MountType, NetworkMode, Run, SecurityMode,
};
use crate::parser::Heredoc;

impl Lowering<'_> {
    /// What `--from=` (or a mount's `from=`) names: another stage's result, or an image.
    fn source_of(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        from: &str,
    ) -> Result<NodeIndex, LowerError> {
        if let Some(index) = self.find_stage(from, true) {
            if index >= self.stages.stages.len() {
                return Err(at(instr, format!("invalid stage index {from}")));
            }
            let name_of = |i: usize| {
                let stage = &self.stages.stages[i];
                stage.from.name.clone().unwrap_or_else(|| i.to_string())
            };
            if index == state.index {
                let message = format!("circular dependency detected on stage: {}", name_of(index));
                return Err(at(instr, message));
            }
            // Stages are built in file order: only an earlier stage can be a source.
            if index > state.index {
                let message = format!(
                    "cannot copy from stage {:?}, it needs to be defined before current stage {:?}",
                    name_of(index),
                    name_of(state.index)
                );
                return Err(at(instr, message));
            }
            self.lower_stage(index)?;
            return Ok(self.lowered[&index].head);
        }
        let op = Op::Image {
            reference: from.to_string(),
            platform: state.platform.clone(),
        };
        Ok(self.add_vertex(op, &[], format!("[{}] FROM {from}", state.label)))
    }

    pub(super) fn lower_run(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        run: &Run,
    ) -> Result<(), LowerError> {
        let command = run.command.args.first().map_or("", String::as_str);
        let script = shebang_script(command, &run.heredocs).filter(|_| run.command.shell_form);
        let args = if let Some(script) = script {
            // As BuildKit: a lone heredoc with a `#!` line runs as its own executable, which
            // the executor provides at /dev/pipes/NAME (mode 0755) from the op's heredocs.
            vec![format!("/dev/pipes/{}", script.name)]
        } else if run.command.shell_form {
            let mut argv = state.config.shell_or_default();
            argv.push(shell_script(command, &run.heredocs));
            argv
        } else {
            run.command.args.clone()
        };
        let mut inputs = vec![(Edge::Rootfs, state.head)];
        let mut mounts = Vec::new();
        for m in &run.mounts {
            let mount = self.expand_mount(state, instr, m)?;
            if let Some(from) = &mount.from {
                let source = self.source_of(state, instr, from)?;
                inputs.push((
                    Edge::Mount {
                        target: mount.target.clone().unwrap_or_default(),
                    },
                    source,
                ));
            }
            mounts.push(mount);
        }
        let (env, _proxies) = self.run_env(state);
        let op = Op::Exec(ExecOp {
            args,
            env,
            cwd: if state.config.working_dir.is_empty() {
                "/".into()
            } else {
                state.config.working_dir.clone()
            },
            user: state.config.user.clone(),
            mounts,
            network: run.network.unwrap_or(NetworkMode::Default),
            security: run.security.unwrap_or(SecurityMode::Sandbox),
            platform: state.platform.clone(),
            heredocs: run.heredocs.clone(),
        });
        let entry = history::run(
            &buildkit_run_args(run, state.config.shell_or_default()),
            &state.build_args,
            &state.env,
        );
        let v = self.push_step(state, instr, op, inputs);
        state.history.push(HistoryStep::layer(entry, v));
        Ok(())
    }

    fn expand_mount(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        m: &Mount,
    ) -> Result<Mount, LowerError> {
        let mut mount = m.clone();
        mount.target = self.expand_opt(state, instr, &m.target)?;
        mount.source = self.expand_opt(state, instr, &m.source)?;
        mount.id = self.expand_opt(state, instr, &m.id)?;
        mount.env = self.expand_opt(state, instr, &m.env)?;
        // Secrets and SSH sockets get BuildKit's default places when no target is given.
        mount.target = match (mount.target.take(), m.kind) {
            (Some(t), _) => Some(resolve_in(&state.config.working_dir, &t)),
            (None, MountType::Secret) if mount.env.is_none() => {
                let name = mount
                    .id
                    .as_deref()
                    .or(mount.source.as_deref())
                    .unwrap_or_default();
                Some(format!("/run/secrets/{name}"))
            }
            (None, MountType::Ssh) => Some("/run/buildkit/ssh_agent.0".into()),
            (None, _) => None,
        };
        Ok(mount)
    }

    /// The copy, and its destination expanded but not yet resolved against WORKDIR (as the
    /// history entry shows it).
    fn copy_action(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        spec: &CopySpec,
        from: Option<String>,
        parents: bool,
    ) -> Result<(CopyAction, String), LowerError> {
        let paths: Vec<String> = spec
            .sources
            .iter()
            .filter(|s| !is_heredoc_marker(s, &spec.heredocs))
            .cloned()
            .collect();
        let sources = self.expand_all(state, instr, &paths)?;
        let dest = self.expand(state, instr, &spec.dest)?;
        let chown = self.expand_opt(state, instr, &spec.chown)?;
        let chmod = self.expand_opt(state, instr, &spec.chmod)?;
        if let Some(mode) = &chmod {
            check_chmod(mode).map_err(|m| at(instr, m))?;
        }
        let exclude = self.expand_all(state, instr, &spec.exclude)?;
        let several =
            sources.len() + spec.heredocs.len() > 1 || sources.iter().any(|s| has_wildcard(s));
        if several && !dest.ends_with('/') {
            let kw = instr.keyword.to_ascii_uppercase();
            return Err(at(instr, format!("When using {kw} with more than one source file, the destination must be a directory and end with a /")));
        }
        // The bodies as the files will hold them: tabs stripped for `<<-`, `$vars` expanded
        // unless the delimiter was quoted.
        let mut heredocs = spec.heredocs.clone();
        for doc in &mut heredocs {
            if doc.chomp {
                doc.content = crate::parser::chomp_heredoc_content(&doc.content);
                doc.chomp = false;
            }
            if doc.expand {
                doc.content = self.expand_raw(state, instr, &doc.content)?;
            }
        }
        let action = CopyAction {
            sources,
            dest: resolve_in(&state.config.working_dir, &dest),
            chown,
            chmod,
            link: spec.link,
            parents,
            exclude,
            from,
            user: state.config.user.clone(),
            heredocs,
        };
        Ok((action, dest))
    }

    /// The vertex a COPY/ADD reads from: `--from`, or the context paths it selects.
    fn copy_source(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        action: &CopyAction,
        is_add: bool,
    ) -> Result<Option<NodeIndex>, LowerError> {
        if let Some(from) = &action.from {
            return self.source_of(state, instr, from).map(Some);
        }
        let include: Vec<String> = action
            .sources
            .iter()
            .filter(|s| !(is_add && is_remote(s)))
            .cloned()
            .collect();
        if include.is_empty() {
            return Ok(None);
        }
        let op = Op::Context {
            name: "context".into(),
            include,
            exclude: action.exclude.clone(),
        };
        Ok(Some(self.add_vertex(
            op,
            &[],
            "[internal] load build context".to_string(),
        )))
    }

    pub(super) fn lower_copy(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        copy: &Copy,
    ) -> Result<(), LowerError> {
        let from = copy.from.clone();
        if let Some(raw) = &from {
            // BuildKit resolves --from before any variable has a value, so it refuses them.
            let no_env: &[(String, String)] = &[];
            if self.lexer.process_word(raw, &no_env).ok().as_ref() != Some(raw) {
                return Err(at(
                    instr,
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                ));
            }
        }
        let (action, dest) = self.copy_action(state, instr, &copy.spec, from, copy.parents)?;
        let mut inputs = vec![(Edge::Rootfs, state.head)];
        if let Some(source) = self.copy_source(state, instr, &action, false)? {
            inputs.push((Edge::Source, source));
        }
        let entry = history::copy(&CopyEntry {
            keyword: "COPY",
            parents: copy.parents,
            chown: action.chown.as_deref(),
            chmod: copy.spec.chmod.as_deref(),
            sources: &action.sources,
            heredocs: &action.heredocs,
            dest: &dest,
        });
        let v = self.push_step(state, instr, Op::File(FileOp::Copy(action)), inputs);
        state.history.push(HistoryStep::layer(entry, v));
        Ok(())
    }

    pub(super) fn lower_add(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        add: &Add,
    ) -> Result<(), LowerError> {
        let (copy, dest) = self.copy_action(state, instr, &add.spec, None, false)?;
        let checksum = self.expand_opt(state, instr, &add.checksum)?;
        if checksum.is_some() && !copy.sources.iter().all(|s| is_remote(s)) {
            return Err(at(
                instr,
                "checksum can't be specified for non-HTTP(S) sources",
            ));
        }
        let mut inputs = vec![(Edge::Rootfs, state.head)];
        if let Some(source) = self.copy_source(state, instr, &copy, true)? {
            inputs.push((Edge::Source, source));
        }
        let entry = history::copy(&CopyEntry {
            keyword: "ADD",
            parents: false,
            chown: copy.chown.as_deref(),
            chmod: add.spec.chmod.as_deref(),
            sources: &copy.sources,
            heredocs: &copy.heredocs,
            dest: &dest,
        });
        let action = AddAction {
            copy,
            checksum,
            keep_git_dir: add.keep_git_dir,
            unpack: add.unpack,
        };
        let v = self.push_step(state, instr, Op::File(FileOp::Add(action)), inputs);
        state.history.push(HistoryStep::layer(entry, v));
        Ok(())
    }

    pub(super) fn lower_workdir(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        path: &str,
    ) -> Result<(), LowerError> {
        let path = self.expand(state, instr, path)?;
        let resolved = resolve_in(&state.config.working_dir, &path);
        let resolved = if resolved.len() > 1 {
            resolved.trim_end_matches('/').to_string()
        } else {
            resolved
        };
        state.config.working_dir = resolved.clone();
        let entry = format!("WORKDIR {resolved}");
        // As BuildKit's dispatchWorkdir: `/` always exists, so it makes no mkdir and its
        // history entry is an empty layer; any other directory is a layer.
        if resolved == "/" {
            state.history.push(HistoryStep::config(entry));
            return Ok(());
        }
        let op = Op::File(FileOp::Mkdir {
            path: resolved,
            user: state.config.user.clone(),
        });
        let inputs = vec![(Edge::Rootfs, state.head)];
        let v = self.push_step(state, instr, op, inputs);
        state.history.push(HistoryStep::layer(entry, v));
        Ok(())
    }

    fn push_step(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        op: Op,
        inputs: Vec<(Edge, NodeIndex)>,
    ) -> NodeIndex {
        let name = self.step_name(state, instr);
        let v = self.add_vertex(op, &inputs, name);
        state.head = v;
        state.vertices.push(v);
        v
    }
}

/// A shell-form command with heredocs: the bodies follow the command line, each closed by
/// its delimiter, so the shell reads them as it would in a script. A command that is only a
/// heredoc (`RUN <<EOF`) runs the body itself.
fn shell_script(command: &str, heredocs: &[Heredoc]) -> String {
    if let [doc] = heredocs {
        if is_only_heredoc(command) {
            return if doc.chomp {
                crate::parser::chomp_heredoc_content(&doc.content)
            } else {
                doc.content.clone()
            };
        }
    }
    let mut script = command.to_string();
    for doc in heredocs {
        script.push('\n');
        script.push_str(&doc.content);
        script.push_str(&doc.name);
    }
    script
}

/// The argv BuildKit's dispatchRun builds, which its history entry shows: a shell-form command
/// goes through SHELL; a lone heredoc runs its (chomped) body, or `/dev/pipes/NAME` when that
/// starts with `#!` — still through SHELL, as BuildKit keeps `PrependShell` there.
fn buildkit_run_args(run: &Run, shell: Vec<String>) -> Vec<String> {
    if !run.command.shell_form {
        return run.command.args.clone();
    }
    let command = run.command.args.join(" ");
    let script = match run.heredocs.as_slice() {
        [doc] if is_only_heredoc(&command) => {
            let data = if doc.chomp {
                crate::parser::chomp_heredoc_content(&doc.content)
            } else {
                doc.content.clone()
            };
            if data.starts_with("#!") {
                crate::graph::values::clean_path(&format!("/dev/pipes/{}", doc.name))
            } else {
                data
            }
        }
        _ => shell_script(&command, &run.heredocs),
    };
    let mut argv = shell;
    argv.push(script);
    argv
}

/// The heredoc of a RUN that is only `<<EOF` and whose body starts with `#!`.
fn shebang_script<'h>(command: &str, heredocs: &'h [Heredoc]) -> Option<&'h Heredoc> {
    match heredocs {
        [doc] if is_only_heredoc(command) && doc.content.starts_with("#!") => Some(doc),
        _ => None,
    }
}

fn is_only_heredoc(command: &str) -> bool {
    let only = command
        .trim()
        .trim_start_matches(|c: char| c.is_ascii_digit());
    (only.starts_with("<<") && !only.contains(char::is_whitespace)) || is_lone_heredoc(command)
}

/// A `<<EOF` word whose body the parser attached: the heredoc, not a context path.
fn is_heredoc_marker(word: &str, heredocs: &[Heredoc]) -> bool {
    matches!(crate::parser::parse_heredoc(word), Ok(Some(doc)) if heredocs.iter().any(|h| h.name == doc.name))
}

fn is_lone_heredoc(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    matches!(words.as_slice(), ["<<" | "<<-", _])
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// An http(s) URL or a git repository (`git@…`, `git://`, `ssh://`, `….git[#ref[:dir]]`).
fn is_remote(s: &str) -> bool {
    let path = s.split('#').next().unwrap_or(s);
    s.starts_with("http://")
        || s.starts_with("https://")
        || s.starts_with("git@")
        || s.starts_with("git://")
        || s.starts_with("ssh://")
        || path.trim_end_matches('/').ends_with(".git") && s.contains("://")
}
