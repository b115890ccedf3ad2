//! The local image store: names in `cache.db` pointing at manifests (or indexes) whose
//! configs and layers are blobs in the content store. `rbuild images/rmi/du/prune` live here,
//! with the automatic GC after a build.

mod commands;
mod gc;
mod load;
mod remote;
mod save;
mod units;

pub use commands::{human_size, images, rmi};
pub use gc::{auto_gc, du, prune};
pub use load::load;
pub use remote::{login, logout, pull, push};
pub use save::save;

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use rbuild_cache::db::ImageRecord;
use rbuild_cache::Digest;

use crate::state::State;
use rbuild_cache::image::children;
use rbuild_cache::image::media_types::{is_index, is_manifest};
use rbuild_cache::image::ImageName;

/// Every blob reachable from an image's top descriptor that is present in the store.
/// Missing children of an index (platforms never pulled) are skipped, as containerd does.
pub fn reachable(
    state: &State,
    top: &ImageRecord,
    seen: &mut BTreeSet<Digest>,
) -> anyhow::Result<()> {
    walk(state, top, seen, |_, _| Ok(()))
}

/// [`reachable`], calling `visit` with each newly seen blob that is present, and its media type.
pub fn walk(
    state: &State,
    top: &ImageRecord,
    seen: &mut BTreeSet<Digest>,
    mut visit: impl FnMut(&Digest, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stack = vec![(top.digest, top.media_type.clone())];
    while let Some((digest, media_type)) = stack.pop() {
        if !seen.insert(digest) || !state.content.contains(&digest) {
            continue;
        }
        visit(&digest, &media_type)?;
        if is_manifest(&media_type) || is_index(&media_type) {
            let bytes = state.content.read(&digest)?;
            let kids = children(&media_type, &digest, &bytes)?;
            stack.extend(kids.into_iter().map(|d| (d.digest, d.media_type)));
        }
    }
    Ok(())
}

/// Finds an image by name (`app:1.0`), full or short ID (config digest) or manifest digest.
pub fn find(state: &State, name: &str) -> anyhow::Result<(String, ImageRecord)> {
    if let Ok(reference) = name.parse::<ImageName>() {
        let full = reference.full();
        if reference.digest.is_none() {
            if let Some(record) = state.db.image(&full)? {
                return Ok((full, record));
            }
        }
    }
    let wanted = name.strip_prefix("sha256:").unwrap_or(name);
    if wanted.len() >= 4 && wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut found: Option<(String, ImageRecord)> = None;
        for (image_name, record) in state.db.images()? {
            let id = image_id(state, &record)?;
            if !record.digest.hex().starts_with(wanted) && !id.hex().starts_with(wanted) {
                continue;
            }
            // Several names of one image are fine; a prefix of two images must not pick one
            // at random for rmi or save.
            match &found {
                Some((first, r)) if r.digest != record.digest => bail!(
                    "{name} is ambiguous: it matches {first} ({}) and {image_name} ({}); \
                     give more of the ID",
                    r.digest,
                    record.digest
                ),
                Some(_) => {}
                None => found = Some((image_name, record)),
            }
        }
        if let Some(found) = found {
            return Ok(found);
        }
    }
    bail!("no such image: {name}")
}

/// Docker's image ID: the config digest of a single-platform image; an index is its own ID.
pub fn image_id(state: &State, record: &ImageRecord) -> anyhow::Result<Digest> {
    if !is_manifest(&record.media_type) {
        return Ok(record.digest);
    }
    let bytes = state.content.read(&record.digest)?;
    let config = children(&record.media_type, &record.digest, &bytes)?
        .into_iter()
        .next()
        .context("a manifest without a config")?;
    Ok(config.digest)
}
