//! A JSON document together with its exact bytes and digest.
//!
//! **Canonical form.** Documents rbuild makes itself are serialized with object keys sorted
//! (by going through `serde_json::Value`, whose maps are `BTreeMap`s), compact (no spaces) and
//! with no trailing newline. BuildKit writes Go's `json.Marshal` output — compact, keys in
//! struct-field order — which is deterministic for Go; sorted keys are our deterministic
//! equivalent, so the same image always gets the same digest. Documents that were read are
//! never re-serialized: their bytes are kept, so their digests never change.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ImageError;
use crate::Digest;

/// A parsed JSON document, the bytes it was parsed from (or serialized to) and their digest.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob<T> {
    bytes: Vec<u8>,
    digest: Digest,
    value: T,
}

/// The canonical bytes of `value`: sorted keys, compact, no trailing newline.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::to_value(value)?)
}

/// What a document is called in errors, and any check beyond plain serde parsing.
pub trait Document: Serialize + DeserializeOwned {
    const WHAT: &'static str;

    fn from_json(bytes: &[u8], digest: &Digest) -> Result<Self, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            what: Self::WHAT,
            digest: *digest,
            source,
        })
    }
}

impl<T: Document> Blob<T> {
    /// Parses `bytes`, keeping them so that writing the document back reproduces them exactly.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, ImageError> {
        let digest = Digest::of(&bytes);
        let value = T::from_json(&bytes, &digest)?;
        Ok(Blob {
            bytes,
            digest,
            value,
        })
    }

    /// Serializes a new document in canonical form.
    pub fn canonical(value: T) -> Result<Self, ImageError> {
        let bytes = canonical_json(&value).map_err(|source| ImageError::Serialize {
            what: T::WHAT,
            source,
        })?;
        Ok(Blob {
            digest: Digest::of(&bytes),
            bytes,
            value,
        })
    }
}

impl<T> Blob<T> {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn value(&self) -> &T {
        &self.value
    }

    /// The document, to modify and serialize again with [`Blob::canonical`].
    pub fn into_value(self) -> T {
        self.value
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// A descriptor of these bytes with the given media type.
    pub fn descriptor(&self, media_type: &str) -> super::Descriptor {
        super::Descriptor::new(media_type, self.digest, self.size())
    }
}
