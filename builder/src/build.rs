//! `rbuild build`: read and lower the Dockerfile (once per `--platform`), import the shared
//! caches (`--cache-from`), solve the targets, assemble each platform's image in the content
//! store, send it to every `--output`, and export the caches (`--cache-to`).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use rbuild_cache::image::{
    media_types, Blob, ContainerConfig, Descriptor, History, ImageConfig, ImageName, Manifest,
    Platform,
};
use rbuild_cache::layer::{Compression, LayerOptions};
use rbuild_cache::Digest;
use rbuild_frontend::graph::{BuildGraph, Edge, Op, StageNode};

use crate::bases::{BaseImage, StoreBases};
use crate::cli::{BuildArgs, SnapshotterChoice};
use crate::executor::{Executor, Runc};
use crate::export;
use crate::fileop::IgnoreRules;
use crate::output::{Output, OutputSpec};
use crate::shared_cache::{self, ImportedCache};
use crate::snapshot::{Snapshots, SnapshotterKind};
use crate::solve::{progress, BuildContext, SolvedLayer, Solver};
use crate::source::Source;
use crate::state::{Access, State};
use crate::timestamp;

/// BuildKit's history comment for steps of a Dockerfile.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

pub fn run(root: Option<&Path>, args: &BuildArgs) -> anyhow::Result<()> {
    crate::progress::install(if args.quiet {
        crate::cli::Progress::Quiet
    } else {
        args.progress
    });
    let built = build(root, args);
    let image_id = built.as_ref().ok().map(|id| id.to_string());
    // An output on stdout (`-o type=tar,dest=-`) owns it: the image ID goes to stderr there.
    match (&image_id, writes_stdout(args)) {
        (Some(id), true) if args.quiet || args.progress == crate::cli::Progress::Quiet => {
            crate::progress::current().finished(None);
            eprintln!("{id}");
        }
        _ => crate::progress::current().finished(image_id.as_deref()),
    }
    if built.is_ok() {
        crate::images::auto_gc(root);
    }
    built.map(|_| ())
}

/// Whether an `--output` streams to stdout.
fn writes_stdout(args: &BuildArgs) -> bool {
    output_specs(args).is_ok_and(|specs| {
        specs.iter().any(|spec| match &spec.output {
            Output::Tar { dest } | Output::Oci { dest, .. } | Output::Docker { dest, .. } => {
                *dest == crate::output::Destination::Stdout
            }
            _ => false,
        })
    })
}

