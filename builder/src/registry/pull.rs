//! Pulling an image for one platform into the content store: the tag resolved by a HEAD
//! request, manifests and blobs fetched only when the store lacks them, layers several at a
//! time, everything verified against its digest before it is stored.

use std::io::Write;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use rbuild_cache::db::ImageRecord;
use rbuild_cache::digest::Digest;
use rbuild_cache::image::{children, media_types, Blob, Descriptor, ImageName, Index};
use rbuild_frontend::platform::Platform;

use super::client::{reference, Connection, Registry, TagOrDigest};
use super::error::{Failure, RegistryError};
use crate::images::human_size;
use crate::solve::progress;
use crate::state::State;

/// What manifests rbuild reads; schema 1 is refused when it arrives.
const ACCEPTED_MANIFESTS: [&str; 4] = [
    media_types::OCI_INDEX,
    media_types::DOCKER_MANIFEST_LIST,
    media_types::OCI_MANIFEST,
    media_types::DOCKER_MANIFEST,
];

impl Registry {
    /// The digest `name` points at: its own digest, or what the registry says its tag is now.
    pub fn resolve(&self, name: &ImageName) -> Result<Digest, RegistryError> {
        if let Some(digest) = name.digest {
            return Ok(digest);
        }
        let connection = self.connect(&name.domain)?;
        let tag = name.tag_or_latest().unwrap_or("latest");
        let target = format!("{}:{tag}", name.repository());
        let image = reference(name, TagOrDigest::Tag(tag));
        self.run(
            &target,
            self.retry(&target, "resolve tag", || async {
                let accept = ACCEPTED_MANIFESTS.join(", ");
                if let Some(digest) =
                    super::head::tag_digest(&connection, name, tag, &accept).await?
                {
                    return Ok(digest);
                }
                let digest = connection
                    .client
                    .fetch_manifest_digest(&image, &connection.auth)
                    .await
                    .map_err(Failure::from)?;
                digest.parse::<Digest>().map_err(|e| {
                    Failure::Invalid(format!("the registry sent digest {digest:?}: {e}"))
                })
            }),
        )
    }

    /// Pulls `name` for `platform`: its manifest or index (and from an index, the platform's
    /// manifest), the config and the layers the store lacks. Records the name in the store and
    /// where each blob came from. Returns the top descriptor.
    pub fn pull(
        &self,
        state: &State,
        name: &ImageName,
        platform: &Platform,
    ) -> Result<Descriptor, RegistryError> {
        let top_digest = self.resolve(name)?;
        self.pull_resolved(state, name, top_digest, platform)
    }

    /// [`Registry::pull`] of `name` as it resolved to `top_digest` (a build resolves a tag
    /// once for all its platforms, so they all come from the same index).
    pub fn pull_resolved(
        &self,
        state: &State,
        name: &ImageName,
        top_digest: Digest,
        platform: &Platform,
    ) -> Result<Descriptor, RegistryError> {
        let connection = self.connect(&name.domain)?;
        let started = Instant::now();
        self.run(&name.familiar(), async {
            let top = self
                .fetch_manifest(&connection, state, name, &top_digest)
                .await?;
            let manifest = self
                .platform_manifest(&connection, state, name, &top, platform)
                .await?;
            let bytes = state.content.read(&manifest.digest)?;
            let blobs = children(&manifest.media_type, &manifest.digest, &bytes)
                .map_err(|e| invalid(name, "read manifest", e.to_string()))?;
            let fetched = self.fetch_blobs(&connection, state, name, &blobs).await?;
            for d in blobs.iter().chain([&manifest, &top]) {
                state
                    .db
                    .add_blob_source(&d.digest, &name.domain, &name.path)?;
            }
            if fetched.0 > 0 {
                progress(format_args!(
                    "pulled {} ({} blobs, {}) in {:.1}s",
                    name.familiar(),
                    fetched.0,
                    human_size(fetched.1),
                    started.elapsed().as_secs_f64()
                ));
            }
            self.record_pull(state, name, &top)?;
            Ok(top)
        })
    }

