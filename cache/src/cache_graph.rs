//! The shared build cache's format: what a `--cache-to` export writes and a `--cache-from`
//! import reads.
//!
//! An export is an OCI image manifest whose config blob (media type [`CONFIG_MEDIA_TYPE`]) is a
//! [`CacheGraph`] and whose layers are the cached layers themselves, the same blobs an image
//! push sends, so a registry holds each once. A graph maps each step's cache key to the layer it
//! made (or to none: a step that changed no file), and each image config's time-free key to the
//! config's exact bytes, so a build that hits every step gives the digest the exporter's build
//! gave. Inline caches put the same graph, without blob descriptors, in the image config under
//! [`INLINE_CONFIG_FIELD`]; there the layers are the image's own.
//!
//! The graph is versioned: a reader meeting another version says so and ignores the cache
//! ([`Parsed::UnknownVersion`]), never fails the build.

use serde::{Deserialize, Serialize};

use crate::image::Descriptor;
use crate::Digest;

/// The one version this build of rbuild writes and reads.
pub const VERSION: u32 = 1;

/// The config media type of a cache manifest.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The artifact type of a cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1";

/// The image config field an inline cache is kept in.
pub const INLINE_CONFIG_FIELD: &str = "rbuild.cache.v1";

/// Step results and image configs, sorted by key so equal caches serialize equally.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheGraph {
    pub version: u32,
    #[serde(default)]
    pub records: Vec<CacheRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<CachedConfig>,
    /// `RUN --mount=type=cache` contents, by cache id (`cache-mounts=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CachedMount>,
}

/// A cache mount's contents as a layer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CachedMount {
    pub id: String,
    pub layer: CachedLayer,
}

/// What the step with cache key `key` made.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheRecord {
    pub key: Digest,
    /// `None`: the step changed no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<CachedLayer>,
}

/// A layer by its diffID, and the blob that carries it (absent inline, where the image's
/// manifest lists the blob beside the diffID in its config).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CachedLayer {
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// A blob descriptor's essentials.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobRef {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl From<&Descriptor> for BlobRef {
    fn from(d: &Descriptor) -> Self {
        BlobRef {
            media_type: d.media_type.clone(),
            digest: d.digest,
            size: d.size,
        }
    }
}

impl BlobRef {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest, self.size)
    }
}

/// An image config as a build made it, under the key of its time-free form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CachedConfig {
    pub key: Digest,
    /// The config's exact bytes (UTF-8 JSON), so its digest is kept.
    pub config: String,
}