/// The build itself; returns the image ID (the config digest, or the index digest of a
/// build for several platforms).
fn build(root: Option<&Path>, args: &BuildArgs) -> anyhow::Result<rbuild_cache::Digest> {
    let outputs = output_specs(args)?;
    let allow_insecure = entitlements(&args.allow)?;
    let secrets = crate::build_secrets::Secrets::read(&args.secrets)?;
    let ssh = crate::build_secrets::SshAgents::start(&args.ssh)?;
    let cache_sources = args
        .cache_from
        .iter()
        .map(|s| shared_cache::parse_source(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_exports = args
        .cache_to
        .iter()
        .map(|s| shared_cache::parse_export(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let inline_cache = cache_exports
        .iter()
        .any(|e| e.target == shared_cache::CacheTarget::Inline);
    let network = build_network(args)?;
    let state = State::open(root, Access::Shared)?;
    let inputs = read_inputs(args, &state)?;
    let source = &inputs.source;
    let dockerfile = source.parse()?;
    let platforms = crate::multiplatform::target_platforms(&args.platforms)?;
    let bases = StoreBases::new(
        &state,
        args.registry.options(args.max_concurrent_uploads),
        args.pull,
    );
    let builds = crate::multiplatform::lower(source, &dockerfile, args, &platforms, &bases)?;
    // Every build shares one merged graph: a vertex two platforms need is solved once.
    let graph = &builds[0];
    let created = created_time(args)?;
    let snapshots = Snapshots::open(&state.root, snapshotter_kind(args.snapshotter))?;
    let emulators = run_emulators(graph, args)?;
    let executor = executor_for(graph, &state)?;
    // Steps commit uncompressed layers; outputs compress them (once per layer) as they need.
    // SOURCE_DATE_EPOCH clamps the mtimes in new layers too, so two builds give one digest.
    let layer_options = LayerOptions {
        compression: Compression::None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        source_date_epoch: epoch_seconds(args)?,
    };
    let mut solver = Solver::new(
        &state,
        &snapshots,
        executor.as_ref(),
        &bases,
        inputs.context.as_ref(),
        layer_options,
    );
    solver.no_cache = uncached_steps(&builds, args)?;
    solver.scope = format!("{}\n{}", args.context, dockerfile_scope(args));
    solver.jobs = args.jobs.unwrap_or(solver.jobs);
    solver.network = network;
    solver.emulators = emulators;
    solver.secrets = Some(&secrets);
    solver.ssh = Some(&ssh);
    solver.allow_insecure = allow_insecure;
    // What each image is for: the platform asked for, else its last stage's.
    let build_platforms: Vec<_> = builds
        .iter()
        .zip(&platforms)
        .map(|(b, asked)| {
            asked
                .clone()
                .unwrap_or_else(|| b.stages[&b.target].platform.clone())
        })
        .collect();
    let imported = match cache_sources.is_empty() {
        true => ImportedCache::default(),
        false => ImportedCache::load(&state, &bases, &cache_sources, &build_platforms),
    };
    solver.imported = Some(&imported);
    let heads: Vec<NodeIndex> = builds.iter().map(|b| b.stages[&b.target].head).collect();
    let solved = solve_past_unusable_layers(&mut solver, graph, &heads)?;
    imported.report();
    // A signal during the last step: stop here rather than export a half-wanted image.
    ensure!(!crate::interrupt::interrupted(), "interrupted");
    let mut images = Vec::new();
    for (((build, solution), target), head) in builds
        .iter()
        .zip(&solved.solutions)
        .zip(&platforms)
        .zip(&heads)
    {
        let mut stage = build.stages[&build.target].clone();
        let base = root_base(build, &stage, &bases)?;
        // An image built for a platform the user named is that platform's, whatever its
        // last stage's FROM --platform says (as BuildKit labels an explicit target).
        if let Some(target) = target {
            stage.platform = target.clone();
        }
        let inline = inline_cache.then(|| {
            let chain = shared_cache::final_chain(graph, std::slice::from_ref(head));
            shared_cache::inline_graph(&solved.steps, &chain)
        });
        images.push(assemble(
            &state,
            &imported,
            &stage,
            base.as_ref(),
            &solution.layers,
            &solution.empty_steps,
            &created,
            inline,
            args,
        )?);
    }
    let built = images;
    // Each output's form of the result (layers compressed as it wants), made before any is
    // written; the first one's names the result.
    let prepared = outputs
        .iter()
        .map(|spec| prepare(&state, &built, spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let top = prepared[0].0.clone();
    let id = match built.as_slice() {
        [one] => one.config_digest,
        _ => top.digest,
    };
    progress(format_args!("writing image {id} done"));
    for (spec, (top, children)) in outputs.iter().zip(&prepared) {
        write_output(&state, top, children, spec, &bases)?;
    }
    let configs: Vec<_> = built
        .iter()
        .map(|b| (b.config_key, b.config_digest))
        .collect();
    let export_inputs = shared_cache::ExportInputs {
        graph,
        heads: &heads,
        steps: &solved.steps,
        configs: &configs,
        unusable: &solver.unusable,
    };
    for export in &cache_exports {
        shared_cache::export(&state, &bases, &imported, export, &export_inputs)?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, id.to_string())
            .with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let names: Vec<&str> = outputs
            .iter()
            .flat_map(|spec| match &spec.output {
                Output::Image { names, .. }
                | Output::Oci { names, .. }
                | Output::Docker { names, .. } => names.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
            .collect();
        write_metadata(path, &built, &top, &names)?;
    }
    Ok(id)
}

/// The Dockerfile and the build context, as the user gave them.
struct Inputs {
    source: Source,
    context: Option<BuildContext>,
    /// Holds a context that came as a tar on stdin, extracted, for the build's duration.
    _extracted: Option<tempfile::TempDir>,
}

/// PATH is a directory, or `-`: stdin holds either a Dockerfile (no context) or a tar of the
/// context (plain, gzip or zstd), as `docker build -` reads it.
fn read_inputs(args: &BuildArgs, state: &State) -> anyhow::Result<Inputs> {
    if args.context != "-" {
        let path = dockerfile_path(args)?;
        let source = Source::read(&path)?;
        let context = build_context(Path::new(&args.context), &path)?;
        return Ok(Inputs {
            source,
            context: Some(context),
            _extracted: None,
        });
    }
    // Spooled to a file first: a context tar may be large, and telling a tar from a
    // Dockerfile means looking into it (decompressed).
    let spool = state.scratch().join("stdin");
    let mut file =
        std::fs::File::create(&spool).with_context(|| format!("creating {}", spool.display()))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading stdin")?;
    drop(file);
    if !crate::fileop::is_archive(&spool) {
        ensure!(
            args.file.as_deref().is_none_or(|f| f == "-"),
            "PATH `-` reads the Dockerfile from stdin, so `--file` cannot name another one"
        );
        let source = Source {
            name: crate::source::STDIN_NAME.to_string(),
            bytes: std::fs::read(&spool).context("reading the Dockerfile from stdin")?,
        };
        return Ok(Inputs {
            source,
            context: None,
            _extracted: None,
        });
    }
    let dir = state.temp_dir()?;
    crate::fileop::untar_context(&spool, dir.path())?;
    let name = args
        .file
        .clone()
        .unwrap_or_else(|| "Dockerfile".to_string());
    let inside = dir.path().join(&name);
    let source = Source {
        bytes: std::fs::read(&inside).with_context(|| {
            format!("cannot read the Dockerfile {name:?} in the context from stdin")
        })?,
        name,
    };
    let context = build_context(dir.path(), &inside.to_string_lossy())?;
    Ok(Inputs {
        source,
        context: Some(context),
        _extracted: Some(dir),
    })
}

/// The build context directory and its ignore file: `<Dockerfile>.dockerignore` beside the
/// Dockerfile wins over `.dockerignore` at the context's root, as BuildKit reads them.
fn build_context(root: &Path, dockerfile_path: &str) -> anyhow::Result<BuildContext> {
    let candidates = [
        PathBuf::from(format!("{dockerfile_path}.dockerignore")),
        root.join(".dockerignore"),
    ];
    let mut ignore = None;
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let name = path.to_string_lossy().into_owned();
                ignore = Some(IgnoreRules::parse(&bytes, &name)?);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())))
            }
        }
    }
    Ok(BuildContext {
        root: root.to_path_buf(),
        ignore,
    })
}

/// `--output` values, or the local image store (with the `-t` names) when there are none.
fn output_specs(args: &BuildArgs) -> anyhow::Result<Vec<OutputSpec>> {
    let mut specs = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o, &args.tags))
        .collect::<Result<Vec<_>, _>>()?;
    if args.push {
        specs.push(OutputSpec::parse("type=image,push=true", &args.tags)?);
    }
    if specs.is_empty() {
        specs.push(OutputSpec::parse("type=image", &args.tags)?);
    }
    for spec in &specs {
        if let Output::Image {
            push: true, names, ..
        } = &spec.output
        {
            ensure!(
                !names.is_empty(),
                "pushing needs a name for the image: give one with -t or name="
            );
        }
    }
    Ok(specs)
}

