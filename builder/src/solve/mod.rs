//! The solver: runs the vertices the target needs, inputs first, and gives each its result —
//! a chain of layers (bottom first) or the build context. Each step has a cache key
//! ([`crate::cachekey`]); a step whose key has a record reuses its layer without running, and
//! a miss says what changed since the same step's last build.

mod run_mounts;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use rbuild_cache::db::RecordedLayer;
use rbuild_cache::image::{media_types, Descriptor};
use rbuild_cache::layer::LayerOptions;
use rbuild_cache::Digest;
use rbuild_frontend::graph::{BuildGraph, Edge, ExecOp, FileOp, Op, Vertex};
use rbuild_frontend::instructions::{MountType, NetworkMode, SecurityMode};

use crate::bases::{BaseImage, StoreBases};
use crate::cachekey::KeyInputs;
use crate::executor::{BindMount, Executor, Network, OutputSink, RunSpec, Stream};
use crate::fileop::{self, SourceTree};
use crate::progress::{current as reporter, LogStream, VertexInfo};
use crate::shared_cache::{ImportedCache, StepRecord, UnusableLayer};
use crate::snapshot::{LayerDir, Snapshots};
use crate::state::State;

/// A layer of a solved chain: its diffID and its blob. Its files are unpacked only when a step
/// needs them ([`Solver::layer_dir`]), and its blob, when it came from an imported cache, is
/// fetched only then or when the result carries it.
#[derive(Clone, Debug)]
pub struct SolvedLayer {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

impl SolvedLayer {
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }
}

/// What a vertex produced.
#[derive(Clone, Debug)]
pub enum Solved {
    Layers(Vec<SolvedLayer>),
    Context,
}

/// The build context: a directory and its `.dockerignore` rules.
pub struct BuildContext {
    pub root: PathBuf,
    pub ignore: Option<fileop::IgnoreRules>,
}

pub struct Solver<'a> {
    pub state: &'a State,
    pub snapshots: &'a Snapshots,
    pub executor: &'a dyn Executor,
    pub bases: &'a StoreBases<'a>,
    pub context: Option<&'a BuildContext>,
    pub layer_options: LayerOptions,
    /// Steps that must run even when their key has a record (`--no-cache`, `--no-cache-filter`).
    pub no_cache: BTreeSet<NodeIndex>,
    /// Names this build's steps apart from other projects' in the step history: the context
    /// and Dockerfile paths.
    pub scope: String,
    /// At most this many RUN steps at once (`-j`).
    pub jobs: usize,
    /// The network of RUN steps that do not choose one (`--network`).
    pub network: Network,
    /// How RUN steps of each platform run (see [`Emulation`]).
    pub emulators: Emulation,
    /// Step results read from `--cache-from` sources.
    pub imported: Option<&'a ImportedCache>,
    /// Blobs found unusable earlier in this build: records that name them are not hits.
    pub unusable: BTreeSet<Digest>,
    /// `RUN --mount=type=cache` directories.
    pub cache_mounts: crate::cache_mounts::CacheMounts,
    /// `--secret` values, for `RUN --mount=type=secret`.
    pub secrets: Option<&'a crate::build_secrets::Secrets>,
    /// `--ssh` agent sockets, for `RUN --mount=type=ssh`.
    pub ssh: Option<&'a crate::build_secrets::SshAgents>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run privileged.
    pub allow_insecure: bool,
}

/// By platform: the `--emulator` hook its RUN steps run through, `None` when they run natively
/// or through binfmt_misc, or why they cannot run here (said when one is about to run).
pub type Emulation = BTreeMap<rbuild_frontend::platform::Platform, Result<Option<PathBuf>, String>>;

/// A solved vertex: its result, its cache key, whether it changed nothing, and the record a
/// cached step has (for cache exports).
#[derive(Clone, Debug)]
pub struct Done {
    pub solved: Solved,
    pub key: Digest,
    pub empty: bool,
    pub record: Option<StepRecord>,
}

/// The target's layers and the steps that added none (their history entries are empty_layer).
pub struct Solution {
    pub layers: Vec<SolvedLayer>,
    pub empty_steps: BTreeSet<NodeIndex>,
}

/// The solutions of the targets, and the record of every cached step the build solved.
pub struct SolveResult {
    pub solutions: Vec<Solution>,
    pub steps: Vec<StepRecord>,
}

/// What the threads solving vertices share.
#[derive(Default)]
struct Board {
    done: BTreeMap<NodeIndex, Done>,
    running: BTreeSet<NodeIndex>,
    failure: Option<anyhow::Error>,
}

