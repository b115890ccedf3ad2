//! Deterministic layer compression: the same tar gives the same blob bytes, whatever the
//! thread count, so a blob digest computed on a 2-core laptop matches a 64-core build farm.
//!
//! - gzip: flate2 with the zlib-rs backend at [`GZIP_LEVEL`], written pigz-style: the tar is
//!   cut into fixed [`GZIP_CHUNK`]-byte chunks, each deflated on its own (primed with the
//!   previous 32 KiB as dictionary so the ratio stays close to a serial deflate) and ended with
//!   a sync flush, so the chunks concatenate into one deflate stream. Chunk boundaries depend
//!   only on the byte offset, never on timing or thread count; one thread runs the very same
//!   algorithm inline. CRC-32 and ISIZE cover the whole stream, as RFC 1952 says.
//! - zstd: the zstd crate in multithreaded mode (nbWorkers = threads, always ≥ 1) at
//!   [`ZSTD_LEVEL`] with [`ZSTD_JOB_SIZE`] jobs. zstd cuts MT jobs by size only, so the frame does not depend on the worker
//!   count (checked by the `layer_writer` tests); nbWorkers = 0 (single-threaded mode) would
//!   produce different bytes, which is why it is never used.
//!
//! Output bytes are identical for a given zlib-rs / libzstd version on a given machine; a
//! different library version may compress differently, which only changes the blob digest,
//! never the diffID that cache keys use.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;

use flate2::{Compress, FlushCompress, Status};

use super::Compression;

/// gzip level. BuildKit compresses with Go's `gzip.DefaultCompression` (= level 6) unless
/// `compression-level` is given, and `gzip` itself defaults to 6: same ratio users expect.
pub const GZIP_LEVEL: u32 = 6;
/// zstd level: BuildKit's and the zstd CLI's default.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd MT job size, pinned rather than derived from the level (8 MiB at level 3): zstd's
/// buffers are a few jobs per worker plus slack, and on the 512 MiB benchmark tree with two
/// workers peak RSS drops from 110 MiB to 60 MiB for +0.03 % size. Smaller jobs also let
/// layers of a few MiB use more than one core. Output still does not depend on the workers.
pub const ZSTD_JOB_SIZE: u32 = 4 << 20;
/// Uncompressed bytes per independently deflated gzip chunk. Big enough that the sync-flush
/// marker (≤ 5 bytes) and the reset cost vanish; small enough that a 2-core machine gets both
/// cores busy on layers of a few MiB.
pub const GZIP_CHUNK: usize = 1 << 20;
/// Deflate's window: the dictionary handed from one chunk to the next.
const DICT_SIZE: usize = 32 * 1024;

/// A writer that compresses into `W`. Call [`Compressor::finish`]; dropping it loses the end.
pub enum Compressor<W: Write> {
    None(W),
    Gzip(Box<ParallelGzip<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// `threads` is clamped to at least 1.
    pub fn new(compression: Compression, threads: usize, out: W) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(match compression {
            Compression::None => Compressor::None(out),
            Compression::Gzip => Compressor::Gzip(Box::new(ParallelGzip::new(out, threads)?)),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                enc.multithread(u32::try_from(threads).unwrap_or(u32::MAX))?;
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                // A checksum lets `zstd -t` and other readers catch corruption without the digest.
                enc.include_checksum(true)?;
                Compressor::Zstd(enc)
            }
        })
    }

    /// Writes what is still buffered and the stream's trailer; returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(gz) => gz.finish(),
            Compressor::Zstd(enc) => enc.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(gz) => gz.write(buf),
            Compressor::Zstd(enc) => enc.write(buf),
        }
    }

    /// Flushes compressed bytes already produced. It never cuts a gzip chunk or a zstd job
    /// early: that would make the output depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(gz) => gz.out.flush(),
            Compressor::Zstd(enc) => enc.get_mut().flush(),
        }
    }
}

/// gzip over chunks deflated in parallel (see the module docs).
pub struct ParallelGzip<W: Write> {
    out: W,
    /// The chunk being filled.
    chunk: Vec<u8>,
    /// The last [`DICT_SIZE`] bytes before `chunk`.
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    engine: Engine,
}

enum Engine {
    /// One thread: deflate on the caller's thread, no hand-off.
    Inline(Box<Compress>),
    Pool(Pool),
}

struct Job {
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
    done: SyncSender<io::Result<Vec<u8>>>,
}

/// Worker threads owned by one stream. Not rayon: the caller may itself be on a rayon worker,
/// and blocking there on jobs queued to the same pool could deadlock.
struct Pool {
    jobs: SyncSender<Job>,
    /// Results in chunk order; the front is written first.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// Chunks submitted but not yet written: bounds memory to about 2 MiB per slot.
    max_in_flight: usize,
}

