//! The local image store: names in `cache.db` pointing at manifests (or indexes) whose
//! configs and layers are blobs in the content store. `rbuild images/rmi/du/prune` live here.

mod commands;
mod load;
mod save;

pub use commands::{du, images, prune, rmi};
pub use load::load;
pub use save::save;

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use rbuild_cache::db::ImageRecord;
use rbuild_cache::Digest;

use crate::state::State;
use rbuild_cache::image::media_types::{is_index, is_manifest};
use rbuild_cache::image::ImageName;

/// The blobs a manifest or index names directly (config, layers, child manifests), with
/// their media types. Unknown media types have no children (they are leaves: layers,
/// configs, attestations' blobs…).
pub fn children(media_type: &str, bytes: &[u8]) -> anyhow::Result<Vec<(Digest, String)>> {
    if !is_manifest(media_type) && !is_index(media_type) {
        return Ok(Vec::new());
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{media_type} is not valid JSON"))?;
    let mut out = Vec::new();
    let descriptors = ["config", "subject"]
        .iter()
        .filter_map(|k| value.get(k))
        .chain(["layers", "manifests", "blobs"].iter().flat_map(|k| {
            value
                .get(k)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
        }));
    for descriptor in descriptors {
        let digest = descriptor
            .get("digest")
            .and_then(|d| d.as_str())
            .context("a descriptor without a digest")?;
        let child_type = descriptor
            .get("mediaType")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        out.push((digest.parse()?, child_type.to_string()));
    }
    Ok(out)
}

/// Every blob reachable from an image's top descriptor that is present in the store.
/// Missing children of an index (platforms never pulled) are skipped, as containerd does.
pub fn reachable(
    state: &State,
    top: &ImageRecord,
    seen: &mut BTreeSet<Digest>,
) -> anyhow::Result<()> {
    let mut stack = vec![(top.digest, top.media_type.clone())];
    while let Some((digest, media_type)) = stack.pop() {
        if !seen.insert(digest) || !state.content.contains(&digest) {
            continue;
        }
        if is_manifest(&media_type) || is_index(&media_type) {
            let bytes = state.content.read(&digest)?;
            stack.extend(children(&media_type, &bytes)?);
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
    let config = children(&record.media_type, &bytes)?
        .into_iter()
        .next()
        .context("a manifest without a config")?;
    Ok(config.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_prefix_of_two_images_is_ambiguous_not_the_first_one() {
        let root = tempfile::tempdir().unwrap();
        let state = State::open(Some(root.path()), crate::state::Access::Shared).unwrap();
        let digest = |last: u8| {
            let mut bytes = [0xab; 32];
            bytes[31] = last;
            Digest::from_bytes(bytes)
        };
        let record = |last| ImageRecord {
            digest: digest(last),
            media_type: rbuild_cache::image::media_types::OCI_INDEX.to_string(),
            size: 1,
            created_at: 0,
        };
        state
            .db
            .set_image("docker.io/library/a:1", &record(1))
            .unwrap();
        state
            .db
            .set_image("docker.io/library/b:1", &record(2))
            .unwrap();
        let err = find(&state, "abab").unwrap_err().to_string();
        assert!(err.contains("ambiguous"), "{err}");
        let (name, _) = find(&state, &digest(2).hex()[..]).unwrap();
        assert_eq!(name, "docker.io/library/b:1");
    }

    #[test]
    fn children_of_a_manifest_and_an_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":2}}]}}"#,
            d('a'),
            d('b')
        );
        let kids = children(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        )
        .unwrap();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[1].0.to_string(), d('b'));
        let index = format!(
            r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":3}}]}}"#,
            d('c')
        );
        let kids = children("application/vnd.oci.image.index.v1+json", index.as_bytes()).unwrap();
        assert_eq!(
            kids,
            vec![(
                d('c').parse().unwrap(),
                "application/vnd.oci.image.manifest.v1+json".to_string()
            )]
        );
        assert!(
            children("application/vnd.oci.image.layer.v1.tar", b"\x1f\x8b")
                .unwrap()
                .is_empty()
        );
    }
}
