//! Tar headers written byte by byte: ustar where the fields suffice, a PAX extended header
//! (`x`) in front of the entry where they do not, and for xattrs.
//!
//! We fill the header fields ourselves rather than through `tar::Builder` because the layer
//! bytes must be a pure function of the change set: no GNU long-name entries, no path
//! normalisation (a directory keeps its trailing `/`), no uname/gname lookups.

use std::io::{self, Write};

use tar::{EntryType, Header};

/// Largest value an 8-byte octal ustar field (uid, gid) holds.
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value a 12-byte octal ustar field (size, mtime) holds: 8 GiB − 1.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// An extended attribute: name and value, both raw bytes.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// Everything one tar entry needs besides its content.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryMeta {
    /// Relative name, `/`-separated; directories end with `/`.
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Content bytes that follow the header (regular files only).
    pub size: u64,
    /// Symlink target or hardlink name.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `(name, value)`, sorted by name.
    pub xattrs: Vec<Xattr>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Kind {
    #[default]
    Regular,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    fn entry_type(self) -> EntryType {
        match self {
            Kind::Regular => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
            Kind::Char => EntryType::Char,
            Kind::Block => EntryType::Block,
            Kind::Fifo => EntryType::Fifo,
        }
    }
}

/// Writes the header block(s) of `meta`: a PAX header first if needed, then the ustar header.
/// The caller writes `meta.size` content bytes and the padding after it.
pub(crate) fn write_header(out: &mut impl Write, meta: &EntryMeta) -> io::Result<()> {
    let records = pax_records(meta);
    if !records.is_empty() {
        write_pax_header(out, &meta.name, &records)?;
    }
    out.write_all(ustar_header(meta).as_bytes())
}

/// Zero bytes that pad `size` content bytes to a whole block.
pub(crate) fn padding(size: u64) -> &'static [u8] {
    const ZEROS: [u8; 512] = [0; 512];
    &ZEROS[..((512 - size % 512) % 512) as usize]
}

/// The PAX records `meta` needs, in a fixed order: the standard keys, then xattrs by name.
fn pax_records(meta: &EntryMeta) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut push = |key: &str, value: &[u8]| records.push((key.into(), value.into()));
    if split_ustar_name(meta.name.as_bytes()).is_none() {
        push("path", meta.name.as_bytes());
    }
    if meta.link.len() > 100 {
        push("linkpath", &meta.link);
    }
    if meta.size > MAX_OCTAL_12 {
        push("size", meta.size.to_string().as_bytes());
    }
    if meta.uid > MAX_OCTAL_8 {
        push("uid", meta.uid.to_string().as_bytes());
    }
    if meta.gid > MAX_OCTAL_8 {
        push("gid", meta.gid.to_string().as_bytes());
    }
    if meta.mtime < 0 || meta.mtime as u64 > MAX_OCTAL_12 {
        push("mtime", meta.mtime.to_string().as_bytes());
    }
    for (name, value) in &meta.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        records.push((key, value.clone()));
    }
    records
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut rec = format!("{len} ").into_bytes();
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// The `x` entry, named like Go's archive/tar does (`<dir>/PaxHeaders.0/<base>`, cut at 100
/// bytes) so layers look like the ones BuildKit writes; mode, owner and mtime 0.
fn write_pax_header(
    out: &mut impl Write,
    name: &str,
    records: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let trimmed = name.trim_end_matches('/');
    let (dir, base) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    let pax_name = format!("{dir}PaxHeaders.0/{base}");
    let meta = EntryMeta {
        name: pax_name,
        size: data.len() as u64,
        ..EntryMeta::default()
    };
    let mut header = ustar_header(&meta);
    header.set_entry_type(EntryType::XHeader);
    header.set_cksum();
    out.write_all(header.as_bytes())?;
    out.write_all(&data)?;
    out.write_all(padding(data.len() as u64))
}

/// The ustar header block. Fields too large for ustar still get a value here (the name cut to
/// 100 bytes, numbers in GNU base-256) so readers that ignore PAX see something sensible; the
/// PAX record written before it is authoritative.
fn ustar_header(meta: &EntryMeta) -> Header {
    let mut header = Header::new_ustar();
    let name = meta.name.as_bytes();
    let ustar = header.as_ustar_mut().expect("new_ustar is ustar");
    match split_ustar_name(name) {
        Some((prefix, base)) => {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..base.len()].copy_from_slice(base);
        }
        None => ustar.name.copy_from_slice(&name[..100]),
    }
    let link = &meta.link;
    let n = link.len().min(100);
    ustar.linkname[..n].copy_from_slice(&link[..n]);
    header.set_entry_type(meta.kind.entry_type());
    header.set_mode(meta.mode & 0o7777);
    header.set_uid(meta.uid);
    header.set_gid(meta.gid);
    header.set_mtime(meta.mtime.max(0) as u64);
    header.set_size(meta.size);
    // Fifos get zero device numbers too, as GNU tar writes them: a blank field is not a
    // number to strict readers.
    if matches!(meta.kind, Kind::Char | Kind::Block | Kind::Fifo) {
        // Linux device numbers (12-bit major, 20-bit minor) always fit the octal fields.
        let ustar = header.as_ustar_mut().expect("new_ustar is ustar");
        ustar.set_device_major(meta.dev_major);
        ustar.set_device_minor(meta.dev_minor);
    }
    header.set_cksum();
    header
}

/// Splits `name` into ustar's `prefix` (≤ 155 bytes) and `name` (≤ 100 bytes) fields at a `/`,
/// or `None` if it cannot be stored without PAX.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    if name.len() > 256 {
        return None;
    }
    // Like Go's archive/tar: the last '/' within the first 156 bytes, so the prefix is as long
    // as possible; a directory's trailing '/' cannot be the split (the name part would be empty).
    let mut limit = name.len().min(156);
    if limit == name.len() && name.ends_with(b"/") {
        limit -= 1;
    }
    let i = name[..limit].iter().rposition(|&b| b == b'/')?;
    let base = &name[i + 1..];
    (i > 0 && !base.is_empty() && base.len() <= 100).then(|| (&name[..i], base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"abc"), b"12 path=abc\n");
        // 9 bytes without the length, so the length takes 2 digits and the total is 11 → "11".
        let rec = pax_record(b"a", &[b'x'; 5]);
        assert_eq!(rec.len(), 11);
        assert!(rec.starts_with(b"11 "));
        // The length crossing a power of ten: 98 bytes + "99 " would be 101; it must be 101.
        let rec = pax_record(b"k", &[b'v'; 93]);
        assert_eq!(
            rec.len().to_string(),
            String::from_utf8_lossy(&rec[..3]).trim()
        );
    }

    #[test]
    fn ustar_split_uses_prefix_when_possible() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let (prefix, base) = split_ustar_name(long.as_bytes()).unwrap();
        assert_eq!((prefix.len(), base.len()), (120, 90));
        let no_slash = "x".repeat(101);
        assert!(split_ustar_name(no_slash.as_bytes()).is_none());
        let dir = format!("{}/", "y".repeat(100));
        assert!(split_ustar_name(dir.as_bytes()).is_none());
    }
}