impl<W: Write> ParallelGzip<W> {
    fn new(mut out: W, threads: usize) -> io::Result<Self> {
        // RFC 1952 header: no name, no mtime (0), XFL 0 (neither level 1 nor 9), OS 255
        // "unknown" as Go's compress/gzip writes it: nothing here depends on the machine.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        let engine = if threads == 1 {
            Engine::Inline(Box::new(raw_deflater()))
        } else {
            Engine::Pool(Pool::start(threads)?)
        };
        Ok(ParallelGzip {
            out,
            chunk: Vec::with_capacity(GZIP_CHUNK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            engine,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        if self.chunk.len() == GZIP_CHUNK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Hands the current chunk to the engine. A full chunk is never the last one, even if no
    /// byte follows: deciding that would need a look ahead, and an empty final chunk is only
    /// two bytes.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = mem::replace(&mut self.chunk, Vec::with_capacity(GZIP_CHUNK));
        let next_dict = tail(&self.dict, &data);
        let dict = mem::replace(&mut self.dict, next_dict);
        match &mut self.engine {
            Engine::Inline(deflater) => {
                let compressed = deflate_chunk(deflater, &dict, &data, last)?;
                self.out.write_all(&compressed)
            }
            Engine::Pool(pool) => {
                pool.submit(dict, data, last)?;
                pool.write_ready(&mut self.out, false)
            }
        }
    }

    fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        if let Engine::Pool(pool) = &mut self.engine {
            pool.write_ready(&mut self.out, true)?;
        }
        let crc = mem::take(&mut self.crc).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.out.write_all(&(self.len as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

/// The last [`DICT_SIZE`] bytes of `dict` followed by `data`.
fn tail(dict: &[u8], data: &[u8]) -> Vec<u8> {
    if data.len() >= DICT_SIZE {
        return data[data.len() - DICT_SIZE..].to_vec();
    }
    let keep = (DICT_SIZE - data.len()).min(dict.len());
    let mut t = dict[dict.len() - keep..].to_vec();
    t.extend_from_slice(data);
    t
}

impl Pool {
    fn start(threads: usize) -> io::Result<Pool> {
        let max_in_flight = 2 * threads;
        let (jobs, rx) = mpsc::sync_channel::<Job>(max_in_flight);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            thread::Builder::new()
                .name(format!("rbuild-gzip-{i}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Pool {
            jobs,
            pending: VecDeque::new(),
            max_in_flight,
        })
    }

    fn submit(&mut self, dict: Vec<u8>, data: Vec<u8>, last: bool) -> io::Result<()> {
        let (done, result) = mpsc::sync_channel(1);
        let job = Job {
            dict,
            data,
            last,
            done,
        };
        self.jobs.send(job).map_err(|_| worker_gone())?;
        self.pending.push_back(result);
        Ok(())
    }

    /// Writes finished chunks in order: every one if `all`, else those already done plus as
    /// many as needed to get back under the in-flight bound.
    fn write_ready(&mut self, out: &mut impl Write, all: bool) -> io::Result<()> {
        while let Some(front) = self.pending.front() {
            let compressed = if all || self.pending.len() >= self.max_in_flight {
                front.recv().map_err(|_| worker_gone())?
            } else {
                match front.try_recv() {
                    Ok(r) => r,
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => return Err(worker_gone()),
                }
            };
            self.pending.pop_front();
            out.write_all(&compressed?)?;
        }
        Ok(())
    }
}

/// Deflates jobs until the stream (the job sender) is dropped.
fn worker(rx: &Mutex<Receiver<Job>>) {
    let mut deflater = raw_deflater();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = deflate_chunk(&mut deflater, &job.dict, &job.data, job.last);
        // The stream may have been dropped after an error; nobody wants the result then.
        let _ = job.done.send(result);
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("gzip worker thread exited unexpectedly")
}

fn raw_deflater() -> Compress {
    // No zlib header: the chunks are pieces of the deflate stream inside gzip framing.
    Compress::new(flate2::Compression::new(GZIP_LEVEL), false)
}

/// Deflates `data` from a fresh state primed with `dict`. A non-final chunk ends with a sync
/// flush (byte-aligned, no final-block bit), so the next chunk's blocks can follow directly.
fn deflate_chunk(c: &mut Compress, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity() / 2 + 64);
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        // zlib's rule: a flush is complete once a call returns with output space left over.
        let flushed = all_in && out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError if !last && flushed => return Ok(out),
            Status::Ok | Status::BufError => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut c = Compressor::new(Compression::Gzip, threads, Vec::new()).unwrap();
        for piece in data.chunks(7919) {
            c.write_all(piece).unwrap();
        }
        c.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if (i / 5000) % 2 == 0 {
                    b"lorem ipsum dolor "[i % 18]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn gzip_round_trips_at_chunk_edges_and_matches_across_threads() {
        for len in [
            0,
            1,
            DICT_SIZE,
            GZIP_CHUNK,
            GZIP_CHUNK + 1,
            3 * GZIP_CHUNK + 12345,
        ] {
            let data = sample(len);
            let one = gzip(&data, 1);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "round trip of {len} bytes");
            assert!(gzip(&data, 3) == one, "3 threads differ at {len} bytes");
        }
    }

    #[test]
    fn chunking_costs_little_ratio_against_a_serial_deflate() {
        let data = sample(4 * GZIP_CHUNK);
        let mut serial =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len();
        let ours = gzip(&data, 2).len();
        assert!(
            ours <= serial + serial / 200 + 64,
            "{ours} vs serial {serial}"
        );
    }
}