    /// The image manifest for `platform`: `top` itself, or its index's entry for the platform.
    pub(super) async fn platform_manifest(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        top: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, RegistryError> {
        let manifest = if media_types::is_index(&top.media_type) {
            let index: Blob<Index> = parse(name, top, state.content.read(&top.digest)?)?;
            let chosen = crate::platforms::select(index.value(), platform)
                .map_err(|e| invalid(name, "choose platform", format!("{e:#}")))?;
            self.fetch_manifest(connection, state, name, &chosen.digest)
                .await?
        } else {
            top.clone()
        };
        if !media_types::is_manifest(&manifest.media_type) {
            return Err(invalid(
                name,
                "read manifest",
                format!(
                    "{} is a {}, not an image manifest",
                    manifest.digest, manifest.media_type
                ),
            ));
        }
        Ok(manifest)
    }

    /// Fetches the blobs the store lacks, several at a time (a layer listed twice once).
    /// Returns how many and how many bytes.
    pub(super) async fn fetch_blobs(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        blobs: &[Descriptor],
    ) -> Result<(usize, u64), RegistryError> {
        let mut seen = std::collections::BTreeSet::new();
        let missing: Vec<&Descriptor> = blobs
            .iter()
            .filter(|b| seen.insert(b.digest) && !state.content.contains(&b.digest))
            .collect();
        futures_util::stream::iter(
            missing
                .iter()
                .map(|blob| self.fetch_blob(connection, state, name, blob)),
        )
        .buffer_unordered(self.options.max_concurrent_downloads.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        Ok((missing.len(), missing.iter().map(|b| b.size).sum()))
    }

    /// Remembers the pulled name, so `rbuild images` lists it and later builds re-resolve it.
    fn record_pull(
        &self,
        state: &State,
        name: &ImageName,
        top: &Descriptor,
    ) -> Result<(), RegistryError> {
        if name.digest.is_some() {
            return Ok(());
        }
        let full = name.full();
        let record = ImageRecord {
            digest: top.digest,
            media_type: top.media_type.clone(),
            size: top.size,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        // Unchanged: keep the time it was first pulled, as `rbuild images` shows it.
        let record = match state.db.image(&full)? {
            Some(old) if old.digest == record.digest => old,
            _ => record,
        };
        state.db.set_pulled_image(&full, &record)?;
        Ok(())
    }

    /// The manifest or index `digest` of `name`'s repository, from the store or the registry.
    pub(super) async fn fetch_manifest(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        digest: &Digest,
    ) -> Result<Descriptor, RegistryError> {
        if !state.content.contains(digest) {
            let image = reference(name, TagOrDigest::Digest(digest));
            let op = format!("pull manifest {digest}");
            let bytes = self
                .retry(&name.repository(), &op, || async {
                    let (bytes, _) = connection
                        .client
                        .pull_manifest_raw(&image, &connection.auth, &ACCEPTED_MANIFESTS)
                        .await
                        .map_err(Failure::from)?;
                    let actual = Digest::of(&bytes);
                    if actual != *digest {
                        return Err(Failure::Corrupt(format!(
                            "the manifest received hashes to {actual}"
                        )));
                    }
                    Ok(bytes)
                })
                .await?;
            state
                .content
                .put_verified(digest, Some(bytes.len() as u64), &bytes[..])?;
        }
        let bytes = state.content.read(digest)?;
        let media_type = media_types::sniff(&bytes)
            .map_err(|e| invalid(name, &format!("read manifest {digest}"), format!("{e:#}")))?;
        if media_types::is_schema1(&media_type) {
            return Err(invalid(
                name,
                &format!("read manifest {digest}"),
                "Docker schema 1 manifests are not supported (deprecated since 2017)".into(),
            ));
        }
        Ok(Descriptor::new(media_type, *digest, bytes.len() as u64))
    }

    /// Streams one blob into the store; a transfer that does not verify is retried, and never
    /// stored.
    async fn fetch_blob(
        &self,
        connection: &Connection,
        state: &State,
        name: &ImageName,
        blob: &Descriptor,
    ) -> Result<(), RegistryError> {
        if state.content.contains(&blob.digest) {
            return Ok(());
        }
        let image = reference(name, TagOrDigest::Digest(&blob.digest));
        let digest = blob.digest.to_string();
        let op = format!("pull blob {digest}");
        self.retry(&name.repository(), &op, || async {
            let mut stream = connection
                .client
                .pull_blob_stream(&image, digest.as_str())
                .await
                .map_err(Failure::from)?;
            // Hashing and writing run on blocking threads in 1 MiB batches: the downloads
            // are polled on one thread, which must not wait for the disk.
            let mut writer = state.content.writer().map_err(Failure::from)?;
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            let mut received = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(stream_failure)?;
                if crate::interrupt::stopping() {
                    return Err(Failure::Invalid("interrupted".into()));
                }
                received += chunk.len() as u64;
                if received > blob.size {
                    return Err(Failure::Corrupt(format!(
                        "more than the {} bytes the manifest gives",
                        blob.size
                    )));
                }
                batch.extend_from_slice(&chunk);
                if batch.len() >= WRITE_BATCH {
                    writer = off_thread(move || {
                        writer.write_all(&batch).map_err(store_write)?;
                        Ok(writer)
                    })
                    .await?;
                    batch = Vec::with_capacity(WRITE_BATCH);
                }
            }
            let (digest, size) = (blob.digest, blob.size);
            off_thread(move || {
                writer.write_all(&batch).map_err(store_write)?;
                writer
                    .commit(Some(&digest), Some(size))
                    .map_err(Failure::from)
            })
            .await?;
            Ok(())
        })
        .await
    }
}

/// Bytes gathered before a write to the store.
const WRITE_BATCH: usize = 1 << 20;

/// Runs store I/O on tokio's blocking threads.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::Invalid(format!("writing to the store: {e}")))?
}

fn store_write(e: std::io::Error) -> Failure {
    Failure::Invalid(format!("writing to the store: {e}"))
}

/// oci-client reports a digest mismatch at the end of the stream as an I/O error.
fn stream_failure(e: std::io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        Some(digest_error) => Failure::Corrupt(digest_error.to_string()),
        None => Failure::Transport(e.to_string()),
    }
}

fn parse<T: rbuild_cache::image::blob::Document>(
    name: &ImageName,
    descriptor: &Descriptor,
    bytes: Vec<u8>,
) -> Result<Blob<T>, RegistryError> {
    Blob::parse(bytes).map_err(|e| {
        invalid(
            name,
            &format!("read manifest {}", descriptor.digest),
            e.to_string(),
        )
    })
}

fn invalid(name: &ImageName, op: &str, message: String) -> RegistryError {
    RegistryError::Failed {
        target: name.familiar(),
        op: op.to_string(),
        failure: Failure::Invalid(message),
    }
}
