//! The stage walker: resolves stage references (lazily, so `--target` prunes what it does not
//! need), expands words, builds ops and accumulates each stage's config.

use std::collections::{BTreeMap, HashMap};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};

use super::config::{HealthConfig, ImageConfig, DEFAULT_PATH};
use super::history::{self, HistoryStep};
use super::op::{vertex_digest, Edge, Op};
use super::scope::{set_var, Scope};
use super::{BaseImages, BuildGraph, LowerError, LowerOptions, StageNode, Vertex};
use crate::instructions::{parse_stages, Command, Instruction, Stage, Stages};
use crate::lint::{self, Warning};
use crate::parser::Dockerfile;
use crate::platform::Platform;
use crate::shell::Lexer;

mod steps;

/// Proxy variables are usable without an ARG and never recorded in the image or cache keys.
pub(super) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The state of the stage being lowered.
pub(super) struct StageState {
    pub index: usize,
    pub base: String,
    pub label: String,
    pub config: ImageConfig,
    pub scope: Scope,
    /// The variables RUN sees and `$name` expands to, in the order they were set: the image
    /// env, then ENV and valued ARG instructions, the later winning (BuildKit's state env).
    pub env: Vec<(String, String)>,
    pub head: NodeIndex,
    pub platform: Platform,
    pub vertices: Vec<NodeIndex>,
    /// The image history so far (see [`HistoryStep`]).
    pub history: Vec<HistoryStep>,
    /// Every ARG declared so far, with its value (BuildKit's `d.buildArgs`, which a stage
    /// built FROM another inherits): RUN's history entry lists them.
    pub build_args: Vec<(String, Option<String>)>,
    pub cmd_set: bool,
    pub step: usize,
    pub steps: usize,
}

pub(super) struct Lowering<'a> {
    pub stages: Stages,
    pub options: &'a LowerOptions,
    pub bases: &'a dyn BaseImages,
    pub lexer: Lexer,
    pub graph: StableDiGraph<Vertex, Edge>,
    pub by_digest: HashMap<String, NodeIndex>,
    pub meta: Scope,
    pub lowered: BTreeMap<usize, StageNode>,
    /// The ARGs each lowered stage declared, for the stages built FROM it.
    pub build_args: BTreeMap<usize, Vec<(String, Option<String>)>>,
    pub warnings: Vec<Warning>,
    pub target_platform: Platform,
}

pub(super) fn at(instr: &Instruction, message: impl Into<String>) -> LowerError {
    LowerError::At {
        message: message.into(),
        line: instr.line,
        column: instr.column,
    }
}

impl<'a> Lowering<'a> {
    pub fn run(
        dockerfile: &'a Dockerfile,
        options: &'a LowerOptions,
        bases: &'a dyn BaseImages,
    ) -> Result<BuildGraph, LowerError> {
        let stages = parse_stages(dockerfile)?;
        if stages.stages.is_empty() {
            let line = dockerfile.children.last().map_or(0, |n| n.end_line);
            let message =
                "the Dockerfile has no FROM: a build needs at least one stage".to_string();
            return Err(LowerError::At {
                message,
                line,
                column: 0,
            });
        }
        let mut warnings = lint::check_stages(&stages);
        let target_platform = options
            .target_platform
            .clone()
            .unwrap_or(options.build_platform.clone());
        let mut lowering = Lowering {
            stages,
            options,
            bases,
            lexer: Lexer::new(dockerfile.escape),
            graph: StableDiGraph::new(),
            by_digest: HashMap::new(),
            meta: Scope::default(),
            lowered: BTreeMap::new(),
            build_args: BTreeMap::new(),
            warnings: Vec::new(),
            target_platform,
        };
        lowering.meta = lowering.meta_scope()?;
        let target = lowering.target_index()?;
        lowering.lower_stage(target)?;
        warnings.append(&mut lowering.warnings);
        warnings.sort_by_key(|w| w.line);
        warnings.dedup();
        lint::apply_skips(dockerfile, &mut warnings);
        Ok(BuildGraph {
            graph: lowering.graph,
            stages: lowering.lowered,
            target,
            warnings,
        })
    }

    /// The predefined platform ARGs.
    fn platform_args(&self) -> Vec<(String, String)> {
        let mut args = self.target_platform.args("TARGET");
        args.extend(self.options.build_platform.args("BUILD"));
        args
    }