/// Flags buildx takes that rbuild does not implement yet: refused rather than ignored, so a
/// build never seems to do what it did not.
/// Whether `imported` (an imported cache's config) may stand for the config this build makes,
/// `timeless` without its times: equal but for the times of this stage's own history entries
/// and `created` (the base's entries are the base's), or, with SOURCE_DATE_EPOCH, byte for byte.
fn accepts_imported(
    imported: &str,
    timeless: &Blob<ImageConfig>,
    base: Option<&BaseImage>,
    epoch: bool,
) -> bool {
    if epoch {
        return imported.as_bytes() == timeless.bytes();
    }
    let Ok(mut config) = serde_json::from_str::<ImageConfig>(imported) else {
        return false;
    };
    let want = timeless.value();
    if config.history.len() != want.history.len() {
        return false;
    }
    let own_from = base.map_or(0, |b| b.config.value().history.len());
    config.created = want.created.clone();
    for (entry, wanted) in config.history.iter_mut().zip(&want.history).skip(own_from) {
        entry.created = wanted.created.clone();
    }
    config == *want
}

/// `--allow`: whether `security.insecure` is among them (`network.host` is allowed anyway:
/// RUN steps get the host's network by default).
fn entitlements(allow: &[String]) -> anyhow::Result<bool> {
    let mut insecure = false;
    for entitlement in allow {
        match entitlement.trim() {
            "security.insecure" => insecure = true,
            "network.host" => {}
            other => bail!(
                "--allow {other}: unknown entitlement (expected security.insecure or network.host)"
            ),
        }
    }
    Ok(insecure)
}