impl<'a> Solver<'a> {
    pub fn new(
        state: &'a State,
        snapshots: &'a Snapshots,
        executor: &'a dyn Executor,
        bases: &'a StoreBases<'a>,
        context: Option<&'a BuildContext>,
        layer_options: LayerOptions,
    ) -> Self {
        Solver {
            state,
            snapshots,
            executor,
            bases,
            context,
            layer_options,
            no_cache: BTreeSet::new(),
            scope: String::new(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            network: Network::Host,
            emulators: BTreeMap::new(),
            imported: None,
            unusable: BTreeSet::new(),
            cache_mounts: crate::cache_mounts::CacheMounts::new(&state.root),
            secrets: None,
            ssh: None,
            allow_insecure: false,
        }
    }

    /// Solves the `targets` (one per platform of the build) and everything they need, each
    /// vertex as soon as its inputs are ready, independent ones at once; a vertex several
    /// targets need runs once. The first failure cancels the rest (running containers are
    /// killed) and is the error returned once every started step has unwound. The solutions
    /// come in the order of `targets`.
    ///
    /// A layer a cache hit promised that cannot be had fails the solve with an
    /// [`UnusableLayer`]; the caller adds it to [`Solver::unusable`] and solves again.
    pub fn solve(&self, graph: &BuildGraph, targets: &[NodeIndex]) -> anyhow::Result<SolveResult> {
        let needed = inputs_first(graph, targets);
        let all_done =
            |done: &BTreeMap<NodeIndex, Done>| targets.iter().all(|t| done.contains_key(t));
        let board = Mutex::new(Board::default());
        let changed = Condvar::new();
        let runs = Slots::new(self.jobs.max(1));
        std::thread::scope(|scope| {
            let mut guard = board.lock().unwrap_or_else(|e| e.into_inner());
            // Identical steps (two stages alike) are one vertex already: the frontend merges
            // vertices by digest, so each runs once.
            loop {
                if guard.failure.is_none() && !all_done(&guard.done) {
                    for &vertex in &needed {
                        if guard.done.contains_key(&vertex) || guard.running.contains(&vertex) {
                            continue;
                        }
                        let inputs = input_vertices(graph, vertex);
                        if !inputs.iter().all(|i| guard.done.contains_key(i)) {
                            continue;
                        }
                        let ready: BTreeMap<NodeIndex, Done> =
                            inputs.iter().map(|i| (*i, guard.done[i].clone())).collect();
                        guard.running.insert(vertex);
                        let (board, changed, runs) = (&board, &changed, &runs);
                        scope.spawn(move || {
                            // A panic is a failure like any other: the board must hear of it,
                            // or the scheduler would wait for this vertex forever.
                            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                Job::new(self, graph, vertex, ready, runs).solve()
                            }))
                            .unwrap_or_else(|panic| Err(panicked(&graph.graph[vertex], panic)));
                            let mut guard = board.lock().unwrap_or_else(|e| e.into_inner());
                            guard.running.remove(&vertex);
                            let first_failure = match result {
                                Ok(done) => {
                                    guard.done.insert(vertex, done);
                                    false
                                }
                                Err(e) if guard.failure.is_none() => {
                                    // A cached layer that cannot be had ends the solve (it is
                                    // solved again without it), but steps already running
                                    // finish and are recorded: the next solve hits them.
                                    let unusable = e.downcast_ref::<UnusableLayer>().is_some();
                                    guard.failure = Some(e);
                                    !unusable
                                }
                                Err(_) => false,
                            };
                            changed.notify_all();
                            drop(guard);
                            // Outside the board's lock: stopping containers may take a while.
                            if first_failure {
                                crate::interrupt::cancel();
                            }
                        });
                    }
                }
                let finished = all_done(&guard.done) || guard.failure.is_some();
                if finished && guard.running.is_empty() {
                    break;
                }
                guard = changed.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        });
        let mut board = board.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = board.failure.take() {
            return Err(e);
        }
        let empty_steps: BTreeSet<NodeIndex> = board
            .done
            .iter()
            .filter(|(_, d)| d.empty)
            .map(|(v, _)| *v)
            .collect();
        let solutions = targets
            .iter()
            .map(|target| match board.done.get(target).map(|d| &d.solved) {
                Some(Solved::Layers(layers)) => Ok(Solution {
                    layers: layers.clone(),
                    empty_steps: empty_steps.clone(),
                }),
                _ => bail!("the target is the build context, not a filesystem"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The result carries its layers: those of imported hits come into the store now.
        for solution in &solutions {
            for layer in &solution.layers {
                self.ensure_blob(&layer.blob)?;
            }
        }
        let steps = board
            .done
            .values()
            .filter_map(|d| d.record.clone())
            .collect();
        Ok(SolveResult { solutions, steps })
    }

    /// `blob` in the content store: there already, or fetched from the imported cache that
    /// has it.
    fn ensure_blob(&self, blob: &Descriptor) -> anyhow::Result<()> {
        if self.state.content.contains(&blob.digest) {
            return Ok(());
        }
        match self.imported {
            Some(imported) => Ok(imported.fetch(self.state, self.bases, blob)?),
            None => Err(UnusableLayer {
                blob: blob.digest,
                cause: "it is not in the store".into(),
            }
            .into()),
        }
    }

    /// The unpacked directory of `layer`, unpacked now if it is not yet.
    fn layer_dir(&self, layer: &SolvedLayer) -> anyhow::Result<LayerDir> {
        if let Some(dir) = self.snapshots.layer(&layer.diff_id) {
            return Ok(dir);
        }
        self.ensure_blob(&layer.blob)?;
        let unusable = |cause: String| UnusableLayer {
            blob: layer.blob.digest,
            cause,
        };
        let blob = self
            .state
            .content
            .open_blob(&layer.blob.digest)
            .map_err(|e| unusable(e.to_string()))?;
        self.snapshots
            .layer_from_blob(&layer.diff_id, std::io::BufReader::new(blob))
            .map_err(|e| unusable(format!("unpacking it: {e}")).into())
    }

    fn layer_dirs(&self, layers: &[SolvedLayer]) -> anyhow::Result<Vec<LayerDir>> {
        layers.iter().map(|l| self.layer_dir(l)).collect()
    }
}

fn panicked(vertex: &Vertex, panic: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    anyhow::anyhow!("{}: rbuild failed unexpectedly: {message}", vertex.name)
}

/// A counting semaphore: RUN steps that run take a slot (`-j`); hits and file steps do not.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap();
        while *free == 0 {
            free = self.freed.wait(free).unwrap();
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'s>(&'s Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        self.0.freed.notify_one();
    }
}

fn input_vertices(graph: &BuildGraph, index: NodeIndex) -> Vec<NodeIndex> {
    graph
        .graph
        .edges_directed(index, Direction::Incoming)
        .map(|e| e.source())
        .collect()
}

/// One vertex being solved, with its inputs' results.
struct Job<'s, 'a> {
    solver: &'s Solver<'a>,
    graph: &'s BuildGraph,
    index: NodeIndex,
    inputs: BTreeMap<NodeIndex, Done>,
    /// The vertex as progress names it.
    info: VertexInfo,
    key: Option<Digest>,
    empty: bool,
    /// A `COPY --link`: its layer is made apart from the layers below it.
    linked: bool,
    /// ADD of git sources: the commit each resolved to for the key.
    git_commits: Mutex<BTreeMap<String, String>>,
    record: Option<StepRecord>,
    /// The `-j` slots a RUN step takes while it runs.
    runs: &'s Slots,
}

impl<'s, 'a> Job<'s, 'a> {
    fn new(
        solver: &'s Solver<'a>,
        graph: &'s BuildGraph,
        index: NodeIndex,
        inputs: BTreeMap<NodeIndex, Done>,
        runs: &'s Slots,
    ) -> Self {
        let vertex = &graph.graph[index];
        let info = VertexInfo {
            digest: vertex.digest.clone(),
            name: vertex.name.clone(),
            // `scratch` is no vertex of BuildKit's, and none in progress: not an input there.
            inputs: input_vertices(graph, index)
                .into_iter()
                .filter(|&i| !matches!(graph.graph[i].op, Op::Scratch))
                .map(|i| graph.graph[i].digest.clone())
                .collect(),
        };
        Job {
            solver,
            graph,
            index,
            inputs,
            info,
            key: None,
            empty: false,
            linked: false,
            git_commits: Mutex::new(BTreeMap::new()),
            record: None,
            runs,
        }
    }