/// What a reader made of a graph's bytes.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Graph(CacheGraph),
    /// Written by another version of rbuild: to be ignored, with a warning.
    UnknownVersion(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum CacheGraphError {
    #[error("the cache graph is not valid JSON of its format: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("the cache graph lists a layer blob the manifest does not: {0}")]
    UnlistedBlob(Digest),
}

impl CacheGraph {
    pub fn new(
        records: impl IntoIterator<Item = CacheRecord>,
        configs: impl IntoIterator<Item = CachedConfig>,
    ) -> CacheGraph {
        let mut records: Vec<CacheRecord> = records.into_iter().collect();
        records.sort();
        records.dedup_by(|a, b| a.key == b.key);
        let mut configs: Vec<CachedConfig> = configs.into_iter().collect();
        configs.sort();
        configs.dedup_by(|a, b| a.key == b.key);
        CacheGraph {
            version: VERSION,
            records,
            configs,
            mounts: Vec::new(),
        }
    }

    /// The graph with `mounts` (sorted by id) added.
    pub fn with_mounts(mut self, mounts: impl IntoIterator<Item = CachedMount>) -> CacheGraph {
        self.mounts = mounts.into_iter().collect();
        self.mounts.sort();
        self.mounts.dedup_by(|a, b| a.id == b.id);
        self
    }

    /// Every layer the graph names: its records', then its cache mounts'.
    fn layers(&self) -> impl Iterator<Item = &CachedLayer> {
        self.records
            .iter()
            .filter_map(|r| r.layer.as_ref())
            .chain(self.mounts.iter().map(|m| &m.layer))
    }

    /// Reads a graph; another version is [`Parsed::UnknownVersion`], not an error.
    pub fn parse(bytes: &[u8]) -> Result<Parsed, CacheGraphError> {
        Self::from_value(serde_json::from_slice(bytes)?)
    }

    /// [`CacheGraph::parse`] of a graph already read as JSON (an inline cache).
    pub fn from_value(value: serde_json::Value) -> Result<Parsed, CacheGraphError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let Versioned { version } = serde_json::from_value(value.clone())?;
        if version != VERSION {
            return Ok(Parsed::UnknownVersion(version));
        }
        Ok(Parsed::Graph(serde_json::from_value(value)?))
    }

    /// The blobs the records name, each once, in key order: a manifest's layers.
    pub fn layer_blobs(&self) -> Vec<Descriptor> {
        let mut seen = std::collections::BTreeSet::new();
        self.layers()
            .filter_map(|l| l.blob.as_ref())
            .filter(|b| seen.insert(b.digest))
            .map(BlobRef::descriptor)
            .collect()
    }

    /// Checks that every layer blob a record names is among `listed` (a manifest's layers):
    /// a graph must not send a reader to blobs its manifest does not hold.
    pub fn check_blobs(&self, listed: &[Descriptor]) -> Result<(), CacheGraphError> {
        for blob in self.layers().filter_map(|l| l.blob.as_ref()) {
            if !listed.iter().any(|d| d.digest == blob.digest) {
                return Err(CacheGraphError::UnlistedBlob(blob.digest));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        crate::image::canonical_json(self).expect("a cache graph serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: &str) -> CachedLayer {
        CachedLayer {
            diff_id: Digest::of(format!("diff {n}").as_bytes()),
            blob: Some(BlobRef {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: Digest::of(format!("blob {n}").as_bytes()),
                size: 10,
            }),
        }
    }

    fn record(key: &str, layer: Option<CachedLayer>) -> CacheRecord {
        CacheRecord {
            key: Digest::of(key.as_bytes()),
            layer,
        }
    }

    #[test]
    fn a_graph_reads_back_as_written_whatever_the_order_it_was_made_in() {
        let a = CacheGraph::new(
            [record("b", Some(layer("1"))), record("a", None)],
            [CachedConfig {
                key: Digest::of(b"config"),
                config: "{\"os\":\"linux\"}".into(),
            }],
        );
        let b = CacheGraph::new(
            [record("a", None), record("b", Some(layer("1")))],
            a.configs.clone(),
        );
        assert_eq!(a.to_json(), b.to_json());
        assert_eq!(CacheGraph::parse(&a.to_json()).unwrap(), Parsed::Graph(a));
    }

    #[test]
    fn another_version_is_reported_not_failed() {
        let bytes = br#"{"version": 7, "records": "whatever version 7 says"}"#;
        assert_eq!(CacheGraph::parse(bytes).unwrap(), Parsed::UnknownVersion(7));
        assert!(CacheGraph::parse(b"{\"records\": []}").is_err());
        assert!(CacheGraph::parse(b"not json").is_err());
    }

    #[test]
    fn blobs_are_listed_once_and_must_be_in_the_manifest() {
        let graph = CacheGraph::new(
            [
                record("a", Some(layer("1"))),
                record("b", Some(layer("1"))),
                record("c", Some(layer("2"))),
            ],
            [],
        );
        let blobs = graph.layer_blobs();
        assert_eq!(blobs.len(), 2);
        graph.check_blobs(&blobs).unwrap();
        assert!(matches!(
            graph.check_blobs(&blobs[..1]),
            Err(CacheGraphError::UnlistedBlob(_))
        ));
    }
}
