//! Which compression a layer blob uses, from its first bytes, as `docker load` and containerd
//! decide it: registries' media types are not always right, and a local tar has none.

use std::io::{self, Cursor, Read};

use super::Compression;

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How many bytes [`detect_compression`] wants: one tar header block.
pub const SNIFF_LEN: usize = 512;

/// Detects gzip / zstd / plain tar from the first bytes (up to [`SNIFF_LEN`]).
///
/// A plain tar is recognized by its first header: the `ustar` magic, a valid header checksum
/// (old v7 tars have no magic) or an all-zero block (an empty layer is just the two end blocks).
/// Anything else, including an empty stream, is `None`: not a layer.
pub fn detect_compression(first_bytes: &[u8]) -> Option<Compression> {
    if first_bytes.starts_with(&GZIP_MAGIC) {
        return Some(Compression::Gzip);
    }
    if first_bytes.starts_with(&ZSTD_MAGIC) {
        return Some(Compression::Zstd);
    }
    let block = first_bytes.get(..SNIFF_LEN)?;
    let tar =
        &block[257..262] == b"ustar" || block.iter().all(|&b| b == 0) || header_checksum_ok(block);
    tar.then_some(Compression::None)
}

/// The tar checksum: the sum of the header's bytes with the checksum field read as spaces.
fn header_checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Ok(text) = std::str::from_utf8(&digits) else {
        return false;
    };
    let Ok(stored) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    sum == stored
}

/// Reads the first bytes of `r` (fewer only at EOF), detects the compression, and hands back a
/// reader that still yields the whole stream.
pub fn sniff<R: Read>(mut r: R) -> io::Result<(Option<Compression>, Vec<u8>, impl Read)> {
    let mut head = vec![0u8; SNIFF_LEN];
    let mut n = 0;
    while n < SNIFF_LEN {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    let compression = detect_compression(&head);
    let start: Vec<u8> = head.iter().take(16).copied().collect();
    Ok((compression, start, Cursor::new(head).chain(r)))
}

/// The decompressed stream of a layer. Gzip may have several members (pigz and concatenated
/// blobs do this; Go's reader, which made most layers, reads them all).
pub fn decoder<'a, R: Read + 'a>(compression: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 * 1024, r),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_magic_and_tar_headers() {
        assert_eq!(
            detect_compression(&[0x1f, 0x8b, 0x08, 0]),
            Some(Compression::Gzip)
        );
        assert_eq!(detect_compression(&ZSTD_MAGIC), Some(Compression::Zstd));
        assert_eq!(detect_compression(&[0u8; 1024]), Some(Compression::None));
        assert_eq!(detect_compression(b""), None);
        assert_eq!(detect_compression(&[b'x'; 600]), None);

        let mut header = tar::Header::new_old();
        header.set_path("v7-file").unwrap();
        header.set_size(0);
        header.set_cksum();
        assert_eq!(
            detect_compression(header.as_bytes()),
            Some(Compression::None)
        );
        let mut header = tar::Header::new_ustar();
        header.set_path("f").unwrap();
        assert_eq!(
            detect_compression(header.as_bytes()),
            Some(Compression::None)
        );
    }
}
