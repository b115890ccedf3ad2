//! Reading the shared build cache from a registry: the manifest a tag names and its config
//! blob up front, each layer only when a build needs its content.

use rbuild_cache::image::{media_types, Descriptor, ImageName};

use super::client::Registry;
use super::error::RegistryError;
use crate::state::State;

impl Registry {
    /// The manifest `name` names, fetched into the store: `None` when the registry does not
    /// have the tag. Only the manifest; its blobs stay where they are.
    pub fn fetch_top(
        &self,
        state: &State,
        name: &ImageName,
    ) -> Result<Option<Descriptor>, RegistryError> {
        let digest = match self.resolve(name) {
            Ok(digest) => digest,
            Err(RegistryError::Failed { failure, .. }) if failure.status() == Some(404) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let connection = self.connect(&name.domain)?;
        let top = self.run(&name.familiar(), async {
            self.fetch_manifest(&connection, state, name, &digest).await
        })?;
        Ok(Some(top))
    }

    /// The manifest for `platform` below `top` (an index), or `top` itself.
    pub fn fetch_platform_manifest(
        &self,
        state: &State,
        name: &ImageName,
        top: &Descriptor,
        platform: &rbuild_frontend::platform::Platform,
    ) -> Result<Descriptor, RegistryError> {
        if !media_types::is_index(&top.media_type) {
            return Ok(top.clone());
        }
        let connection = self.connect(&name.domain)?;
        self.run(&name.familiar(), async {
            self.platform_manifest(&connection, state, name, top, platform)
                .await
        })
    }

    /// Blobs of `name`'s repository into the store, verified; those the store has are skipped.
    pub fn fetch_blobs_of(
        &self,
        state: &State,
        name: &ImageName,
        blobs: &[Descriptor],
    ) -> Result<(), RegistryError> {
        let connection = self.connect(&name.domain)?;
        self.run(&name.familiar(), async {
            self.fetch_blobs(&connection, state, name, blobs).await?;
            for blob in blobs {
                state
                    .db
                    .add_blob_source(&blob.digest, &name.domain, &name.path)?;
            }
            Ok(())
        })
    }
}

impl Registry {
    /// Whether `name`'s repository has the blob `digest` (one HEAD request).
    pub fn has_blob(
        &self,
        name: &ImageName,
        digest: &rbuild_cache::Digest,
    ) -> Result<bool, RegistryError> {
        let connection = self.connect(&name.domain)?;
        let target = name.repository();
        self.run(
            &target,
            self.retry(&target, &format!("check blob {digest}"), || async {
                super::head::blob_exists(&connection, name, digest, "pull,push").await
            }),
        )
    }
}
