//! Change set → tar → diffID → compression → blob digest, in one pass over the files.
//!
//! The tar is a pure function of the change set and the options:
//! - entries in [`ChangeSet`] order; names relative, no `./`, directories end with `/`;
//! - mode (with setuid/setgid/sticky), uid, gid and mtime (whole seconds) from lstat, clamped
//!   to `source_date_epoch`; uname/gname empty; no atime/ctime;
//! - the first path of an inode (by device and inode number) carries the content, later ones
//!   are hardlink entries naming it;
//! - xattrs as PAX `SCHILY.xattr.*` records sorted by name, except overlayfs' own
//!   (`trusted.overlay.*`, `user.overlay.*`), which describe the snapshot, not the content;
//! - whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) are empty regular files with
//!   mode 0, uid/gid 0 and mtime 0: the epoch is the one time that needs no other input
//!   (BuildKit leans on the parent's mtime, which the change set may not even contain);
//! - sockets are skipped, as containerd and BuildKit do: tar cannot represent them;
//! - two zero blocks at the end, no padding to a 10 KiB record.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::changes::{Change, ChangeSet};
use super::compress::Compressor;
use super::tar_header::{padding, write_header, EntryMeta, Kind, Xattr};
use super::Compression;
use crate::digest::{Digest, DigestHasher, HashingWriter};

/// Read and write buffer size: large enough that syscalls and hashing calls are few.
const BUF_SIZE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid layer path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer path {path:?} appears twice in the change set")]
    Duplicate { path: String },
    #[error("layer path {path:?} is deleted and {what} in the same change set")]
    Conflict { path: String, what: &'static str },
    #[error("opaque directory {path:?} needs an Add of the directory itself in the change set")]
    OpaqueWithoutAdd { path: String },
    #[error("file name {path:?} is not UTF-8; layer paths must be")]
    NonUtf8Name { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} changed while being added to the layer: lstat said {expected} bytes, read {read}"
    )]
    FileChanged {
        path: PathBuf,
        expected: u64,
        read: u64,
    },
    #[error("writing the layer: {0}")]
    Output(#[source] io::Error),
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// How to write a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Compression threads (≥ 1; 0 counts as 1). The output bytes do not depend on it.
    pub threads: usize,
    /// SOURCE_DATE_EPOCH: mtimes later than this are clamped to it.
    pub source_date_epoch: Option<i64>,
}

impl Default for LayerOptions {
    /// gzip on every available core, mtimes as they are.
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            source_date_epoch: None,
        }
    }
}

/// What a written layer is known by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// sha256 of the bytes written to `out`.
    pub blob_digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

impl LayerInfo {
    /// A layer without entries: only the two 512-byte end-of-archive blocks (any entry adds
    /// at least a header block). BuildKit's exporter leaves such layers out of images.
    pub fn is_empty(&self) -> bool {
        self.uncompressed_size == 1024
    }

    pub fn media_type(&self) -> &'static str {
        self.compression.oci_media_type()
    }
}

/// The output chain: tar bytes are hashed (diffID), buffered, compressed, hashed again (blob).
type Chain<W> = HashingWriter<BufWriter<Compressor<BlobHasher<W>>>>;

/// Hashes the compressed bytes; an uncompressed blob is the tar itself, whose digest (the
/// diffID) is known already, so its bytes are only counted — a large layer costs one hash
/// fewer.
struct BlobHasher<W> {
    inner: W,
    hasher: Option<DigestHasher>,
    len: u64,
}

impl<W: Write> BlobHasher<W> {
    fn new(inner: W, compression: Compression) -> Self {
        let hasher = (compression != Compression::None).then(DigestHasher::default);
        BlobHasher {
            inner,
            hasher,
            len: 0,
        }
    }

    /// The inner writer, the blob digest (`None` when it is the diffID) and the size.
    fn finish(self) -> (W, Option<Digest>, u64) {
        (self.inner, self.hasher.map(|h| h.finish().0), self.len)
    }
}

impl<W: Write> Write for BlobHasher<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn chain<W: Write>(
    out: W,
    compression: Compression,
    threads: usize,
) -> Result<Chain<W>, WriteError> {
    let compressor = Compressor::new(compression, threads, BlobHasher::new(out, compression))
        .map_err(WriteError::Output)?;
    Ok(HashingWriter::new(BufWriter::with_capacity(
        BUF_SIZE, compressor,
    )))
}

fn finish_chain<W: Write>(
    chain: Chain<W>,
    compression: Compression,
) -> Result<LayerInfo, WriteError> {
    let (buffered, diff_id, uncompressed_size) = chain.finish();
    let compressor = buffered
        .into_inner()
        .map_err(|e| WriteError::Output(e.into_error()))?;
    let blob = compressor.finish().map_err(WriteError::Output)?;
    let (mut out, blob_digest, size) = blob.finish();
    out.flush().map_err(WriteError::Output)?;
    Ok(LayerInfo {
        diff_id,
        uncompressed_size,
        blob_digest: blob_digest.unwrap_or(diff_id),
        size,
        compression,
    })
}

/// Writes `changes` as a layer blob to `out` and returns its digests and sizes.
pub fn write_layer(
    changes: &ChangeSet,
    out: impl Write,
    opts: &LayerOptions,
) -> Result<LayerInfo, WriteError> {
    let mut tar = chain(out, opts.compression, opts.threads)?;
    let mut writer = TarWriter {
        out: &mut tar,
        links: HashMap::new(),
        buf: vec![0; BUF_SIZE],
        epoch: opts.source_date_epoch,
    };
    for change in changes.iter() {
        writer.write_change(change)?;
    }
    tar.write_all(&[0; 1024]).map_err(WriteError::Output)?;
    finish_chain(tar, opts.compression)
}

