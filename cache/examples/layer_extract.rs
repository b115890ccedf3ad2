//! Layer extraction throughput, for scripts/bench-layers.sh.
//!
//! `layer_extract apply LAYER DEST [--overlay]` unpacks LAYER (tar, tar.gz or tar.zst, detected)
//! into DEST (which must not exist) and prints one line:
//! `apply LAYER compression=gzip in=… out=… secs=… out_MB/s=… diff_id=sha256:…`.
//! Bytes in are the blob's, bytes out the uncompressed tar's; MB/s is out / secs (10^6 bytes).
//! The time includes the final syncfs, so it is what a build pays to get a durable snapshot.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use rbuild_cache::layer::{unpack_layer, ApplyOptions, WhiteoutMode};

const USAGE: &str = "usage: layer_extract apply LAYER DEST [--overlay]";

/// Counts the compressed bytes read.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let overlay = args.iter().any(|a| a == "--overlay");
    let pos: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let ["apply", layer, dest] = pos[..] else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mode = if overlay {
        WhiteoutMode::Overlay
    } else {
        WhiteoutMode::Apply
    };
    match run(Path::new(layer), Path::new(dest), mode) {
        Ok(line) => {
            println!("apply {layer} {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("layer_extract: {layer}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    layer: &Path,
    dest: &Path,
    mode: WhiteoutMode,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut counting = Counting {
        inner: File::open(layer)?,
        n: 0,
    };
    let opts = ApplyOptions::for_current_user(mode);
    let start = Instant::now();
    let applied = unpack_layer(&mut counting, dest, &opts, None)?;
    let secs = start.elapsed().as_secs_f64();
    for w in &applied.warnings {
        eprintln!("warning: {w}");
    }
    let out = applied.uncompressed_size;
    Ok(format!(
        "compression={} in={} out={} secs={secs:.3} out_MB/s={:.1} diff_id={}",
        applied.compression,
        counting.n,
        out,
        out as f64 / 1e6 / secs.max(1e-9),
        applied.diff_id
    ))
}