    /// Global ARGs: a `--build-arg` overrides the default; defaults see earlier globals.
    fn meta_scope(&mut self) -> Result<Scope, LowerError> {
        let mut scope = Scope::default();
        for (k, v) in self.platform_args() {
            scope.set(&k, Some(v));
        }
        for meta in self.stages.meta_args.clone() {
            let name = &meta.arg.name;
            let value = match (self.options.build_args.get(name), &meta.arg.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => {
                    let word =
                        self.lexer
                            .process_word(default, &scope)
                            .map_err(|e| LowerError::At {
                                message: e.to_string(),
                                line: meta.line,
                                column: 0,
                            })?;
                    Some(word)
                }
                (None, None) => None,
            };
            scope.set(name, value);
        }
        Ok(scope)
    }

    fn target_index(&self) -> Result<usize, LowerError> {
        let Some(target) = &self.options.target else {
            return Ok(self.stages.stages.len() - 1);
        };
        let wanted = target.to_lowercase();
        self.stages
            .stages
            .iter()
            .position(|s| s.from.name.as_deref() == Some(wanted.as_str()))
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .stages
                    .stages
                    .iter()
                    .filter_map(|s| s.from.name.as_deref())
                    .collect();
                LowerError::At {
                    message: format!(
                        "target stage {target:?} could not be found (stages: {})",
                        if names.is_empty() {
                            "none named".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                    line: 0,
                    column: 0,
                }
            })
    }