/// Solves the targets; when a layer a cache hit promised cannot be had (missing or corrupt in
/// the imported cache, damaged here), says so and solves again without the records that name
/// it: what already ran is a hit in the local cache by then, so little runs twice.
fn solve_past_unusable_layers(
    solver: &mut Solver,
    graph: &BuildGraph,
    heads: &[NodeIndex],
) -> anyhow::Result<crate::solve::SolveResult> {
    loop {
        match solver.solve(graph, heads) {
            Ok(solved) => return Ok(solved),
            Err(e) => {
                let Some(unusable) = e.downcast_ref::<shared_cache::UnusableLayer>() else {
                    return Err(e);
                };
                if crate::interrupt::interrupted() || !solver.unusable.insert(unusable.blob) {
                    return Err(e);
                }
                // Nothing was cancelled for it (see `Solver::solve`): solve again at once.
                progress(format_args!(
                    "WARNING: {unusable}; the steps that made it run again"
                ));
            }
        }
    }
}

/// `--network`: the network of RUN steps that name none.
fn build_network(args: &BuildArgs) -> anyhow::Result<crate::executor::Network> {
    Ok(match args.network.as_str() {
        "default" | "host" => crate::executor::Network::Host,
        "none" => crate::executor::Network::None,
        other => bail!("--network={other}: expected default, host or none"),
    })
}

/// The steps `--no-cache` (all) or `--no-cache-filter STAGE` (that stage's) make run, in the
/// builds of every platform.
fn uncached_steps(
    builds: &[BuildGraph],
    args: &BuildArgs,
) -> anyhow::Result<std::collections::BTreeSet<NodeIndex>> {
    let mut steps = std::collections::BTreeSet::new();
    for stage in builds.iter().flat_map(|b| b.stages.values()) {
        let named = args
            .no_cache_filter
            .iter()
            .any(|f| stage.name.as_deref() == Some(f.as_str()) || *f == stage.index.to_string());
        if args.no_cache || named {
            steps.extend(stage.vertices.iter().copied());
        }
    }
    Ok(steps)
}

/// The Dockerfile as the step history knows it: its path, or `-` for stdin.
fn dockerfile_scope(args: &BuildArgs) -> String {
    let dockerfile = args.file.clone().unwrap_or_else(|| "Dockerfile".into());
    match std::fs::canonicalize(&args.context) {
        Ok(context) => format!("{}\n{dockerfile}", context.display()),
        Err(_) => dockerfile,
    }
}

/// The target stage's root image (`None` for scratch), whose config and history the image
/// continues: follow the root filesystem edges down from the stage's head.
fn root_base(
    graph: &BuildGraph,
    stage: &StageNode,
    bases: &StoreBases,
) -> anyhow::Result<Option<BaseImage>> {
    let mut vertex = stage.head;
    loop {
        match &graph.graph[vertex].op {
            Op::Scratch => return Ok(None),
            Op::Image {
                reference,
                platform,
            } => return bases.get(reference, platform).map(Some),
            _ => {}
        }
        vertex = graph
            .graph
            .edges_directed(vertex, Direction::Incoming)
            .find(|e| matches!(e.weight(), Edge::Rootfs))
            .map(|e| e.source())
            .context("a step without a root filesystem")?;
    }
}

