//! `rbuild load`: an OCI layout tar or a docker archive (stdin or `-i FILE`) into the store.

use std::collections::BTreeSet;
use std::io::{self, Seek};
use std::path::Path;

use anyhow::{bail, Context};
use rbuild_cache::image::docker_archive::read_docker_archive;
use rbuild_cache::image::oci_layout::read_oci_tar;
use rbuild_cache::image::{
    config, media_types, Blob, Descriptor, ImageConfig, ImageName, Manifest,
};
use rbuild_cache::Digest;

use crate::cli::LoadArgs;
use crate::export::{open_input, tag};
use crate::state::State;
use rbuild_cache::image::children;

pub fn load(state: &State, args: &LoadArgs) -> anyhow::Result<()> {
    // A docker archive lists its manifest.json after the layers, so it is read from a file
    // that can be searched; stdin is spooled into the state root's scratch space first.
    let scratch;
    let path = match &args.input {
        Some(path) => path.clone(),
        None => {
            scratch = tempfile::NamedTempFile::new_in(state.scratch())?;
            io::copy(&mut io::stdin().lock(), &mut scratch.as_file())
                .context("reading the archive from stdin")?;
            scratch.path().to_path_buf()
        }
    };
    let loaded = match archive_kind(&path)? {
        ArchiveKind::Oci => load_oci(state, &path)?,
        ArchiveKind::Docker => load_docker(state, &path)?,
    };
    for (descriptor, names) in loaded {
        tag(state, &descriptor, &names)?;
        if names.is_empty() {
            println!("Loaded image ID: {}", descriptor.digest);
        }
        for name in names {
            println!("Loaded image: {}", name.parse::<ImageName>()?.familiar());
        }
    }
    Ok(())
}

enum ArchiveKind {
    Oci,
    Docker,
}

/// An `index.json` makes it an OCI layout (Docker ≥ 25 writes one beside `manifest.json`,
/// and reading it keeps manifest digests); `manifest.json` alone, a classic docker archive.
fn archive_kind(path: &Path) -> anyhow::Result<ArchiveKind> {
    let name = path.display();
    let mut archive = tar::Archive::new(open_input(path)?);
    let (mut index, mut manifest) = (false, false);
    for entry in archive
        .entries_with_seek()
        .with_context(|| format!("{name} is not a tar archive"))?
    {
        let entry = entry.with_context(|| format!("reading {name}: not a valid tar"))?;
        match entry.path()?.to_string_lossy().trim_start_matches("./") {
            "index.json" => index = true,
            "manifest.json" => manifest = true,
            _ => {}
        }
    }
    match (index, manifest) {
        (true, _) => Ok(ArchiveKind::Oci),
        (false, true) => Ok(ArchiveKind::Docker),
        (false, false) => bail!(
            "{name} is neither an OCI layout (no index.json) nor a docker archive (no manifest.json)"
        ),
    }
}

fn load_oci(state: &State, path: &Path) -> anyhow::Result<Vec<(Descriptor, Vec<String>)>> {
    let mut file = open_input(path)?;
    file.rewind()?;
    let layout = read_oci_tar(io::BufReader::with_capacity(1 << 20, file), &state.content)
        .with_context(|| format!("loading {}", path.display()))?;
    let mut out = Vec::new();
    for image in layout.images() {
        check_complete(state, &image.descriptor)
            .with_context(|| format!("loading {}", path.display()))?;
        let names = image
            .image_name
            .clone()
            .or_else(|| image.ref_name.clone().filter(|r| r.contains([':', '/'])))
            .into_iter()
            .collect();
        out.push((image.descriptor, names));
    }
    Ok(out)
}

fn load_docker(state: &State, path: &Path) -> anyhow::Result<Vec<(Descriptor, Vec<String>)>> {
    let images = read_docker_archive(path, &state.content)
        .with_context(|| format!("loading {}", path.display()))?;
    let mut out = Vec::new();
    for image in images {
        let manifest = image.manifest;
        state.content.put(manifest.bytes())?;
        config::validate(&manifest, &image.config)?;
        out.push((manifest.descriptor(media_types::OCI_MANIFEST), image.names));
    }
    Ok(out)
}

/// Every blob the image names arrived, and each manifest agrees with its config: a loaded
/// image is never tagged half-present.
fn check_complete(state: &State, top: &Descriptor) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(Digest, String)> = vec![(top.digest, top.media_type.clone())];
    while let Some((digest, media_type)) = stack.pop() {
        if !seen.insert(digest) {
            continue;
        }
        if !state.content.contains(&digest) {
            bail!("the archive lacks blob {digest} ({media_type})");
        }
        // Layers and configs name nothing: only manifests and indexes are read, once.
        if !media_types::is_manifest(&media_type) && !media_types::is_index(&media_type) {
            continue;
        }
        let bytes = state.content.read(&digest)?;
        if media_types::is_manifest(&media_type) {
            let manifest: Blob<Manifest> = Blob::parse(bytes.clone())?;
            let config: Blob<ImageConfig> =
                Blob::parse(state.content.read(&manifest.value().config.digest)?)?;
            config::validate(&manifest, &config)?;
        }
        let kids = children(&media_type, &digest, &bytes)?;
        stack.extend(kids.into_iter().map(|d| (d.digest, d.media_type)));
    }
    Ok(())
}