    fn solve(mut self) -> anyhow::Result<Done> {
        let solved = self.solve_vertex(self.graph, self.index)?;
        let mut key = self.key.expect("every vertex gets a key");
        if self.linked {
            // A linked step's own key leaves out what is below it; what builds on it must not.
            let below = self.rootfs_vertex().map(|v| self.inputs[&v].key);
            let below = below.map(|k| k.to_string()).unwrap_or_default();
            key = Digest::of(format!("linked\n{key}\n{below}").as_bytes());
        }
        // What later steps key on: this step's key and the layer it made, so a step run again
        // (--no-cache-filter) that made other content gives its dependents other keys, and
        // they never reuse what was made from the old content (BuildKit keys a COPY --from
        // by the content it copies).
        let key = match (&self.graph.graph[self.index].op, &solved) {
            (Op::Exec(_) | Op::File(_), Solved::Layers(layers)) if !self.empty => {
                let made = layers.last().map(|l| l.diff_id().to_string());
                Digest::of(format!("output\n{key}\n{}", made.unwrap_or_default()).as_bytes())
            }
            _ => key,
        };
        Ok(Done {
            solved,
            key,
            empty: self.empty,
            record: self.record,
        })
    }

    fn solve_vertex(&mut self, graph: &BuildGraph, index: NodeIndex) -> anyhow::Result<Solved> {
        let vertex = &graph.graph[index];
        let mut inputs = KeyInputs {
            op: serde_json::to_value(&vertex.op)?,
            inputs: self.input_keys(graph, index),
            ..KeyInputs::default()
        };
        if let (Some(epoch), Op::Exec(_) | Op::File(_)) =
            (self.solver.layer_options.source_date_epoch, &vertex.op)
        {
            // Its layer's mtimes are clamped to it: another epoch is another layer.
            inputs.op["rbuild_source_date_epoch"] = epoch.into();
        }
        match &vertex.op {
            Op::Scratch => {
                self.key = Some(inputs.key());
                Ok(Solved::Layers(Vec::new()))
            }
            Op::Context { .. } => {
                self.key = Some(inputs.key());
                self.reported(|_| Ok(Solved::Context))
            }
            Op::Image {
                reference,
                platform,
            } => self.reported(|job| {
                let base = job.solver.bases.get(reference, platform)?;
                inputs.base = Some(base.manifest.digest());
                job.key = Some(inputs.key());
                Ok(Solved::Layers(job.base_layers(&base)))
            }),
            Op::Exec(exec) => {
                if exec.network == NetworkMode::Default && self.solver.network == Network::None {
                    // `--network=none` changes what a RUN can do: part of its key.
                    inputs.op["rbuild_network"] = "none".into();
                }
                let parents = self.rootfs_input()?;
                let inputs = self.with_mounted_context(exec, inputs)?;
                self.cached_step(index, vertex, &parents, Some(inputs), |solver, root| {
                    solver.run(exec, root)
                })
            }
            Op::File(file) => {
                let parents = self.rootfs_input()?;
                let source = self.source_input();
                let mut inputs = self.with_files(file, source.as_ref(), inputs)?;
                // COPY --link: made on an empty directory and laid on top, so neither its
                // key nor its layer depends on what is below (it stays cached when an earlier
                // step changes; what follows it still sees the change, see `solve`).
                self.linked = matches!(file, FileOp::Copy(c) if c.link);
                if self.linked {
                    let rootfs = serde_json::to_string(&Edge::Rootfs)?;
                    if let Some(inputs) = inputs.as_mut() {
                        inputs.inputs.retain(|(role, _, _)| *role != rootfs);
                    }
                }
                self.cached_step(index, vertex, &parents, inputs, |solver, root| {
                    solver.file_op(file, source.as_ref(), root)
                })
            }
        }
    }