/// How the RUN steps of each platform will run: through an `--emulator` hook (the path), or
/// natively / through binfmt_misc (`None`), or the reason they cannot run here, which a RUN
/// of that platform reports when it is about to run (a rebuild whose steps all hit needs no
/// emulator).
fn run_emulators(graph: &BuildGraph, args: &BuildArgs) -> anyhow::Result<crate::solve::Emulation> {
    // The host's own platform needs no emulator (nor the config file naming them).
    let host = rbuild_frontend::platform::Platform::host();
    let platforms: std::collections::BTreeSet<_> = graph
        .graph
        .node_weights()
        .filter_map(|v| match &v.op {
            Op::Exec(exec)
                if exec.platform.os != "linux"
                    || !crate::emulation::runs_natively(
                        &host.architecture,
                        &exec.platform.architecture,
                    ) =>
            {
                Some(exec.platform.clone())
            }
            _ => None,
        })
        .collect();
    let mut plan = crate::solve::Emulation::new();
    if platforms.is_empty() {
        return Ok(plan);
    }
    let emulators = crate::emulation::Emulators::load(&args.emulators)?;
    for platform in platforms {
        let how = match emulators.for_platform(&platform) {
            Ok(crate::emulation::Execution::Hook(path)) => Ok(Some(path)),
            Ok(_) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        plan.insert(platform, how);
    }
    Ok(plan)
}

/// runc when the build runs a RUN; otherwise nothing is needed (config-only images build
/// without a container runtime).
fn executor_for(graph: &BuildGraph, state: &State) -> anyhow::Result<Box<dyn Executor>> {
    let runs = graph
        .graph
        .node_indices()
        .any(|v| matches!(graph.graph[v].op, Op::Exec(_)));
    if !runs {
        return Ok(Box::new(NoRuntime));
    }
    // Bundles live in this process's scratch, so a killed rbuild's are found and reaped.
    Ok(Box::new(Runc::new(
        &state.root.join("runc"),
        state.scratch(),
    )?))
}

/// The executor of builds without RUN steps: never called.
struct NoRuntime;

impl Executor for NoRuntime {
    fn run(
        &self,
        _: &Path,
        _: &crate::executor::RunSpec,
        _: &mut dyn crate::executor::OutputSink,
    ) -> Result<(), crate::executor::ExecError> {
        unreachable!("a build without RUN steps runs no process")
    }
}

fn snapshotter_kind(choice: SnapshotterChoice) -> SnapshotterKind {
    match choice {
        SnapshotterChoice::Auto => SnapshotterKind::Auto,
        SnapshotterChoice::Overlay => SnapshotterKind::Overlay,
        SnapshotterChoice::Native => SnapshotterKind::Native,
    }
}

/// SOURCE_DATE_EPOCH as the build takes it: the build-arg, then the environment; empty is
/// unset.
fn source_date_epoch(args: &BuildArgs) -> Option<String> {
    args.build_args
        .iter()
        .rev()
        .find(|a| a.key == "SOURCE_DATE_EPOCH")
        .and_then(|a| a.value.clone())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|v| !v.is_empty())
}

/// SOURCE_DATE_EPOCH in seconds, when it is set.
fn epoch_seconds(args: &BuildArgs) -> anyhow::Result<Option<i64>> {
    source_date_epoch(args)
        .map(|text| {
            text.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds"))
        })
        .transpose()
}

/// The image's `created` time: SOURCE_DATE_EPOCH or now.
fn created_time(args: &BuildArgs) -> anyhow::Result<String> {
    match epoch_seconds(args)? {
        Some(secs) => Ok(timestamp::rfc3339(secs, 0)),
        None => {
            let (secs, nanos) = timestamp::now();
            Ok(timestamp::rfc3339(secs, nanos))
        }
    }
}

/// The image, in the content store.
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config_digest: rbuild_cache::Digest,
    /// The key the config is recorded under (its time-free form's digest), for cache exports.
    pub config_key: rbuild_cache::Digest,
    /// How many of the layers come from the base image (the rest this build made).
    pub base_layers: usize,
    pub platform: Platform,
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    state: &State,
    imported: &ImportedCache,
    stage: &StageNode,
    base: Option<&BaseImage>,
    solved: &[SolvedLayer],
    empty_steps: &std::collections::BTreeSet<petgraph::stable_graph::NodeIndex>,
    created: &str,
    inline_cache: Option<serde_json::Value>,
    args: &BuildArgs,
) -> anyhow::Result<BuiltImage> {
    let make = |created: &str| -> anyhow::Result<Blob<ImageConfig>> {
        let mut config = image_config(stage, base, empty_steps, created, args)?;
        config.rootfs.diff_ids = solved.iter().map(|l| *l.diff_id()).collect();
        if let Some(inline) = &inline_cache {
            config.extra.insert(
                rbuild_cache::cache_graph::INLINE_CONFIG_FIELD.into(),
                inline.clone(),
            );
        }
        pair_history_with_layers(&mut config.history, solved.len());
        Ok(Blob::canonical(config)?)
    };
    // An unchanged rebuild gives the image it gave before (BuildKit does too): the config is
    // recorded by everything but its times, and reused with the times of its first build.
    let epoch = source_date_epoch(args).is_some();
    let timeless = make(if epoch { created } else { "" })?;
    let key = Digest::of(&[b"image config v1\n".as_slice(), timeless.bytes()].concat());
    let earlier = match args.no_cache {
        true => None,
        false => match state.db.built_config(&key)? {
            Some(digest) => Some(digest),
            // The exporting build's config, times and all: the same image digest as there.
            None => match imported.config(&key) {
                Some(text) if accepts_imported(text, &timeless, base, epoch) => {
                    let digest = state.content.put(text.as_bytes())?;
                    state.db.set_built_config(&key, &digest)?;
                    Some(digest)
                }
                _ => None,
            },
        },
    };
    let config = match earlier.filter(|digest| state.content.contains(digest)) {
        Some(digest) => Blob::parse(state.content.read(&digest)?)?,
        None => {
            let config = make(created)?;
            state.content.put(config.bytes())?;
            state.db.set_built_config(&key, &config.digest())?;
            config
        }
    };
    let layers = solved.iter().map(|l| l.blob.clone()).collect();
    let manifest = Manifest::new_oci(config.descriptor(media_types::OCI_CONFIG), layers);
    let manifest = Blob::canonical(manifest)?;
    state.content.put(manifest.bytes())?;
    Ok(BuiltImage {
        manifest: manifest.descriptor(media_types::OCI_MANIFEST),
        config_digest: config.digest(),
        config_key: key,
        base_layers: base.map_or(0, |b| b.manifest.value().layers.len()),
        platform: config.value().platform(),
    })
}

