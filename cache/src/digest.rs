//! Content digests (`sha256:<hex>`), the names of every blob and cache record.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} does not start with the algorithm \"sha256:\"")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} must have 64 lowercase hex characters after \"sha256:\"")]
    BadHex(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A running sha256 over bytes as they pass, with their count.
#[derive(Clone, Default)]
pub struct DigestHasher {
    sha: Sha256,
    len: u64,
}

impl DigestHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest(self.sha.finalize().into()), self.len)
    }
}

/// Hashes what is written through it, so content is never read twice to name it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: DigestHasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: DigestHasher::default(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer, the digest and the byte count of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        let (digest, len) = self.hasher.finish();
        (self.inner, digest, len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: DigestHasher::default(),
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    pub fn finish(self) -> (R, Digest, u64) {
        let (digest, len) = self.hasher.finish();
        (self.inner, digest, len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(s.to_string()))?;
        // Uppercase hex would name the same bytes with another string; OCI forbids it.
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestError::BadHex(s.to_string()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| DigestError::BadHex(s.to_string()))?;
        Ok(Digest(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_and_reader_agree_with_digest_of() {
        let data = b"layer bytes".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, digest, len) = w.finish();
        assert_eq!((digest, len), (Digest::of(&data), data.len() as u64));
        let mut r = HashingReader::new(&out[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().1, Digest::of(&data));
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_forms() {
        let d = Digest::of(b"rbuild");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(matches!(
            "sha512:ab".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        let upper = d.to_string().to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
    }
}