    /// Finds a stage by name (case-insensitive) or index, for `COPY --from` and mounts.
    pub fn find_stage(&self, reference: &str, allow_index: bool) -> Option<usize> {
        let lower = reference.to_lowercase();
        if let Some(i) = self
            .stages
            .stages
            .iter()
            .position(|s| s.from.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        if allow_index {
            if let Ok(i) = reference.parse::<usize>() {
                return Some(i);
            }
        }
        None
    }

    /// Lowers stage `index` (once), after the stages it needs. A stage only ever reads
    /// earlier stages (FROM, `--from` and mount sources are checked for that), so this
    /// recursion always descends and cannot loop.
    pub fn lower_stage(&mut self, index: usize) -> Result<(), LowerError> {
        if self.lowered.contains_key(&index) {
            return Ok(());
        }
        let stage = self.stages.stages[index].clone();
        let mut state = self.start_stage(index, &stage)?;
        self.run_onbuild_triggers(&mut state, &stage)?;
        for instr in &stage.instructions {
            state.step += 1;
            self.lower_instruction(&mut state, instr)?;
        }
        self.build_args.insert(index, state.build_args);
        self.lowered.insert(
            index,
            StageNode {
                index,
                name: stage.from.name.clone(),
                base: state.base,
                platform: state.platform,
                config: state.config,
                history: state.history,
                head: state.head,
                vertices: state.vertices,
                line: stage.from_instruction.line,
            },
        );
        Ok(())
    }

    /// FROM's image and platform, expanded with the global ARGs.
    fn expand_from(&mut self, stage: &Stage) -> Result<(String, Option<String>), LowerError> {
        let instr = &stage.from_instruction;
        let mut expand = |word: &str| -> Result<String, LowerError> {
            let exp = self
                .lexer
                .process_word_with_matches(word, &self.meta)
                .map_err(|e| at(instr, e.to_string()))?;
            for name in exp.unmatched {
                if !self.meta.declared(&name) {
                    self.warnings.push(Warning::new(
                        "UndefinedArgInFrom",
                        instr.line,
                        format!("FROM argument '{name}' is not declared"),
                    ));
                }
            }
            Ok(exp.result)
        };
        let image = expand(&stage.from.image)?;
        let platform = stage
            .from
            .platform
            .as_deref()
            .map(&mut expand)
            .transpose()?;
        if image.is_empty() {
            return Err(at(
                instr,
                format!("base name ({}) should not be blank", stage.from.image),
            ));
        }
        Ok((image, platform))
    }

    fn start_stage(&mut self, index: usize, stage: &Stage) -> Result<StageState, LowerError> {
        let (image, platform_text) = self.expand_from(stage)?;
        let instr = &stage.from_instruction;
        let platform = match platform_text {
            Some(p) => Platform::parse(&p).map_err(|e| at(instr, e.to_string()))?,
            None => self.target_platform.clone(),
        };
        let earlier = self.find_stage(&image, false).filter(|i| *i < index);
        let (head, mut config, vertices, platform) = match earlier {
            Some(parent) => {
                self.lower_stage(parent)?;
                let p = &self.lowered[&parent];
                (p.head, p.config.clone(), Vec::new(), p.platform.clone())
            }
            None if image.eq_ignore_ascii_case("scratch") => {
                let v = self.add_vertex(
                    Op::Scratch,
                    &[],
                    format!("[{}] FROM scratch", self.label(stage, index, &platform)),
                );
                // BuildKit's empty image: WorkingDir "/" (and the default PATH, set below).
                let config = ImageConfig {
                    working_dir: "/".to_string(),
                    ..ImageConfig::default()
                };
                (v, config, vec![v], platform)
            }
            None => {
                let op = Op::Image {
                    reference: image.clone(),
                    platform: platform.clone(),
                };
                let name = format!("[{}] FROM {image}", self.label(stage, index, &platform));
                let v = self.add_vertex(op, &[], name);
                let config = self.bases.config(&image, &platform).unwrap_or_default();
                (v, config, vec![v], platform)
            }
        };
        if config.env_get("PATH").is_none() {
            config.env_set("PATH", DEFAULT_PATH);
        }
        let env = config
            .env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        // A stage built FROM another continues its history and its ARG list.
        let (history, build_args) = match earlier {
            Some(parent) => (
                self.lowered[&parent].history.clone(),
                self.build_args[&parent].clone(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(StageState {
            index,
            base: image,
            label: self.label(stage, index, &platform),
            config,
            scope: Scope::default(),
            env,
            head,
            platform,
            vertices,
            history,
            build_args,
            cmd_set: false,
            step: 0,
            steps: stage.instructions.len(),
        })
    }

    /// A base image's ONBUILD triggers run first in the stage built on it, then are cleared.
    fn run_onbuild_triggers(
        &mut self,
        state: &mut StageState,
        stage: &Stage,
    ) -> Result<(), LowerError> {
        let triggers = std::mem::take(&mut state.config.on_build);
        let instr = &stage.from_instruction;
        for trigger in triggers {
            let parsed = crate::parser::parse(trigger.as_bytes()).map_err(|e| {
                at(
                    instr,
                    format!("ONBUILD trigger {trigger:?} of the base image: {e}"),
                )
            })?;
            for node in &parsed.children {
                let mut typed = crate::instructions::parse_instruction(node).map_err(|e| {
                    at(
                        instr,
                        format!("ONBUILD trigger {trigger:?} of the base image: {e}"),
                    )
                })?;
                (typed.line, typed.end_line, typed.column) =
                    (instr.line, instr.end_line, instr.column);
                self.lower_instruction(state, &typed)?;
            }
        }
        Ok(())
    }

    /// Adds a vertex, or returns the identical one already in the graph.
    pub fn add_vertex(&mut self, op: Op, inputs: &[(Edge, NodeIndex)], name: String) -> NodeIndex {
        let refs: Vec<(&Edge, &str)> = inputs
            .iter()
            .map(|(e, n)| (e, self.graph[*n].digest.as_str()))
            .collect();
        let digest = vertex_digest(&op, &refs);
        if let Some(existing) = self.by_digest.get(&digest) {
            return *existing;
        }
        let node = self.graph.add_node(Vertex {
            op,
            digest: digest.clone(),
            name,
        });
        for (edge, input) in inputs {
            self.graph.add_edge(*input, node, edge.clone());
        }
        self.by_digest.insert(digest, node);
        node
    }

    /// Expands one word in the stage's scope, noting variables that are not defined.
    pub fn expand(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        word: &str,
    ) -> Result<String, LowerError> {
        let lookup = &state.env;
        let exp = self
            .lexer
            .process_word_with_matches(word, &lookup)
            .map_err(|e| at(instr, e.to_string()))?;
        self.note_undefined(state, instr, exp.unmatched);
        Ok(exp.result)
    }

    /// Expands a heredoc body as BuildKit's `ExpandRaw` does: `$vars` only, quotes kept as
    /// text, `\` as the escape whatever the file's escape token.
    pub fn expand_raw(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        text: &str,
    ) -> Result<String, LowerError> {
        let mut lexer = crate::shell::Lexer::new('\\');
        lexer.skip_process_quotes = true;
        let exp = lexer
            .process_word_with_matches(text, &state.env)
            .map_err(|e| at(instr, e.to_string()))?;
        self.note_undefined(state, instr, exp.unmatched);
        Ok(exp.result)
    }

    /// Expands an optional word (a flag value that may be absent).
    pub fn expand_opt(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        word: &Option<String>,
    ) -> Result<Option<String>, LowerError> {
        word.as_deref()
            .map(|w| self.expand(state, instr, w))
            .transpose()
    }

    /// Expands every word of a list.
    pub fn expand_all(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        words: &[String],
    ) -> Result<Vec<String>, LowerError> {
        words.iter().map(|w| self.expand(state, instr, w)).collect()
    }

    /// Expands and splits into words (EXPOSE).
    pub fn expand_words(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        word: &str,
    ) -> Result<Vec<String>, LowerError> {
        let lookup = &state.env;
        self.lexer
            .process_words(word, &lookup)
            .map_err(|e| at(instr, e.to_string()))
    }

    fn note_undefined(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        names: impl IntoIterator<Item = String>,
    ) {
        for name in names {
            let known = state.scope.declared(&name) || PROXY_ARGS.contains(&name.as_str());
            if !known {
                self.warnings.push(Warning::new(
                    "UndefinedVar",
                    instr.line,
                    format!("Usage of undefined variable '${name}'"),
                ));
            }
        }
    }

    /// `[build 2/5] RUN make` for progress output.
    pub fn step_name(&self, state: &StageState, instr: &Instruction) -> String {
        let text = instr.original.trim();
        format!("[{} {}/{}] {}", state.label, state.step, state.steps, text)
    }

    /// The RUN environment (`KEY=value`) and, apart, proxy variables given as build args,
    /// which reach the process but never the cache key.
    pub fn run_env(&self, state: &StageState) -> (Vec<String>, Vec<String>) {
        let env = state.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let proxies = PROXY_ARGS
            .iter()
            .filter(|p| !state.scope.declared(p) && !state.env.iter().any(|(k, _)| k == *p))
            .filter_map(|p| Some(format!("{p}={}", self.options.build_args.get(*p)?)))
            .collect();
        (env, proxies)
    }

    fn lower_instruction(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
    ) -> Result<(), LowerError> {
        match &instr.command {
            Command::From(_) => unreachable!("FROM opens a stage; it is never inside one"),
            Command::Arg { args } => self.declare_args(state, instr, args),
            Command::Env { pairs } => {
                let expanded = self.expand_pairs(state, instr, pairs)?;
                for (k, v) in &expanded {
                    state.config.env_set(k, v);
                    set_var(&mut state.env, k, v);
                }
                let entry = history::pairs("ENV", &expanded);
                state.history.push(HistoryStep::config(entry));
                Ok(())
            }
            Command::Label { pairs } => {
                let expanded = self.expand_pairs(state, instr, pairs)?;
                let entry = history::pairs("LABEL", &expanded);
                state.history.push(HistoryStep::config(entry));
                state.config.labels.extend(expanded);
                Ok(())
            }
            Command::Run(run) => self.lower_run(state, instr, run),
            Command::Copy(copy) => self.lower_copy(state, instr, copy),
            Command::Add(add) => self.lower_add(state, instr, add),
            Command::Workdir { path } => self.lower_workdir(state, instr, path),
            _ => self.apply_config(state, instr),
        }
    }

    fn expand_pairs(
        &mut self,
        state: &StageState,
        instr: &Instruction,
        pairs: &[crate::instructions::KeyValue],
    ) -> Result<Vec<(String, String)>, LowerError> {
        // Every pair of one instruction sees the scope from before it (`ENV a=1 b=$a` gives
        // b the old a), as Docker does.
        pairs
            .iter()
            .map(|p| {
                Ok((
                    self.expand(state, instr, &p.key)?,
                    self.expand(state, instr, &p.value)?,
                ))
            })
            .collect()
    }

    fn declare_args(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        args: &[crate::instructions::ArgDecl],
    ) -> Result<(), LowerError> {
        let predefined = self.platform_args();
        let mut entry = "ARG".to_string();
        for arg in args {
            let value = match (self.options.build_args.get(&arg.name), &arg.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => Some(self.expand(state, instr, default)?),
                (None, None) => self.meta.get(&arg.name).map(str::to_string).or_else(|| {
                    predefined
                        .iter()
                        .find(|(k, _)| *k == arg.name)
                        .map(|(_, v)| v.clone())
                }),
            };
            // A valued ARG is visible like an ENV from here on (until an ENV sets it again),
            // but never enters the image config.
            if let Some(v) = &value {
                set_var(&mut state.env, &arg.name, v);
            }
            // `ARG name=value` with the value it resolved to (a build arg, the expanded
            // default or the global value), or just `name`.
            entry.push(' ');
            entry.push_str(&arg.name);
            if let Some(v) = &value {
                entry.push('=');
                entry.push_str(v);
            }
            state.build_args.push((arg.name.clone(), value.clone()));
            state.scope.set(&arg.name, value);
        }
        state.history.push(HistoryStep::config(entry));
        Ok(())
    }

    fn apply_config(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
    ) -> Result<(), LowerError> {
        let shell = state.config.shell_or_default();
        let command_line = |c: &crate::instructions::CommandLine| {
            if c.shell_form {
                let mut argv = shell.clone();
                argv.extend(c.args.iter().cloned());
                argv
            } else {
                c.args.clone()
            }
        };
        // Each arm returns its history entry's `created_by` (the `commitToHistory` message
        // of BuildKit's `dispatch*` function); all are empty-layer entries.
        let entry = match &instr.command {
            Command::Cmd(c) => {
                let cmd = command_line(c);
                state.cmd_set = true;
                let entry = format!("CMD {}", history::go_quoted_list(&cmd));
                state.config.cmd = Some(cmd);
                Some(entry)
            }
            Command::Entrypoint(c) => {
                let entrypoint = command_line(c);
                let entry = format!("ENTRYPOINT {}", history::go_quoted_list(&entrypoint));
                state.config.entrypoint = Some(entrypoint);
                // A new ENTRYPOINT drops a CMD inherited from the base, as BuildKit does.
                if !state.cmd_set {
                    state.config.cmd = None;
                }
                Some(entry)
            }
            Command::Expose { ports } => {
                let ports = self.lower_expose(state, instr, ports)?;
                Some(format!("EXPOSE {}", history::go_list(&ports)))
            }
            Command::Volume { paths } => {
                let paths = self.expand_all(state, instr, paths)?;
                for path in &paths {
                    state
                        .config
                        .volumes
                        .insert(path.clone(), Default::default());
                }
                Some(format!("VOLUME {}", history::go_list(&paths)))
            }
            Command::User { user } => {
                state.config.user = self.expand(state, instr, user)?;
                Some(format!("USER {}", state.config.user))
            }
            Command::Stopsignal { signal } => {
                let signal = self.expand(state, instr, signal)?;
                super::values::check_signal(&signal).map_err(|m| at(instr, m))?;
                state.config.stop_signal = signal;
                Some(format!("STOPSIGNAL {}", state.config.stop_signal))
            }
            Command::Healthcheck(h) => {
                let health = HealthConfig {
                    test: h.test.clone(),
                    interval: h.interval.unwrap_or(0),
                    timeout: h.timeout.unwrap_or(0),
                    start_period: h.start_period.unwrap_or(0),
                    start_interval: h.start_interval.unwrap_or(0),
                    retries: h.retries.unwrap_or(0),
                };
                let entry = history::healthcheck(&health);
                state.config.healthcheck = Some(health);
                Some(entry)
            }
            Command::Shell { shell } => {
                state.config.shell = Some(shell.clone());
                Some(format!("SHELL {}", history::go_list(shell)))
            }
            // BuildKit's dispatchOnbuild only records the trigger: no history entry.
            Command::Onbuild { expression } => {
                state.config.on_build.push(expression.clone());
                None
            }
            Command::Maintainer { name } => {
                state.config.author = name.clone();
                Some(format!("MAINTAINER {name}"))
            }
            _ => unreachable!("filesystem instructions are lowered elsewhere"),
        };
        state.history.extend(entry.map(HistoryStep::config));
        Ok(())
    }

    /// Adds EXPOSE's ports to the config; returns them in the order given, one per port of a
    /// range, repeats kept (the list BuildKit's history entry prints).
    fn lower_expose(
        &mut self,
        state: &mut StageState,
        instr: &Instruction,
        ports: &[String],
    ) -> Result<Vec<String>, LowerError> {
        let mut all = Vec::new();
        for word in ports {
            for spec in self.expand_words(state, instr, word)? {
                for port in super::values::parse_port_spec(&spec).map_err(|m| at(instr, m))? {
                    state
                        .config
                        .exposed_ports
                        .insert(port.clone(), Default::default());
                    all.push(port);
                }
            }
        }
        Ok(all)
    }
}

impl Lowering<'_> {
    /// A stage as progress names it: its name or `stage-N`, after the stage's platform in a
    /// build for several platforms (`linux/arm64 build`), as BuildKit names them. Vertices
    /// that two platforms share are one (by digest) and keep the first platform's name.
    fn label(&self, stage: &Stage, index: usize, platform: &Platform) -> String {
        let name = stage
            .from
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"));
        if !self.options.platform_in_names {
            return name;
        }
        // A stage on another platform than the target (a `$BUILDPLATFORM` stage) says both,
        // as BuildKit does: `linux/amd64->arm64 build`.
        let target = &self.target_platform;
        let mut arrow = String::new();
        if target != platform {
            arrow.push_str("->");
            if target.os != platform.os {
                arrow.push_str(&format!("{}/", target.os));
            }
            arrow.push_str(&target.architecture);
            if !target.variant.is_empty() {
                arrow.push_str(&format!("/{}", target.variant));
            }
        }
        format!("{platform}{arrow} {name}")
    }
}