/// The config BuildKit would write: the stage's accumulated settings, the base's layers and
/// history, then one history entry per instruction of the stage.
fn image_config(
    stage: &StageNode,
    base: Option<&BaseImage>,
    empty_steps: &std::collections::BTreeSet<petgraph::stable_graph::NodeIndex>,
    created: &str,
    args: &BuildArgs,
) -> anyhow::Result<ImageConfig> {
    let p = &stage.platform;
    let platform = Platform::new(
        &p.os,
        &p.architecture,
        Some(p.variant.as_str()).filter(|v| !v.is_empty()),
    );
    let mut config = ImageConfig::new_for(&platform);
    config.created = Some(created.to_string());
    let mut stage_config = stage.config.clone();
    for label in &args.labels {
        stage_config
            .labels
            .insert(label.key.clone(), label.value.clone());
    }
    if !stage_config.author.is_empty() {
        config.author = Some(std::mem::take(&mut stage_config.author));
    }
    let container: ContainerConfig = serde_json::from_value(serde_json::to_value(&stage_config)?)?;
    config.config = Some(container);
    if let Some(base) = base {
        config.history = base.config.value().history.clone();
    }
    for step in &stage.history {
        config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(step.created_by.clone()),
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer: step.empty_layer || step.vertex.is_some_and(|v| empty_steps.contains(&v)),
            ..History::default()
        });
    }
    Ok(config)
}

/// One history entry per layer, as BuildKit's exporter ensures: entries claiming more layers
/// than there are become empty from the bottom; missing ones are added.
fn pair_history_with_layers(history: &mut Vec<History>, layers: usize) {
    let mut claimed = 0;
    for entry in history.iter_mut() {
        if claimed >= layers {
            entry.empty_layer = true;
        }
        if !entry.empty_layer {
            claimed += 1;
        }
    }
    for _ in claimed..layers {
        history.push(History {
            created_by: Some("created by rbuild".to_string()),
            comment: Some("buildkit.exporter.image.v0".to_string()),
            ..History::default()
        });
    }
}

/// The result as `spec`'s output holds it: its manifest or index, and the manifest of each
/// platform. The build's own layers take the output's compression (made here once per layer
/// and remembered); base layers are recompressed only when asked (`force-compression=true`),
/// as BuildKit does.
fn prepare(
    state: &State,
    built: &[BuiltImage],
    spec: &OutputSpec,
) -> anyhow::Result<(Descriptor, Vec<(Descriptor, Platform)>)> {
    let mut children = Vec::new();
    for image in built {
        let from = match spec.options.force_compression {
            true => 0,
            false => image.base_layers,
        };
        let manifest = match spec.options.compression_for(&spec.output) {
            Some(compression) => export::recompressed(state, &image.manifest, compression, from)?,
            None => image.manifest.clone(),
        };
        children.push((manifest, image.platform.clone()));
    }
    let top = match children.as_slice() {
        [(one, _)] => one.clone(),
        _ => export::put_index(state, &children)?,
    };
    Ok((top, children))
}