/// Compresses an existing uncompressed tar (a stored layer exported with another compression),
/// with the same diffID and blob bookkeeping as [`write_layer`].
pub fn compress_layer(
    mut tar: impl Read,
    out: impl Write,
    compression: Compression,
    threads: usize,
) -> Result<LayerInfo, WriteError> {
    let mut chain = chain(out, compression, threads)?;
    let mut buf = vec![0; BUF_SIZE];
    loop {
        let n = match tar.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(WriteError::Read {
                    path: PathBuf::from("<uncompressed layer>"),
                    source,
                })
            }
        };
        chain.write_all(&buf[..n]).map_err(WriteError::Output)?;
    }
    finish_chain(chain, compression)
}

struct TarWriter<'a, W: Write> {
    out: &'a mut W,
    /// (dev, inode) → the layer path that carries the content.
    links: HashMap<(u64, u64), String>,
    buf: Vec<u8>,
    epoch: Option<i64>,
}

impl<W: Write> TarWriter<'_, W> {
    fn write_change(&mut self, change: &Change) -> Result<(), WriteError> {
        match change {
            Change::Add { path, source } => self.write_add(path, source),
            Change::Delete { path } => {
                let (dir, base) = match path.rfind('/') {
                    Some(i) => (&path[..=i], &path[i + 1..]),
                    None => ("", path.as_str()),
                };
                self.write_marker(format!("{dir}.wh.{base}"))
            }
            Change::Opaque { path } => self.write_marker(format!("{path}/.wh..wh..opq")),
        }
    }

    fn write_marker(&mut self, name: String) -> Result<(), WriteError> {
        let meta = EntryMeta {
            name,
            ..EntryMeta::default()
        };
        self.header(&meta)
    }

    fn header(&mut self, meta: &EntryMeta) -> Result<(), WriteError> {
        write_header(self.out, meta).map_err(WriteError::Output)
    }

    fn write_add(&mut self, path: &str, source: &Path) -> Result<(), WriteError> {
        let st = fs::symlink_metadata(source).map_err(read_err(source))?;
        let ft = st.file_type();
        if ft.is_socket() {
            // Before the hardlink bookkeeping: a skipped socket must not become a link target.
            return Ok(());
        }
        let mut meta = EntryMeta {
            name: path.to_string(),
            mode: st.mode() & 0o7777,
            uid: st.uid().into(),
            gid: st.gid().into(),
            mtime: match self.epoch {
                Some(epoch) => st.mtime().min(epoch),
                None => st.mtime(),
            },
            ..EntryMeta::default()
        };
        if ft.is_dir() {
            meta.kind = Kind::Dir;
            meta.name.push('/');
        } else if st.nlink() > 1 {
            if let Some(first) = self.links.get(&(st.dev(), st.ino())) {
                // The inode's xattrs went with its first path; a link entry carries none.
                meta.kind = Kind::Hardlink;
                meta.link = first.clone().into_bytes();
                return self.header(&meta);
            }
            self.links.insert((st.dev(), st.ino()), path.to_string());
        }
        meta.xattrs = read_xattrs(source)?;
        if ft.is_symlink() {
            meta.kind = Kind::Symlink;
            let target = fs::read_link(source).map_err(read_err(source))?;
            meta.link = target.as_os_str().as_bytes().to_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            meta.kind = if ft.is_char_device() {
                Kind::Char
            } else {
                Kind::Block
            };
            meta.dev_major = rustix::fs::major(st.rdev());
            meta.dev_minor = rustix::fs::minor(st.rdev());
        } else if ft.is_fifo() {
            meta.kind = Kind::Fifo;
        } else if ft.is_file() {
            meta.size = st.len();
            return self.write_file(&meta, source);
        }
        self.header(&meta)
    }

    /// Header and exactly `meta.size` content bytes, read once. A file that shrank or grew
    /// since lstat would make the tar lie about it, so that is an error, not a silent cut.
    fn write_file(&mut self, meta: &EntryMeta, source: &Path) -> Result<(), WriteError> {
        // O_NOFOLLOW: if the file was swapped for a symlink since lstat, fail rather than
        // reading whatever it points to.
        let mut file = File::options()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(source)
            .map_err(read_err(source))?;
        self.header(meta)?;
        let mut read = 0u64;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(source)(e)),
            };
            let n = n.min((meta.size - read) as usize);
            if n == 0 {
                break;
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(WriteError::Output)?;
            read += n as u64;
        }
        // One more byte would mean the file grew; reading it costs a syscall, not a second pass.
        let grew = read == meta.size && file.read(&mut self.buf[..1]).is_ok_and(|n| n > 0);
        if read != meta.size || grew {
            return Err(WriteError::FileChanged {
                path: source.to_path_buf(),
                expected: meta.size,
                read: if grew { read + 1 } else { read },
            });
        }
        self.out
            .write_all(padding(meta.size))
            .map_err(WriteError::Output)
    }
}

/// Whether an xattr is overlayfs bookkeeping rather than file content.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// The xattrs of `path` (not following a symlink), sorted by name, overlay ones left out.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, WriteError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if xattrs_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(path)(e)),
    };
    let mut xattrs = Vec::new();
    for name in names {
        if is_overlay_xattr(name.as_bytes()) {
            continue;
        }
        // `None`: removed between list and get; it is not there, so leave it out.
        if let Some(value) = xattr::get(path, &name).map_err(read_err(path))? {
            xattrs.push((name.into_vec(), value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

pub(crate) fn xattrs_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
}
