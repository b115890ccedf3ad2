//! Pushing an image from the store: per repository, each blob is checked with a HEAD request,
//! mounted from another repository of the registry when rbuild knows one that has it, or
//! streamed from its file; then the manifests go up with their exact bytes, once per tag.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::HeaderValue;
use oci_client::errors::OciDistributionError;
use oci_client::Reference;
use rbuild_cache::image::{children, media_types, Descriptor, ImageName};
use tokio::io::AsyncReadExt;

use super::client::{reference, Connection, Registry, TagOrDigest};
use super::error::{Failure, RegistryError};
use crate::images::human_size;
use crate::solve::progress;
use crate::state::State;

/// Repositories tried as mount sources for one blob before uploading it.
const MOUNT_TRIES: usize = 3;

/// Read size for streaming a blob to the registry.
const UPLOAD_CHUNK: usize = 1 << 20;

/// What happened to one blob.
enum Sent {
    AlreadyThere,
    Mounted(String),
    Uploaded,
}

/// An image's content in push order: blobs (configs, layers) and manifests, children first.
struct Contents {
    blobs: Vec<Descriptor>,
    /// Manifests below the top (the platform images of an index), pushed by digest.
    manifests: Vec<Descriptor>,
}

impl Registry {
    /// Pushes the image `top` to every name in `names` (each a repository and a tag or digest).
    pub fn push(
        &self,
        state: &State,
        top: &Descriptor,
        names: &[ImageName],
    ) -> Result<(), RegistryError> {
        self.push_knowing(state, top, names, &BTreeSet::new())
    }

    /// [`Registry::push`] where the blobs in `present` are known to be in the repositories
    /// already (a cache manifest there lists them): sent without asking, as a manifest that
    /// names them is accepted only if they are.
    pub fn push_knowing(
        &self,
        state: &State,
        top: &Descriptor,
        names: &[ImageName],
        present: &BTreeSet<rbuild_cache::Digest>,
    ) -> Result<(), RegistryError> {
        let contents = contents(state, top, names.first())?;
        // Names of one repository share the blob uploads; each repository gets its own.
        let mut repositories: Vec<(String, String)> = Vec::new();
        for name in names {
            let key = (name.domain.clone(), name.path.clone());
            if !repositories.contains(&key) {
                repositories.push(key);
            }
        }
        for (domain, path) in repositories {
            let tags: Vec<&ImageName> = names
                .iter()
                .filter(|n| n.domain == domain && n.path == path)
                .collect();
            self.push_repository(state, top, &contents, &tags, present)?;
        }
        Ok(())
    }

    fn push_repository(
        &self,
        state: &State,
        top: &Descriptor,
        contents: &Contents,
        names: &[&ImageName],
        present: &BTreeSet<rbuild_cache::Digest>,
    ) -> Result<(), RegistryError> {
        let name = names[0];
        let connection = self.connect(&name.domain)?;
        let started = Instant::now();
        self.run(&name.repository(), async {
            futures_util::stream::iter(contents.blobs.iter().map(|blob| {
                let connection = &connection;
                async move {
                    let sent = match present.contains(&blob.digest) {
                        true => Sent::AlreadyThere,
                        false => self.push_blob(connection, state, name, blob).await?,
                    };
                    report(name, &sent, blob);
                    Ok::<_, RegistryError>(())
                }
            }))
            .buffer_unordered(self.options.max_concurrent_uploads.max(1))
            .try_collect::<Vec<()>>()
            .await?;
            for manifest in &contents.manifests {
                self.push_manifest(
                    &connection,
                    state,
                    name,
                    manifest,
                    TagOrDigest::Digest(&manifest.digest),
                )
                .await?;
            }
            for name in names {
                let at = match name.tag_or_latest() {
                    Some(tag) => TagOrDigest::Tag(tag),
                    None => TagOrDigest::Digest(&top.digest),
                };
                self.push_manifest(&connection, state, name, top, at)
                    .await?;
                progress(format_args!(
                    "pushed {}@{} in {:.1}s",
                    name.familiar(),
                    top.digest,
                    started.elapsed().as_secs_f64()
                ));
            }
            Ok(())
        })
    }

    /// One blob: already there, mounted from a sibling repository, or uploaded.
    async fn push_blob(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        blob: &Descriptor,
    ) -> Result<Sent, RegistryError> {
        let target = name.repository();
        let image = reference(name, TagOrDigest::Digest(&blob.digest));
        let digest = blob.digest.to_string();
        let exists = self
            .retry(&target, &format!("check blob {digest}"), || async {
                super::head::blob_exists(connection, name, &blob.digest, "pull,push").await
            })
            .await?;
        let sent = if exists {
            Sent::AlreadyThere
        } else if let Some(source) = self.mount(connection, state, name, blob).await? {
            Sent::Mounted(source)
        } else {
            if !state.content.contains(&blob.digest) {
                return Err(RegistryError::Incomplete {
                    image: name.familiar(),
                    media_type: blob.media_type.clone(),
                    digest: blob.digest,
                });
            }
            self.retry(&target, &format!("push blob {digest}"), || async {
                let file = state
                    .content
                    .open_blob(&blob.digest)
                    .map_err(Failure::from)?;
                connection
                    .client
                    .push_blob_stream(&image, file_stream(file), &digest, Some(blob.size))
                    .await
                    .map_err(Failure::from)?;
                Ok(())
            })
            .await?;
            Sent::Uploaded
        };
        state
            .db
            .add_blob_source(&blob.digest, &name.domain, &name.path)?;
        Ok(sent)
    }

