//! The canonical encoding an entry's digest and a selection's digest are taken over.
//!
//! Every field is fixed-width or length-prefixed, so no two different entries encode to the
//! same bytes, and nothing depends on `std::hash::Hash` or on struct layout. The encoding is a
//! cache-key format: changing it invalidates every key, which the version tags make explicit.
//!
//! A byte string is its length (u64, big-endian) then its bytes; an integer is a big-endian
//! u64. An entry is: [`ENTRY_TAG`], path, kind name, permission bits, then the
//! content digest (as a byte string) for a file, the target for a symlink, rdev for a device.
//! A selection is: [`SELECTION_TAG`], entry count, then each entry's path and digest.

use std::ffi::OsString;
use std::fs::{FileType, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::FileChecksum;
use crate::digest::Digest;

// v2 left out uid and gid: a COPY writes context files as 0:0 (or `--chown`'s owner) whoever
// owns them, so CI runners whose checkouts belong to other users must get the same keys.
const ENTRY_TAG: &[u8] = b"rbuild context entry v2";
const SELECTION_TAG: &[u8] = b"rbuild context selection v1";

/// What an entry is, as lstat saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl FileKind {
    pub(super) fn of(file_type: FileType) -> FileKind {
        if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Dir
        } else if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else {
            // The only type left on Unix.
            FileKind::Socket
        }
    }

    /// The name in the encoding: spelled out rather than a discriminant, so reordering the
    /// enum cannot silently change keys.
    fn name(self) -> &'static [u8] {
        match self {
            FileKind::Regular => b"file",
            FileKind::Dir => b"dir",
            FileKind::Symlink => b"symlink",
            FileKind::Fifo => b"fifo",
            FileKind::CharDevice => b"char",
            FileKind::BlockDevice => b"block",
            FileKind::Socket => b"socket",
        }
    }
}

/// What an entry holds beyond its metadata; which one follows from its kind.
pub(super) enum Detail {
    None,
    Content(Digest),
    Target(OsString),
    Device(u64),
}

/// sha256 over length-prefixed byte strings and big-endian integers.
struct Encoder(Sha256);

impl Encoder {
    fn new(tag: &[u8]) -> Encoder {
        let mut enc = Encoder(Sha256::new());
        enc.bytes(tag);
        enc
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.int(bytes.len() as u64);
        self.0.update(bytes);
    }

    fn int(&mut self, n: u64) {
        self.0.update(n.to_be_bytes());
    }

    fn finish(self) -> Digest {
        Digest::from_bytes(self.0.finalize().into())
    }
}

/// The metadata an entry's digest covers. Times and inode are left out on purpose (see the
/// module docs).
#[derive(Clone, Copy, Debug)]
pub(super) struct Attrs {
    /// Permission bits with setuid, setgid and sticky; the type is the entry's kind.
    mode: u32,
}

impl Attrs {
    pub(super) fn of(meta: &Metadata) -> Attrs {
        Attrs {
            mode: meta.mode() & 0o7777,
        }
    }
}

/// The digest of one entry: path, kind, attributes and its detail.
pub(super) fn entry_digest(rel: &Path, kind: FileKind, attrs: Attrs, detail: Detail) -> Digest {
    let mut enc = Encoder::new(ENTRY_TAG);
    enc.bytes(rel.as_os_str().as_bytes());
    enc.bytes(kind.name());
    enc.int(u64::from(attrs.mode));
    match detail {
        Detail::None => {}
        Detail::Content(digest) => enc.bytes(digest.as_bytes()),
        Detail::Target(target) => enc.bytes(target.as_bytes()),
        Detail::Device(rdev) => enc.int(rdev),
    }
    enc.finish()
}

/// The digest of a selection: its entries' paths and digests, in the (sorted) order given.
pub(super) fn combined_digest(files: &[FileChecksum]) -> Digest {
    let mut enc = Encoder::new(SELECTION_TAG);
    enc.int(files.len() as u64);
    for file in files {
        enc.bytes(file.path.as_os_str().as_bytes());
        enc.bytes(file.digest.as_bytes());
    }
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS: Attrs = Attrs { mode: 0o644 };

    fn file(path: &str, content: &[u8]) -> Digest {
        let detail = Detail::Content(Digest::of(content));
        entry_digest(Path::new(path), FileKind::Regular, ATTRS, detail)
    }

    /// Cache keys built on these digests must survive rbuild upgrades: any change here has to
    /// be deliberate (and come with new version tags). The values were checked against a
    /// separate implementation of the layout in the module docs.
    #[test]
    fn the_encoding_is_pinned() {
        let a = file("dir/a.txt", b"alpha");
        let link = Detail::Target(OsString::from("a.txt"));
        let link = entry_digest(Path::new("dir/l"), FileKind::Symlink, ATTRS, link);
        let files = [("dir/a.txt", a), ("dir/l", link)].map(|(path, digest)| FileChecksum {
            path: path.into(),
            kind: FileKind::Regular,
            digest,
        });
        let pinned = [
            (
                a,
                "ac7a521df9c43b8a1290f49364c1d221d010439d68c59a3f5299d10c5786252a",
            ),
            (
                link,
                "5d6190417891a13d0f14b871a697cea8361bb00514ce6613c650c1560a9744f1",
            ),
            (
                combined_digest(&files),
                "977267454006a1382d6d23c0cd52c7ddd095448daa7fd4a3c2932213190d2a33",
            ),
        ];
        for (digest, expected) in pinned {
            assert_eq!(digest.hex(), expected);
        }
    }

    #[test]
    fn fields_do_not_run_into_each_other() {
        // Without length prefixes these would encode alike.
        let with_target = |path: &str, target: &str| {
            let detail = Detail::Target(OsString::from(target));
            entry_digest(Path::new(path), FileKind::Symlink, ATTRS, detail)
        };
        assert_ne!(with_target("ab", "c"), with_target("a", "bc"));
        let dir = |mode| entry_digest(Path::new("d"), FileKind::Dir, Attrs { mode }, Detail::None);
        assert_ne!(dir(0o755), dir(0o2755));
        assert_ne!(
            file("x", b""),
            entry_digest(Path::new("x"), FileKind::Regular, ATTRS, Detail::None)
        );
    }
}
