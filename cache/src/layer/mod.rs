//! Layers: change sets to tar (+ gzip/zstd) with OCI whiteouts, and tar back onto a directory.

// Layer writer: change sets → tar → diffID → compression → blob digest.
mod changes;
pub mod compress;
mod tar_header;
mod writer;
pub use changes::{Change, ChangeSet};
pub use writer::{compress_layer, write_layer, LayerInfo, LayerOptions, WriteError};

use std::fmt;
use std::str::FromStr;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer blob compressed this way.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    /// The names buildx accepts in `--output …,compression=`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uncompressed" | "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!(
                "unknown compression {s:?} (expected uncompressed, gzip or zstd)"
            )),
        }
    }
}

pub mod apply;
pub mod detect;
pub mod safe_path;

pub use apply::{
    apply_layer, detect_compression, unpack_layer, Applied, ApplyError, ApplyOptions, ApplyWarning,
    WhiteoutMode,
};