fn write_output(
    state: &State,
    top: &Descriptor,
    children: &[(Descriptor, Platform)],
    spec: &OutputSpec,
    bases: &StoreBases,
) -> anyhow::Result<()> {
    let multi = children.len() > 1;
    match &spec.output {
        Output::Image { names, push } => {
            export::tag(state, top, names)?;
            for name in names {
                progress(format_args!("naming to {} done", export::store_name(name)?));
            }
            if *push {
                let names = names
                    .iter()
                    .map(|n| n.parse::<ImageName>())
                    .collect::<Result<Vec<_>, _>>()?;
                bases.registry()?.push(state, top, &names)?;
            }
            Ok(())
        }
        // The layout's index names the image by its first name, as BuildKit's does.
        Output::Oci { dest, tar, names } => {
            let first = names.iter().take(1).cloned().collect();
            export::write_oci(state, &[(top.clone(), first)], dest, *tar)
        }
        Output::Docker { .. } if multi => bail!(
            "type=docker holds one platform, and this build made {}; use type=oci or type=image",
            children.len()
        ),
        Output::Docker { dest, tar, names } => {
            ensure!(
                *tar,
                "type=docker,tar=false is not supported; use type=oci,tar=false for a directory"
            );
            export::write_docker(state, &[(top.clone(), names.clone())], dest)
        }
        Output::Local { dest } => {
            for (manifest, dir) in rootfs_parts(children, multi) {
                export::write_rootfs_dir(state, &manifest, &dest.join(dir))?;
            }
            Ok(())
        }
        Output::Tar { dest } => {
            export::write_rootfs_tar(state, &rootfs_parts(children, multi), dest)
        }
    }
}

/// Where each platform's rootfs goes in a local or tar output: the top for one platform, a
/// directory per platform (`linux_arm64`, `linux_arm_v7`) for several, as BuildKit splits them.
fn rootfs_parts(children: &[(Descriptor, Platform)], multi: bool) -> Vec<(Descriptor, PathBuf)> {
    children
        .iter()
        .map(|(manifest, platform)| {
            let dir = match multi {
                true => platform_dir(platform),
                false => PathBuf::new(),
            };
            (manifest.clone(), dir)
        })
        .collect()
}

fn platform_dir(platform: &Platform) -> PathBuf {
    let mut name = format!("{}_{}", platform.os, platform.architecture);
    if let Some(variant) = platform.variant.as_deref().filter(|v| !v.is_empty()) {
        name = format!("{name}_{variant}");
    }
    PathBuf::from(name)
}

/// buildx's `--metadata-file` keys for an image build: `top` is what the first output holds
/// (an index has no config digest); `image.name` lists the names the outputs gave it.
fn write_metadata(
    path: &Path,
    built: &[BuiltImage],
    top: &Descriptor,
    names: &[&str],
) -> anyhow::Result<()> {
    let mut metadata = serde_json::json!({
        "containerimage.digest": top.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": top.size,
        },
    });
    if !names.is_empty() {
        metadata["image.name"] = serde_json::Value::String(names.join(","));
    }
    if let [one] = built {
        metadata["containerimage.config.digest"] =
            serde_json::Value::String(one.config_digest.to_string());
    }
    let text = serde_json::to_string_pretty(&metadata)?;
    std::fs::write(path, text)
        .with_context(|| format!("writing --metadata-file {}", path.display()))
}

/// Where the Dockerfile comes from, as the user would write it: `-f` as given (relative to the
/// working directory, as buildx reads it), `-` for stdin, else `PATH/Dockerfile`. A context
/// of `-` means "the Dockerfile on stdin, no context".
fn dockerfile_path(args: &BuildArgs) -> anyhow::Result<String> {
    let context = Path::new(&args.context);
    if !context.exists() {
        bail!(
            "unable to prepare context: path {:?} not found",
            args.context
        );
    }
    if !context.is_dir() {
        bail!(
            "unable to prepare context: {:?} is not a directory",
            args.context
        );
    }
    if let Some(file) = &args.file {
        return Ok(file.clone());
    }
    let joined = context.join("Dockerfile");
    let joined = joined.strip_prefix(".").unwrap_or(&joined);
    Ok(joined.to_string_lossy().into_owned())
}
