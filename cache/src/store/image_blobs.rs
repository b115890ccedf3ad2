//! The content store as the source and sink of OCI layouts and docker archives.

use std::io::{self, Read};

use super::{ContentStore, StoreError};
use crate::image::{BlobSink, BlobSource};
use crate::Digest;

fn io_error(e: StoreError) -> io::Error {
    let kind = match &e {
        StoreError::NotFound { .. } => io::ErrorKind::NotFound,
        StoreError::DigestMismatch { .. }
        | StoreError::SizeMismatch { .. }
        | StoreError::TooLong { .. } => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl BlobSource for ContentStore {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        let file = self.open_blob(digest).map_err(io_error)?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
    }

    fn size(&self, digest: &Digest) -> io::Result<u64> {
        ContentStore::size(self, digest).map_err(io_error)
    }
}

impl BlobSink for ContentStore {
    fn put_verified(
        &self,
        expected: &Digest,
        size: Option<u64>,
        reader: &mut dyn Read,
    ) -> io::Result<u64> {
        ContentStore::put_verified(self, expected, size, reader).map_err(io_error)
    }

    fn contains(&self, digest: &Digest) -> bool {
        ContentStore::contains(self, digest)
    }
}