    /// Runs `work` for a vertex that is not a step (a base image, the build context) and shows
    /// it in progress as BuildKit shows its FROM and context vertices: started, then done or
    /// failed. The error is returned as it was.
    fn reported(
        &mut self,
        work: impl FnOnce(&mut Self) -> anyhow::Result<Solved>,
    ) -> anyhow::Result<Solved> {
        let info = self.info.clone();
        reporter().started(&info);
        let result = work(self);
        match &result {
            Ok(_) => reporter().completed(&info),
            // Stopped by another step's failure (or a signal): CANCELED, as steps show it.
            Err(_) if crate::interrupt::stopping() => {
                reporter().failed(&info, crate::progress::CANCELED)
            }
            Err(e) => reporter().failed(&info, &format!("{e:#}")),
        }
        result
    }

    /// `index`'s inputs as (role, step name, key), ordered by role: which input is the root
    /// filesystem and which the source is part of the key, not the graph's numbering.
    fn input_keys(&self, graph: &BuildGraph, index: NodeIndex) -> Vec<(String, String, Digest)> {
        let mut inputs: Vec<(String, String, Digest)> = graph
            .graph
            .edges_directed(index, Direction::Incoming)
            .map(|e| {
                let role = serde_json::to_string(e.weight()).unwrap_or_default();
                let source = e.source();
                (
                    role,
                    graph.graph[source].name.clone(),
                    self.inputs[&source].key,
                )
            })
            .collect();
        inputs.sort();
        inputs
    }