    /// Asks the registry to link the blob from a repository rbuild saw it in. A registry may
    /// decline (the source gone, no permission there); then the blob is uploaded instead.
    async fn mount(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        blob: &Descriptor,
    ) -> Result<Option<String>, RegistryError> {
        let sources = state.db.blob_sources(&blob.digest, &name.domain)?;
        // A few tries: each declined mount may leave an upload session open at the registry.
        for source in sources
            .into_iter()
            .filter(|s| *s != name.path)
            .take(MOUNT_TRIES)
        {
            if self
                .mount_from(connection, name, &source, &blob.digest)
                .await
            {
                return Ok(Some(source));
            }
        }
        Ok(None)
    }

    async fn push_manifest(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        manifest: &Descriptor,
        at: TagOrDigest<'_>,
    ) -> Result<(), RegistryError> {
        let image = match at {
            TagOrDigest::Tag(_) => reference(name, at),
            // oci-client's fallback for registries that send no Location strips the tag from
            // the URL and panics without one; the digest given as the tag makes the same URL.
            TagOrDigest::Digest(digest) => {
                Reference::with_tag(name.domain.clone(), name.path.clone(), digest.to_string())
            }
        };
        let bytes = Bytes::from(state.content.read(&manifest.digest)?);
        let content_type = HeaderValue::from_str(&manifest.media_type).map_err(|e| {
            RegistryError::BadManifest {
                image: name.familiar(),
                digest: manifest.digest,
                message: format!("media type {:?}: {e}", manifest.media_type),
            }
        })?;
        let target = image.whole().to_string();
        self.retry(&target, "push manifest", || async {
            connection
                .client
                .push_manifest_raw(&image, bytes.clone(), content_type.clone())
                .await
                .map_err(Failure::from)?;
            Ok(())
        })
        .await
    }
}

/// Walks the image from `top`: every blob and manifest must be in the store.
fn contents(
    state: &State,
    top: &Descriptor,
    name: Option<&ImageName>,
) -> Result<Contents, RegistryError> {
    let mut contents = Contents {
        blobs: Vec::new(),
        manifests: Vec::new(),
    };
    let image_name = || name.map_or_else(|| top.digest.to_string(), |n| n.familiar());
    let mut seen = BTreeSet::new();
    let mut pending = vec![top.clone()];
    while let Some(d) = pending.pop() {
        if !seen.insert(d.digest) {
            continue;
        }
        let manifest =
            media_types::is_manifest(&d.media_type) || media_types::is_index(&d.media_type);
        // A blob the store lacks may still go up: one the registry already holds somewhere
        // (a shared cache imported lazily) is found there or mounted from there.
        let elsewhere = || match name {
            Some(name) => state
                .db
                .blob_sources(&d.digest, &name.domain)
                .is_ok_and(|sources| !sources.is_empty()),
            None => false,
        };
        if !state.content.contains(&d.digest) && (manifest || !elsewhere()) {
            return Err(RegistryError::Incomplete {
                image: image_name(),
                media_type: d.media_type,
                digest: d.digest,
            });
        }
        if manifest {
            let bytes = state.content.read(&d.digest)?;
            let kids = children(&d.media_type, &d.digest, &bytes).map_err(|e| {
                RegistryError::BadManifest {
                    image: image_name(),
                    digest: d.digest,
                    message: e.to_string(),
                }
            })?;
            if d.digest != top.digest {
                contents.manifests.push(d.clone());
            }
            pending.extend(kids);
        } else {
            contents.blobs.push(d);
        }
    }
    // Pushed children first: a registry refuses an index whose manifests it lacks.
    contents.manifests.reverse();
    Ok(contents)
}

/// The blob's file in pieces, read as the upload consumes them: never whole in memory. Read
/// through tokio's file, so a slow disk does not stall the runtime's other transfers.
fn file_stream(
    file: std::fs::File,
) -> impl Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static {
    let file = tokio::fs::File::from_std(file);
    futures_util::stream::try_unfold(file, |mut file| async move {
        if crate::interrupt::stopping() {
            let stop = std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted");
            return Err(stop.into());
        }
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.truncate(n);
        Ok(Some((Bytes::from(buffer), file)))
    })
}

/// One line per blob as it is done, so a long push shows its progress.
fn report(name: &ImageName, sent: &Sent, blob: &Descriptor) {
    let line = match sent {
        Sent::AlreadyThere => "already there".to_string(),
        Sent::Mounted(from) => format!("mounted from {from}"),
        Sent::Uploaded => format!("uploaded {}", human_size(blob.size)),
    };
    progress(format_args!(
        "{}: {} {line}",
        name.repository(),
        blob.digest
    ));
}
