//! Media types of OCI and Docker schema 2 documents and layers, and how they relate.

use crate::layer::Compression;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Schema 1 manifests: recognised only to refuse them with a clear error.
pub const DOCKER_SCHEMA1_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The annotation OCI layouts use for a manifest's tag in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and BuildKit's, Docker's) annotation for the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

pub fn is_schema1(media_type: &str) -> bool {
    matches!(media_type, DOCKER_SCHEMA1_MANIFEST | DOCKER_SCHEMA1_SIGNED)
}

/// OCI layers (including non-distributable ones) and Docker rootfs diffs (including foreign).
pub fn is_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// How a layer of this media type is compressed; `None` when it is not a layer type.
/// OCI marks compression with `+gzip`/`+zstd`, Docker with `.gzip`/`.zstd`.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    if !is_layer(media_type) {
        return None;
    }
    Some(
        if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Compression::Gzip
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        },
    )
}

/// The OCI media type equivalent to a Docker schema 2 one; other types are returned unchanged.
pub fn to_oci(media_type: &str) -> &str {
    match media_type {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_MANIFEST_LIST => OCI_INDEX,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER => OCI_LAYER,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_LAYER_ZSTD => OCI_LAYER_ZSTD,
        // OCI's non-distributable layers are deprecated; a foreign layer is a gzip layer with urls.
        DOCKER_FOREIGN_LAYER_GZIP => "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        other => other,
    }
}

/// The media type of a manifest or index named only by digest (a registry reply, a blob in the
/// store): its `mediaType`, else what its shape says (OCI made the field optional; Docker schema
/// 1 never had it).
pub fn sniff(bytes: &[u8]) -> Result<String, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    if let Some(media_type) = value.get("mediaType").and_then(|m| m.as_str()) {
        return Ok(media_type.to_string());
    }
    let media_type = if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        DOCKER_SCHEMA1_MANIFEST
    } else if value.get("manifests").is_some() {
        OCI_INDEX
    } else {
        OCI_MANIFEST
    };
    Ok(media_type.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_compression_follows_both_suffix_styles() {
        assert_eq!(layer_compression(OCI_LAYER), Some(Compression::None));
        assert_eq!(layer_compression(OCI_LAYER_GZIP), Some(Compression::Gzip));
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(DOCKER_LAYER_ZSTD),
            Some(Compression::Zstd)
        );
        assert_eq!(layer_compression(OCI_CONFIG), None);
        for mt in [
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
            DOCKER_CONFIG,
            DOCKER_LAYER_GZIP,
        ] {
            assert_ne!(to_oci(mt), mt);
            assert_eq!(to_oci(to_oci(mt)), to_oci(mt));
        }
        assert_eq!(
            layer_compression(to_oci(DOCKER_LAYER_ZSTD)),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::Gzip.oci_media_type(), OCI_LAYER_GZIP);
    }

    #[test]
    fn sniffing_reads_the_field_or_the_shape() {
        let sniff = |json: &str| sniff(json.as_bytes()).unwrap();
        assert_eq!(sniff(r#"{"mediaType":"x/y","manifests":[]}"#), "x/y");
        assert_eq!(sniff(r#"{"schemaVersion":2,"manifests":[]}"#), OCI_INDEX);
        assert_eq!(sniff(r#"{"schemaVersion":2,"config":{}}"#), OCI_MANIFEST);
        assert_eq!(
            sniff(r#"{"schemaVersion":1,"fsLayers":[]}"#),
            DOCKER_SCHEMA1_MANIFEST
        );
        assert!(super::sniff(b"not json").is_err());
    }
}
