//! How layout and archive code reads and writes blobs, without knowing the content store.
//!
//! The traits are deliberately tiny so that the content store, an OCI directory or a test map
//! can each implement them in a few lines.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

use crate::digest::DigestHasher;
use crate::Digest;

/// Where blobs are read from when writing a layout or archive.
pub trait BlobSource {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>>;
    fn size(&self, digest: &Digest) -> io::Result<u64>;
}

/// Where blobs go when reading a layout or archive.
pub trait BlobSink {
    /// Stores everything `reader` yields as `expected`, failing (and storing nothing) when the
    /// bytes have another digest or, if given, another size. Returns the size.
    fn put_verified(
        &self,
        expected: &Digest,
        size: Option<u64>,
        reader: &mut dyn Read,
    ) -> io::Result<u64>;
    fn contains(&self, digest: &Digest) -> bool;
}

/// Blobs in memory: for tests and for small documents on their way elsewhere.
#[derive(Clone, Default)]
pub struct MemBlobs {
    blobs: Arc<Mutex<BTreeMap<Digest, Arc<Vec<u8>>>>>,
}

impl MemBlobs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, bytes: Vec<u8>) -> Digest {
        let digest = Digest::of(&bytes);
        self.lock().insert(digest, Arc::new(bytes));
        digest
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<Vec<u8>>> {
        self.lock().get(digest).cloned()
    }

    pub fn digests(&self) -> Vec<Digest> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Digest, Arc<Vec<u8>>>> {
        // A panic elsewhere cannot leave the map half-updated: inserts are single operations.
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(digest: &Digest) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("blob {digest} not found"))
}

impl BlobSource for MemBlobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        let bytes = self.get(digest).ok_or_else(|| not_found(digest))?;
        Ok(Box::new(io::Cursor::new(bytes.as_ref().clone())))
    }

    fn size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(self.get(digest).ok_or_else(|| not_found(digest))?.len() as u64)
    }
}

impl BlobSink for MemBlobs {
    fn put_verified(
        &self,
        expected: &Digest,
        size: Option<u64>,
        reader: &mut dyn Read,
    ) -> io::Result<u64> {
        let mut bytes = Vec::new();
        let n = VerifyingReader::new(reader, *expected, size).read_to_end(&mut bytes)?;
        self.lock().insert(*expected, Arc::new(bytes));
        Ok(n as u64)
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.lock().contains_key(digest)
    }
}

/// Passes through at most `size` bytes and fails at the end when their digest (or count) is
/// not the expected one, so a consumer that reads to EOF never accepts wrong content silently.
pub struct VerifyingReader<R> {
    inner: R,
    expected: Digest,
    size: Option<u64>,
    hasher: DigestHasher,
    checked: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            expected,
            size,
            hasher: DigestHasher::default(),
            checked: false,
        }
    }

    fn check(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        self.checked = true;
        let (digest, len) = std::mem::take(&mut self.hasher).finish();
        if self.size.is_some_and(|s| s != len) {
            return Err(invalid(format!(
                "blob {}: expected {} bytes, got {len}",
                self.expected,
                self.size.unwrap_or_default()
            )));
        }
        if digest != self.expected {
            return Err(invalid(format!(
                "blob {}: content has digest {digest}",
                self.expected
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.checked || buf.is_empty() {
            return Ok(0);
        }
        let want = match self.size {
            // One byte past the size, so that too-long content is noticed.
            Some(size) => {
                let left = size.saturating_add(1) - self.hasher.len();
                buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        if n == 0 || self.size.is_some_and(|s| self.hasher.len() > s) {
            self.check()?;
        }
        Ok(n)
    }
}

pub(crate) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads a whole small blob (a manifest, index or config), verifying digest and size.
pub(crate) fn read_small(
    source: &dyn BlobSource,
    digest: &Digest,
    size: u64,
) -> io::Result<Vec<u8>> {
    // JSON documents are small; a huge declared size is a broken or hostile descriptor.
    const LIMIT: u64 = 64 << 20;
    if size > LIMIT {
        return Err(invalid(format!(
            "blob {digest}: {size} bytes is too large for a JSON document"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    VerifyingReader::new(source.open(digest)?, *digest, Some(size)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Decompresses `reader` as gzip or zstd when its first bytes say so; else passes it through.
/// Magic numbers rather than media types, because `docker save` archives carry no media types.
pub fn decompress_auto<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::with_capacity(256 << 10, reader);
    let head = buf.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buf))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buf)?)
    } else {
        Box::new(buf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_reader_rejects_wrong_digest_and_size() {
        let data = b"hello".to_vec();
        let d = Digest::of(&data);
        let read = |bytes: &[u8], size| {
            let mut out = Vec::new();
            VerifyingReader::new(bytes, d, size).read_to_end(&mut out)
        };
        assert_eq!(read(&data, Some(5)).unwrap(), 5);
        assert_eq!(read(&data, None).unwrap(), 5);
        assert!(read(b"hellx", Some(5)).is_err());
        assert!(read(b"hello!", Some(5)).is_err());
        assert!(read(b"hell", Some(5)).is_err());
        assert!(read(&data, Some(4)).is_err());
    }

    #[test]
    fn decompress_auto_detects_gzip_zstd_and_plain() {
        use std::io::Write;
        let data = b"tar bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for input in [gz, zst, data.clone()] {
            let mut out = Vec::new();
            decompress_auto(&input[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
