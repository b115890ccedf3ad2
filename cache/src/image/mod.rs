//! Image formats: the OCI/Docker JSON model, OCI image layouts and `docker save` archives.
//!
//! Every JSON type keeps the fields it does not know (`extra`) and writes them back, because
//! BuildKit and Docker write fields (`Healthcheck`, `OnBuild`, `container_config`, …) that a
//! narrower model would silently drop. Parsed documents keep their exact bytes in a [`Blob`] so
//! a loaded manifest is re-written byte for byte; new documents are serialized canonically (see
//! [`blob`]).

pub mod blob;
pub mod blobs;
pub mod config;
pub mod descriptor;
pub mod docker_archive;
pub mod index;
pub mod manifest;
pub mod media_types;
pub mod oci_layout;
pub mod reference;
mod tar_out;

pub use blob::{canonical_json, Blob};
pub use blobs::{BlobSink, BlobSource, MemBlobs};
pub use config::{ContainerConfig, Healthcheck, History, ImageConfig, RootFs};
pub use descriptor::{Descriptor, Platform};
pub use index::Index;
pub use manifest::Manifest;
pub use reference::ImageName;

use crate::Digest;

/// Errors of the image model: parsing, validating and naming images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot parse {what} {digest}: {source}")]
    Json {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} is Docker image manifest schema 1 ({media_type}), which is unsupported; re-push the image with a current Docker or BuildKit")]
    Schema1 { digest: Digest, media_type: String },
    #[error("{digest} is an image index ({media_type}), not an image manifest")]
    NotAManifest { digest: Digest, media_type: String },
    #[error("{digest} is an image manifest ({media_type}), not an image index")]
    NotAnIndex { digest: Digest, media_type: String },
    #[error(
        "manifest {manifest} lists {layers} layers but its config {config} has {diff_ids} diff_ids"
    )]
    LayerCountMismatch {
        manifest: Digest,
        layers: usize,
        config: Digest,
        diff_ids: usize,
    },
    #[error("manifest {manifest} names config {expected} but was given config {actual}")]
    ConfigMismatch {
        manifest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
}

/// The blobs a manifest or an index names directly — a manifest's config, layers and subject,
/// an index's manifests and subject — so every walk over an image (GC, loads, layouts)
/// agrees on what an image holds. Other media types name nothing.
pub fn children(
    media_type: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<Vec<Descriptor>, ImageError> {
    use blob::Document;
    if media_types::is_manifest(media_type) {
        let manifest = Manifest::from_json(bytes, digest)?;
        let mut out = vec![manifest.config];
        out.extend(manifest.layers);
        out.extend(manifest.subject);
        Ok(out)
    } else if media_types::is_index(media_type) {
        let index = Index::from_json(bytes, digest)?;
        let mut out = index.manifests;
        out.extend(index.subject);
        Ok(out)
    } else {
        Ok(Vec::new())
    }
}
