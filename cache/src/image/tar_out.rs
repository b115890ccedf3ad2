//! Deterministic tar output shared by the OCI layout and Docker archive writers: entries in the
//! order given (callers give them sorted), mtime 0, uid/gid 0, no user names, mode 0644 for
//! files and 0755 for directories, so the same image always gives the same archive bytes.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

pub(crate) struct DetTar<W: Write> {
    builder: tar::Builder<W>,
    dirs: BTreeSet<String>,
}

impl<W: Write> DetTar<W> {
    pub(crate) fn new(w: W) -> Self {
        DetTar {
            builder: tar::Builder::new(w),
            dirs: BTreeSet::new(),
        }
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub(crate) fn file(&mut self, path: &str, size: u64, data: impl Read) -> io::Result<()> {
        self.parent_dirs(path)?;
        let mut header = header(tar::EntryType::Regular, 0o644, size);
        let mut counted = CountingReader { inner: data, n: 0 };
        self.builder.append_data(&mut header, path, &mut counted)?;
        // tar pads short data silently; a wrong size must be an error, not a corrupt archive.
        if counted.n != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: expected {size} bytes, got {}", counted.n),
            ));
        }
        Ok(())
    }

    pub(crate) fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file(path, data.len() as u64, data)
    }

    /// Directory entries for `path`'s parents not written yet. Written just before their first
    /// child, which keeps a sorted entry list sorted.
    fn parent_dirs(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i + 1;
            let dir = &path[..end];
            if self.dirs.insert(dir.to_string()) {
                let mut header = header(tar::EntryType::Directory, 0o755, 0);
                self.builder.append_data(&mut header, dir, io::empty())?;
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