    /// A step through the cache: a recorded result is reused; otherwise the step runs, after
    /// saying why it missed, and its result is recorded. `None` inputs: a step that must always
    /// run (its inputs cannot be known before), whose key is then unique to this run.
    fn cached_step(
        &mut self,
        index: NodeIndex,
        vertex: &Vertex,
        parents: &[SolvedLayer],
        inputs: Option<KeyInputs>,
        change: impl FnOnce(&mut Self, &Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Solved> {
        let Some(inputs) = inputs else {
            let unique = Digest::of(format!("{:?}{}", Instant::now(), vertex.digest).as_bytes());
            self.key = Some(unique);
            return self.step(vertex, parents, None, change);
        };
        let key = inputs.key();
        self.key = Some(key);
        let step_id = format!("{}\n{}", self.solver.scope, vertex.name);
        if !self.solver.no_cache.contains(&index) {
            if let Some((solved, layer)) = self.reuse(parents, &key)? {
                self.remember(&step_id, &key, &inputs)?;
                self.record = Some(StepRecord {
                    vertex: index,
                    key,
                    layer,
                });
                return Ok(solved);
            }
        }
        let reasons = self.miss_reasons(&step_id, &inputs, index);
        let solved = self.step(vertex, parents, Some(&reasons), change)?;
        let layer = match &solved {
            Solved::Layers(layers) if !self.empty => {
                layers.last().map(|l| rbuild_cache::db::RecordedLayer {
                    diff_id: *l.diff_id(),
                    blob: l.blob.digest,
                    media_type: l.blob.media_type.clone(),
                    size: l.blob.size,
                })
            }
            _ => None,
        };
        self.solver
            .state
            .db
            .set_cache_record(&key, layer.as_ref())?;
        self.remember(&step_id, &key, &inputs)?;
        self.record = Some(StepRecord {
            vertex: index,
            key,
            layer,
        });
        Ok(solved)
    }

    /// The recorded result of `key` and its layer: from this store's records when the layer's
    /// blob is still here, else from an imported cache. Nothing is unpacked or fetched yet.
    fn reuse(
        &mut self,
        parents: &[SolvedLayer],
        key: &Digest,
    ) -> anyhow::Result<Option<(Solved, Option<RecordedLayer>)>> {
        let solver = self.solver;
        let usable = |layer: &Option<RecordedLayer>, available: &dyn Fn(&Digest) -> bool| {
            layer
                .as_ref()
                .is_none_or(|l| !solver.unusable.contains(&l.blob) && available(&l.blob))
        };
        let local = solver
            .state
            .db
            .cache_record(key)?
            .map(|r| r.layer)
            // Pruned since: perhaps an imported cache has it, or the step runs again.
            .filter(|layer| usable(layer, &|blob| solver.state.content.contains(blob)));
        let found = match local {
            Some(layer) => Some(layer),
            None => match solver.imported.and_then(|i| i.record(key).map(|l| (i, l))) {
                Some((imported, layer))
                    if usable(&layer, &|blob| {
                        solver.state.content.contains(blob) || imported.has_blob(blob)
                    }) =>
                {
                    // Kept here too: a later build finds it once the blob is in the store.
                    solver.state.db.set_cache_record(key, layer.as_ref())?;
                    Some(layer)
                }
                _ => None,
            },
        };
        let Some(layer) = found else {
            return Ok(None);
        };
        let mut layers = parents.to_vec();
        match &layer {
            None => self.empty = true,
            Some(l) => layers.push(SolvedLayer {
                diff_id: l.diff_id,
                blob: Descriptor::new(l.media_type.clone(), l.blob, l.size),
            }),
        }
        reporter().cached(&self.info);
        Ok(Some((Solved::Layers(layers), layer)))
    }

    /// Why `inputs` missed: what differs from the same step's inputs last time.
    fn miss_reasons(&self, step_id: &str, inputs: &KeyInputs, index: NodeIndex) -> Vec<String> {
        if self.solver.no_cache.contains(&index) {
            return vec!["the cache is off for this step (--no-cache or --no-cache-filter)".into()];
        }
        let before = self.solver.state.db.step_inputs(step_id).ok().flatten();
        match before.and_then(|(_, json)| serde_json::from_str::<KeyInputs>(&json).ok()) {
            Some(before) => inputs.explain(&before),
            None => vec!["first build of this step".into()],
        }
    }

    fn remember(&self, step_id: &str, key: &Digest, inputs: &KeyInputs) -> anyhow::Result<()> {
        let json = serde_json::to_string(inputs)?;
        self.solver.state.db.set_step_inputs(step_id, key, &json)?;
        Ok(())
    }

    /// A RUN that binds the build context (`--mount=type=bind` without `from`): the checksum
    /// of the files it can see joins its key, as a COPY's does.
    fn with_mounted_context(
        &self,
        exec: &ExecOp,
        mut inputs: KeyInputs,
    ) -> anyhow::Result<KeyInputs> {
        let Some(context) = self.solver.context else {
            return Ok(inputs);
        };
        let tree = SourceTree {
            root: &context.root,
            ignore: context.ignore.as_ref(),
            is_context: true,
        };
        let mut paths = Vec::new();
        for m in exec
            .mounts
            .iter()
            .filter(|m| m.kind == MountType::Bind && m.from.is_none())
        {
            let action = run_mounts::context_selection(m.source.as_deref().unwrap_or("/"));
            paths.extend(fileop::selected_sources(&action, &tree)?);
        }
        if paths.is_empty() {
            return Ok(inputs);
        }
        paths.sort();
        paths.dedup();
        inputs.files = Some(self.context_files(context, &paths)?);
        Ok(inputs)
    }

    /// The checksum of `paths` of the context, as a key's files.
    fn context_files(
        &self,
        context: &BuildContext,
        paths: &[PathBuf],
    ) -> anyhow::Result<crate::cachekey::Files> {
        let checksum =
            rbuild_cache::checksum::checksum(&context.root, paths, &self.solver.state.db)?;
        Ok(crate::cachekey::Files {
            digest: checksum.digest,
            each: checksum
                .files
                .into_iter()
                .map(|f| (f.path.to_string_lossy().into_owned(), f.digest))
                .collect(),
        })
    }

    /// An ADD of git repositories: the commit each reference resolves to now joins its key
    /// (and is what the step checks out).
    fn with_git_commits(
        &self,
        sources: &[&String],
        mut inputs: KeyInputs,
    ) -> anyhow::Result<KeyInputs> {
        let mut commits = self.git_commits.lock().unwrap_or_else(|e| e.into_inner());
        for src in sources {
            let commit = fileop::resolve_git(src)?;
            commits.insert(src.to_string(), commit);
        }
        let each: BTreeMap<String, Digest> = commits
            .iter()
            .map(|(src, commit)| (src.clone(), Digest::of(commit.as_bytes())))
            .collect();
        let digest = Digest::of(serde_json::to_string(&each)?.as_bytes());
        inputs.files = Some(crate::cachekey::Files { digest, each });
        Ok(inputs)
    }

    /// A COPY/ADD from the context: the checksum of exactly the files it reads joins its key.
    /// An ADD of a URL cannot be known before it is fetched, so it always runs (`None`).
    fn with_files(
        &self,
        file: &FileOp,
        source: Option<&SourceInput>,
        mut inputs: KeyInputs,
    ) -> anyhow::Result<Option<KeyInputs>> {
        let action = match file {
            FileOp::Copy(action) => action,
            FileOp::Add(add) => {
                let git: Vec<&String> = add
                    .copy
                    .sources
                    .iter()
                    .filter(|s| fileop::is_git(s))
                    .collect();
                if !git.is_empty() {
                    return self.with_git_commits(&git, inputs).map(Some);
                }
                if add.copy.sources.iter().any(|s| fileop::is_remote(s)) {
                    return Ok(None);
                }
                &add.copy
            }
            FileOp::Mkdir { .. } => return Ok(Some(inputs)),
        };
        if !matches!(source, Some(SourceInput::Context)) {
            return Ok(Some(inputs));
        }
        let Some(context) = self.solver.context else {
            return Ok(Some(inputs));
        };
        let tree = SourceTree {
            root: &context.root,
            ignore: context.ignore.as_ref(),
            is_context: true,
        };
        let paths = fileop::selected_sources(action, &tree)?;
        inputs.files = Some(self.context_files(context, &paths)?);
        Ok(Some(inputs))
    }

    /// The layers of a base image (unpacked when a step first needs them).
    fn base_layers(&self, base: &BaseImage) -> Vec<SolvedLayer> {
        let diff_ids = &base.config.value().rootfs.diff_ids;
        base.manifest
            .value()
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(blob, diff_id)| SolvedLayer {
                diff_id: *diff_id,
                blob: Descriptor {
                    media_type: media_types::to_oci(&blob.media_type).to_string(),
                    ..blob.clone()
                },
            })
            .collect()
    }

    /// A step that changes the filesystem: a writable root over `parents`, the change, the
    /// new layer committed into the content store. Any failure names the step.
    fn step(
        &mut self,
        vertex: &Vertex,
        parents: &[SolvedLayer],
        miss: Option<&[String]>,
        change: impl FnOnce(&mut Self, &Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Solved> {
        if crate::interrupt::stopping() {
            bail!("interrupted");
        }
        // A RUN that runs takes a `-j` slot for its whole step; cache hits never wait for one.
        let _slot = matches!(vertex.op, Op::Exec(_)).then(|| self.runs.take());
        let info = self.info.clone();
        reporter().started(&info);
        if let Some(reasons) = miss {
            reporter().miss_reason(&info, reasons);
        }
        match self.change_and_commit(parents, change) {
            Ok(solved) => {
                reporter().completed(&info);
                Ok(solved)
            }
            Err(e) => {
                // Stopped because another step failed (or a signal): shown as BuildKit shows
                // it, CANCELED; the build's error is the failure that caused it.
                let error = match crate::interrupt::stopping() {
                    true => crate::progress::CANCELED.to_string(),
                    false => format!("{e:#}"),
                };
                reporter().failed(&info, &error);
                Err(e.context(vertex.name.clone()))
            }
        }
    }

    fn change_and_commit(
        &mut self,
        parents: &[SolvedLayer],
        change: impl FnOnce(&mut Self, &Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Solved> {
        let dirs = match self.linked {
            true => Vec::new(),
            false => self.solver.layer_dirs(parents)?,
        };
        let active = self.solver.snapshots.prepare(&dirs)?;
        if let Err(e) = change(self, active.root()) {
            // The step's own error is the one to report; a failed unmount is swept later.
            let _ = active.discard();
            return Err(e);
        }
        let mut writer = self.solver.state.content.writer()?;
        let (info, _dir) = active.commit(&mut writer, &self.solver.layer_options)?;
        if info.is_empty() {
            // Nothing changed: no layer, as BuildKit's exporter drops empty ones.
            drop(writer);
            self.empty = true;
            return Ok(Solved::Layers(parents.to_vec()));
        }
        let blob = writer.commit(Some(&info.blob_digest), Some(info.size))?;
        self.solver.state.db.set_layer_blob(
            &info.diff_id,
            info.compression.name(),
            &blob.digest,
            blob.size,
        )?;
        let mut layers = parents.to_vec();
        layers.push(SolvedLayer {
            diff_id: info.diff_id,
            blob: Descriptor::new(info.media_type(), blob.digest, blob.size),
        });
        Ok(Solved::Layers(layers))
    }

    fn run(&mut self, exec: &ExecOp, root: &Path) -> anyhow::Result<()> {
        let network = match exec.network {
            NetworkMode::None => Network::None,
            NetworkMode::Host => Network::Host,
            NetworkMode::Default => self.solver.network,
        };
        let emulator = match self.solver.emulators.get(&exec.platform) {
            Some(Err(why)) => bail!("{why}"),
            Some(Ok(hook)) => hook.clone(),
            None => None,
        };
        let privileged = exec.security == SecurityMode::Insecure;
        if privileged && !self.solver.allow_insecure {
            bail!(
                "RUN --security=insecure needs the security.insecure entitlement: build with \
                 --allow security.insecure"
            );
        }
        let scratch = self.solver.state.temp_dir()?;
        let mut mounts = heredoc_files(exec, scratch.path())?;
        // Held (caches locked, views mounted, secrets on tmpfs) until the step is over.
        let prepared = self.run_mounts(exec)?;
        mounts.extend(prepared.binds.iter().cloned());
        let mut env = exec.env.clone();
        env.extend(prepared.env.iter().cloned());
        let spec = RunSpec {
            args: exec.args.clone(),
            env,
            cwd: exec.cwd.clone(),
            user: exec.user.clone(),
            network,
            hostname: "buildkitsandbox".to_string(),
            mounts,
            tmpfs: prepared.tmpfs.clone(),
            privileged,
            emulator,
        };
        let mut sink = StepOutput {
            vertex: self.info.clone(),
        };
        self.solver.executor.run(root, &spec, &mut sink)?;
        Ok(())
    }

    fn file_op(
        &mut self,
        file: &FileOp,
        source: Option<&SourceInput>,
        root: &Path,
    ) -> anyhow::Result<()> {
        let scratch = self.solver.state.temp_dir()?;
        let view;
        let tree = match source {
            None => None,
            Some(SourceInput::Context) => {
                let context = self
                    .solver
                    .context
                    .context("this build has no context (PATH `-`), so COPY/ADD cannot read it")?;
                Some(SourceTree {
                    root: &context.root,
                    ignore: context.ignore.as_ref(),
                    is_context: true,
                })
            }
            Some(SourceInput::Layers(layers)) => {
                let dirs = self.solver.layer_dirs(layers)?;
                view = self.solver.snapshots.view(&dirs)?;
                Some(SourceTree {
                    root: view.root(),
                    ignore: None,
                    is_context: false,
                })
            }
        };
        let empty = SourceTree {
            root: scratch.path(),
            ignore: None,
            is_context: false,
        };
        let tree = tree.as_ref().unwrap_or(&empty);
        match file {
            FileOp::Copy(action) => fileop::copy(action, tree, root)?,
            FileOp::Add(action) => {
                let commits = self
                    .git_commits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                fileop::add(action, tree, root, scratch.path(), &commits)?
            }
            FileOp::Mkdir { path, user } => fileop::mkdir(path, user, root)?,
        }
        Ok(())
    }

    /// The input that feeds this step through an edge `pick` accepts.
    fn input_vertex(&self, pick: impl Fn(&Edge) -> bool) -> Option<NodeIndex> {
        self.graph
            .graph
            .edges_directed(self.index, Direction::Incoming)
            .find(|e| pick(e.weight()))
            .map(|e| e.source())
    }

    /// The vertex whose filesystem this step works on.
    fn rootfs_vertex(&self) -> Option<NodeIndex> {
        self.input_vertex(|e| matches!(e, Edge::Rootfs))
    }

    fn rootfs_input(&self) -> anyhow::Result<Vec<SolvedLayer>> {
        let input = self
            .rootfs_vertex()
            .context("a step without a root filesystem")?;
        match &self.inputs[&input].solved {
            Solved::Layers(layers) => Ok(layers.clone()),
            Solved::Context => bail!("a step whose root filesystem is the build context"),
        }
    }

    fn source_input(&self) -> Option<SourceInput> {
        let input = self.input_vertex(|e| matches!(e, Edge::Source))?;
        Some(match &self.inputs[&input].solved {
            Solved::Layers(layers) => SourceInput::Layers(layers.clone()),
            Solved::Context => SourceInput::Context,
        })
    }
}

enum SourceInput {
    Context,
    Layers(Vec<SolvedLayer>),
}

/// Vertices the `targets` depend on, inputs before the vertices that use them.
fn inputs_first(graph: &BuildGraph, targets: &[NodeIndex]) -> Vec<NodeIndex> {
    let mut order = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<(NodeIndex, bool)> = targets.iter().rev().map(|&t| (t, false)).collect();
    while let Some((v, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(v);
            continue;
        }
        if !seen.insert(v) {
            continue;
        }
        stack.push((v, true));
        for edge in graph.graph.edges_directed(v, Direction::Incoming) {
            if !seen.contains(&edge.source()) {
                stack.push((edge.source(), false));
            }
        }
    }
    order
}

/// A shebang heredoc runs as `/dev/pipes/NAME`: its body, mode 0755, bound read-only there.
fn heredoc_files(exec: &ExecOp, scratch: &Path) -> anyhow::Result<Vec<BindMount>> {
    let mut mounts = Vec::new();
    for doc in &exec.heredocs {
        let target = format!("/dev/pipes/{}", doc.name);
        if !exec.args.iter().any(|a| a == &target) {
            continue;
        }
        let path = scratch.join(format!("heredoc-{}", mounts.len()));
        let body = if doc.chomp {
            rbuild_frontend::parser::chomp_heredoc_content(&doc.content)
        } else {
            doc.content.clone()
        };
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        mounts.push(BindMount {
            source: path,
            target,
            readonly: true,
        });
    }
    Ok(mounts)
}

/// RUN output, to the reporter as the step's log.
struct StepOutput {
    vertex: VertexInfo,
}

impl OutputSink for StepOutput {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        let stream = match stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        reporter().log(&self.vertex, stream, bytes);
    }
}

/// A line of progress not tied to a step (registry transfers, warnings, the image written),
/// through the build's reporter.
pub(crate) fn progress(line: std::fmt::Arguments) {
    reporter().message(&line.to_string());
}
