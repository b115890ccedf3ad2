//! A bound on tar extension headers: the tar crate reads a PAX (`x`), GNU long name (`L`) or
//! long link (`K`) body whole into memory, whatever size its header claims. A small gzip or
//! zstd layer can expand to gigabytes of such a body, so this reader follows the tar stream's
//! headers as the bytes pass and fails before an oversized extension body is handed on.
//!
//! It tracks entry boundaries exactly as the tar crate does (PAX `size` overrides, GNU sparse
//! extension blocks, the end at the first zero block); a header the tar crate would refuse
//! (bad checksum, unreadable size) stops the tracking and is left to the tar crate to report.

use std::io::{self, Read};

use tar::{EntryType, Header};

/// Go's archive/tar (and so Docker and BuildKit) refuses extension bodies above 1 MiB.
pub(crate) const MAX_EXTENSION_SIZE: u64 = 1 << 20;

const BLOCK: usize = 512;
/// Where a GNU sparse header (and each extension block) says another extension block follows.
const GNU_IS_EXTENDED: usize = 482;
const GNU_EXT_IS_EXTENDED: usize = 504;

pub(crate) struct ExtensionLimit<R> {
    inner: R,
    block: Box<[u8; BLOCK]>,
    filled: usize,
    state: State,
    /// The body of the last PAX `x` header, which applies to the next entry.
    pax: Option<Vec<u8>>,
}

enum State {
    Header,
    /// GNU sparse extension blocks, then `data` bytes of entry data and padding.
    SparseExt {
        data: u64,
    },
    /// Entry data and padding still to pass; the first `collect` bytes are a PAX body.
    Data {
        left: u64,
        collect: u64,
    },
    /// End of archive, or a header the tar crate will refuse: nothing more to follow.
    Done,
}

impl<R: Read> ExtensionLimit<R> {
    pub(crate) fn new(inner: R) -> Self {
        ExtensionLimit {
            inner,
            block: Box::new([0; BLOCK]),
            filled: 0,
            state: State::Header,
            pax: None,
        }
    }

    fn track(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Data { left, collect } => {
                    let n = bytes
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let c = n.min(usize::try_from(*collect).unwrap_or(usize::MAX));
                    if c > 0 {
                        self.pax.get_or_insert_with(Vec::new).extend(&bytes[..c]);
                        *collect -= c as u64;
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                    bytes = &bytes[n..];
                }
                State::Header | State::SparseExt { .. } => {
                    let n = (BLOCK - self.filled).min(bytes.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
                    self.filled += n;
                    bytes = &bytes[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.block_done()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn block_done(&mut self) -> io::Result<()> {
        if let State::SparseExt { data } = self.state {
            if self.block[GNU_EXT_IS_EXTENDED] != 1 {
                self.state = data_state(data, 0);
            }
            return Ok(());
        }
        self.state = self.header().unwrap_or(State::Done);
        match self.state {
            State::Done => Ok(()),
            _ => self.check_extension(),
        }
    }

    /// The state after a header block; `None` when the tar crate stops here (end of the
    /// archive) or will refuse the header.
    fn header(&mut self) -> Option<State> {
        if self.block.iter().all(|&b| b == 0) {
            return None;
        }
        let header = Header::from_byte_slice(&self.block[..]);
        let sum = self.block[..148]
            .iter()
            .chain(&self.block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * u32::from(b' ');
        if header.cksum().ok()? != sum {
            return None;
        }
        let kind = header.entry_type();
        let size = header.entry_size().ok()?;
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        if recognized && (kind.is_gnu_longname() || kind.is_gnu_longlink()) {
            return Some(data_state(size, 0));
        }
        if recognized && kind.is_pax_local_extensions() {
            self.pax = None;
            return Some(data_state(size, size));
        }
        // An entry the tar crate returns: it takes the pending PAX records with it.
        let pax = self.pax.take();
        let is_extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let size = match pax.filter(|_| !is_extension) {
            Some(records) => pax_size(&records).unwrap_or(size),
            None => size,
        };
        let extended = kind == EntryType::GNUSparse
            && header.as_gnu().is_some()
            && self.block[GNU_IS_EXTENDED] == 1;
        Some(if extended {
            State::SparseExt { data: size }
        } else {
            data_state(size, 0)
        })
    }

    /// Refuses an extension header whose body is larger than [`MAX_EXTENSION_SIZE`].
    fn check_extension(&self) -> io::Result<()> {
        let header = Header::from_byte_slice(&self.block[..]);
        let kind = header.entry_type();
        let what = match kind.as_byte() {
            b'x' => "PAX extended header",
            b'L' => "GNU long name",
            b'K' => "GNU long link name",
            _ => return Ok(()),
        };
        let size = header.entry_size().unwrap_or(0);
        if size > MAX_EXTENSION_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "its {what} ('{}') claims {size} bytes, more than the {MAX_EXTENSION_SIZE} \
                     bytes allowed",
                    kind.as_byte() as char
                ),
            ));
        }
        Ok(())
    }
}

/// Entry data rounded up to whole blocks; sizes too large to round are refused by the tar
/// crate, so tracking stops there.
fn data_state(size: u64, collect: u64) -> State {
    match size.checked_add(BLOCK as u64 - 1) {
        Some(s) if s & !(BLOCK as u64 - 1) == 0 => State::Header,
        Some(s) => State::Data {
            left: s & !(BLOCK as u64 - 1),
            collect,
        },
        None => State::Done,
    }
}

/// The `size` record of PAX records, read as the tar crate reads it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for ExtensionLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.track(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, path: &str, size: u64) -> Vec<u8> {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn padded(mut data: Vec<u8>) -> Vec<u8> {
        data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        data
    }

    fn pax_records(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len();
        while format!("{len}{body}").len() != len {
            len = format!("{len}{body}").len();
        }
        format!("{len}{body}").into_bytes()
    }

    /// Reads `stream` through the limit in small, uneven pieces, as a decoder would hand it on.
    fn read_through(stream: &[u8]) -> io::Result<()> {
        let mut limit = ExtensionLimit::new(stream);
        let mut buf = [0u8; 701];
        let mut step = 1;
        loop {
            let n = limit.read(&mut buf[..step])?;
            if n == 0 {
                return Ok(());
            }
            step = (step + 37) % 700 + 1;
        }
    }

    #[test]
    fn stays_in_step_through_pax_size_overrides_and_catches_a_later_huge_header() {
        // A file whose real size (1024) is only in a PAX record, its data full of bytes that
        // would look like a huge `x` header to a reader that took the ustar size (0) instead.
        let records = pax_records("size", "1024");
        let mut stream = header(EntryType::XHeader, "PaxHeaders/f", records.len() as u64);
        stream.extend(padded(records));
        stream.extend(header(EntryType::Regular, "f", 0));
        let decoy = header(EntryType::XHeader, "decoy", 1 << 40);
        stream.extend(&decoy);
        stream.extend(&decoy);
        let fine = stream.clone();
        read_through(&fine).unwrap();
        let mut hostile = fine;
        hostile.extend(header(EntryType::GNULongName, "././@LongLink", 5 << 20));
        let err = read_through(&hostile).unwrap_err();
        assert!(err.to_string().contains("GNU long name"), "{err}");
    }

    #[test]
    fn extensions_up_to_the_limit_pass() {
        let mut stream = header(EntryType::XHeader, "p", MAX_EXTENSION_SIZE);
        stream.extend(vec![0u8; MAX_EXTENSION_SIZE as usize]);
        stream.extend(header(EntryType::Regular, "f", 3));
        stream.extend(padded(b"abc".to_vec()));
        read_through(&stream).unwrap();
    }
}
