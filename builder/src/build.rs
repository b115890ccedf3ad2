//! `rbuild build`: read and lower the Dockerfile, make the target stage's image in the content
//! store, and send it to every `--output`.
//!
//! Steps that change the filesystem (RUN, COPY, ADD, WORKDIR) need the executor and snapshots
//! of issue #4; until then a build whose target needs one stops with an error that says so.

use std::path::Path;

use anyhow::{bail, ensure, Context};
use rbuild_cache::image::{
    media_types, Blob, ContainerConfig, Descriptor, History, ImageConfig, Manifest, Platform,
};
use rbuild_frontend::graph::{BuildGraph, Op, StageNode};

use crate::bases::{BaseImage, StoreBases};
use crate::cli::BuildArgs;
use crate::export;
use crate::output::{Output, OutputSpec};
use crate::source::Source;
use crate::state::{Access, State};
use crate::timestamp;

/// BuildKit's history comment for steps of a Dockerfile.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

pub fn run(root: Option<&Path>, args: &BuildArgs) -> anyhow::Result<()> {
    let outputs = output_specs(args)?;
    let dockerfile_path = dockerfile_path(args)?;
    let source = Source::read(&dockerfile_path)?;
    let dockerfile = source.parse()?;
    // One platform at a time until multi-platform builds arrive (issue #7).
    ensure!(
        args.platforms.len() <= 1,
        "building for several platforms at once arrives with issue #7"
    );
    let platform = args.platforms.first().map(String::as_str);
    let options = crate::debug::lower_options(args.target.as_deref(), &args.build_args, platform)?;
    let state = State::open(root, Access::Shared)?;
    let bases = StoreBases::new(&state);
    let graph = source.lower_with(&dockerfile, &options, &bases)?;
    let stage = &graph.stages[&graph.target];
    let base = stage_base(&graph, stage, &bases)?;
    let created = created_time(args)?;
    let image = assemble(&state, stage, base.as_ref(), &created, args)?;
    eprintln!("writing image {} done", image.config_digest);
    for spec in &outputs {
        send(&state, &image, spec)?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image.config_digest.to_string())
            .with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        write_metadata(path, &image)?;
    }
    Ok(())
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
        if let Output::Image { push: true, .. } = spec.output {
            bail!("pushing to a registry is not implemented yet (issue #5); use type=image or type=oci");
        }
    }
    Ok(specs)
}

/// The target stage's root: scratch (`None`) or a base image. Every step between the root and
/// the stage's head must be a config change, since filesystem steps arrive with issue #4.
fn stage_base(
    graph: &BuildGraph,
    stage: &StageNode,
    bases: &StoreBases,
) -> anyhow::Result<Option<BaseImage>> {
    let head = &graph.graph[stage.head];
    match &head.op {
        Op::Scratch => Ok(None),
        Op::Image {
            reference,
            platform,
        } => bases.get(reference, platform).map(Some),
        Op::Exec(_) | Op::File(_) | Op::Context { .. } => bail!(
            "{}: running RUN, COPY, ADD and WORKDIR steps is not implemented yet (the executor \
             and snapshots arrive with issue #4)",
            head.name
        ),
    }
}

/// The image's `created` time: SOURCE_DATE_EPOCH (build-arg, then environment) or now.
fn created_time(args: &BuildArgs) -> anyhow::Result<String> {
    let epoch = args
        .build_args
        .iter()
        .rev()
        .find(|a| a.key == "SOURCE_DATE_EPOCH")
        .and_then(|a| a.value.clone())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|v| !v.is_empty());
    match epoch {
        Some(text) => {
            let secs: i64 = text.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds")
            })?;
            Ok(timestamp::rfc3339(secs, 0))
        }
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
}

fn assemble(
    state: &State,
    stage: &StageNode,
    base: Option<&BaseImage>,
    created: &str,
    args: &BuildArgs,
) -> anyhow::Result<BuiltImage> {
    let config = image_config(stage, base, created, args)?;
    let config = Blob::canonical(config)?;
    state.content.put(config.bytes())?;
    let layers = base
        .map(|b| {
            b.manifest
                .value()
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: media_types::to_oci(&l.media_type).to_string(),
                    ..l.clone()
                })
                .collect()
        })
        .unwrap_or_default();
    let manifest = Manifest::new_oci(config.descriptor(media_types::OCI_CONFIG), layers);
    let manifest = Blob::canonical(manifest)?;
    state.content.put(manifest.bytes())?;
    Ok(BuiltImage {
        manifest: manifest.descriptor(media_types::OCI_MANIFEST),
        config_digest: config.digest(),
    })
}

/// The config BuildKit would write: the stage's accumulated settings, the base's layers and
/// history, then one history entry per instruction of the stage.
fn image_config(
    stage: &StageNode,
    base: Option<&BaseImage>,
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
        config.rootfs.diff_ids = base.config.value().rootfs.diff_ids.clone();
        config.history = base.config.value().history.clone();
    }
    for step in &stage.history {
        config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(step.created_by.clone()),
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer: step.empty_layer,
            ..History::default()
        });
    }
    Ok(config)
}

fn send(state: &State, image: &BuiltImage, spec: &OutputSpec) -> anyhow::Result<()> {
    // New layers are made in the requested compression; base layers are recompressed only
    // when asked (`force-compression=true`), as BuildKit does.
    let recompressed;
    let manifest = if spec.options.force_compression {
        recompressed = export::recompressed(state, &image.manifest, spec.options.compression)?;
        &recompressed
    } else {
        &image.manifest
    };
    match &spec.output {
        Output::Image { names, .. } => {
            export::tag(state, manifest, names)?;
            for name in names {
                eprintln!("naming to {} done", export::store_name(name)?);
            }
            Ok(())
        }
        // The layout's index names the image by its first name, as BuildKit's does.
        Output::Oci { dest, tar, names } => {
            let first = names.iter().take(1).cloned().collect();
            export::write_oci(state, &[(manifest.clone(), first)], dest, *tar)
        }
        Output::Docker { dest, tar, names } => {
            ensure!(
                *tar,
                "type=docker,tar=false is not supported; use type=oci,tar=false for a directory"
            );
            export::write_docker(state, &[(manifest.clone(), names.clone())], dest)
        }
        Output::Local { dest } => export::write_rootfs_dir(state, manifest, dest),
        Output::Tar { dest } => export::write_rootfs_tar(state, manifest, dest),
    }
}

/// buildx's `--metadata-file` keys for an image build.
fn write_metadata(path: &Path, image: &BuiltImage) -> anyhow::Result<()> {
    let metadata = serde_json::json!({
        "containerimage.config.digest": image.config_digest.to_string(),
        "containerimage.digest": image.manifest.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": image.manifest.media_type,
            "digest": image.manifest.digest.to_string(),
            "size": image.manifest.size,
        },
    });
    let text = serde_json::to_string_pretty(&metadata)?;
    std::fs::write(path, text)
        .with_context(|| format!("writing --metadata-file {}", path.display()))
}

/// Where the Dockerfile comes from, as the user would write it: `-f` as given (relative to the
/// working directory, as buildx reads it), `-` for stdin, else `PATH/Dockerfile`. A context
/// of `-` means "the Dockerfile on stdin, no context".
fn dockerfile_path(args: &BuildArgs) -> anyhow::Result<String> {
    if args.context == "-" {
        ensure!(
            args.file.as_deref().is_none_or(|f| f == "-"),
            "PATH `-` reads the Dockerfile from stdin, so `--file` cannot name another one"
        );
        return Ok("-".to_string());
    }
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
