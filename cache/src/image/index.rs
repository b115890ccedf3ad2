//! Image indexes: OCI `image.index.v1` and Docker manifest lists, one type for both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::blob::Document;
use super::manifest::Probe;
use super::media_types::OCI_INDEX;
use super::{Descriptor, ImageError};
use crate::Digest;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// Go writes `null` for an empty list; read it as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Descriptor>, D::Error> {
    Ok(Option::<Vec<Descriptor>>::deserialize(d)?.unwrap_or_default())
}

impl Document for Index {
    const WHAT: &'static str = "image index";

    fn from_json(bytes: &[u8], digest: &Digest) -> Result<Self, ImageError> {
        let probe = Probe::of(bytes, Self::WHAT, digest)?;
        if probe.config.is_some() && !probe.is_index() {
            return Err(ImageError::NotAnIndex {
                digest: *digest,
                media_type: probe.media_type(),
            });
        }
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            what: Self::WHAT,
            digest: *digest,
            source,
        })
    }
}

impl Index {
    /// A new OCI index over `manifests`.
    pub fn new_oci(manifests: Vec<Descriptor>) -> Self {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}
