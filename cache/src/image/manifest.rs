//! Image manifests: OCI `image.manifest.v1` and Docker schema 2, one type for both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::blob::Document;
use super::media_types::{self, OCI_MANIFEST};
use super::{Descriptor, ImageError};
use crate::Digest;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Required by Docker schema 2, optional (but written by everyone) in OCI.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The few fields that tell which kind of document some JSON is, before parsing it fully.
#[derive(Deserialize)]
pub(crate) struct Probe {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<Value>,
    #[serde(default)]
    pub config: Option<Value>,
}

impl Probe {
    pub(crate) fn of(
        bytes: &[u8],
        what: &'static str,
        digest: &Digest,
    ) -> Result<Self, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            what,
            digest: *digest,
            source,
        })
    }

    pub(crate) fn media_type(&self) -> String {
        self.media_type.clone().unwrap_or_default()
    }

    pub(crate) fn is_index(&self) -> bool {
        match &self.media_type {
            Some(mt) => media_types::is_index(mt),
            None => self.manifests.is_some() && self.config.is_none(),
        }
    }
}

impl Document for Manifest {
    const WHAT: &'static str = "image manifest";

    /// Refuses schema 1 and indexes by name instead of failing on a missing `config`.
    fn from_json(bytes: &[u8], digest: &Digest) -> Result<Self, ImageError> {
        let probe = Probe::of(bytes, Self::WHAT, digest)?;
        let media_type = probe.media_type();
        if probe.schema_version == Some(1) || media_types::is_schema1(&media_type) {
            return Err(ImageError::Schema1 {
                digest: *digest,
                media_type: if media_type.is_empty() {
                    media_types::DOCKER_SCHEMA1_MANIFEST.to_string()
                } else {
                    media_type
                },
            });
        }
        if probe.is_index() {
            return Err(ImageError::NotAManifest {
                digest: *digest,
                media_type,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            what: Self::WHAT,
            digest: *digest,
            source,
        })
    }
}

impl Manifest {
    /// A new OCI image manifest over `config` and `layers`.
    pub fn new_oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The media type to put in a descriptor of this manifest.
    pub fn descriptor_media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(OCI_MANIFEST)
    }
}
