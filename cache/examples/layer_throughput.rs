//! Layer creation throughput, for `scripts/bench-layers.sh`.
//!
//! ```text
//! layer_throughput create DIR [--compression gzip|zstd|none] [--threads N] -o OUT
//! ```
//! Prints one JSON line: bytes in (uncompressed tar), bytes out, seconds (walk + write),
//! MB/s of tar produced, diffID and blob digest.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use rbuild_cache::layer::{write_layer, ChangeSet, Compression, LayerOptions};

const USAGE: &str =
    "usage: layer_throughput create DIR [--compression gzip|zstd|none] [--threads N] -o OUT";

struct Args {
    dir: PathBuf,
    out: PathBuf,
    opts: LayerOptions,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    if args.next().as_deref() != Some("create") {
        return Err(USAGE.into());
    }
    let mut dir = None;
    let mut out = None;
    let mut opts = LayerOptions::default();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--compression" => opts.compression = value()?.parse::<Compression>()?,
            "--threads" => {
                opts.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            _ if dir.is_none() && !arg.starts_with('-') => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        dir: dir.ok_or(USAGE)?,
        out: out.ok_or(USAGE)?,
        opts,
    })
}

fn run(args: Args) -> Result<(), String> {
    let start = Instant::now();
    let set = ChangeSet::from_dir(&args.dir).map_err(|e| e.to_string())?;
    let out = File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let info = write_layer(&set, BufWriter::new(out), &args.opts).map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "compression": info.compression.name(),
        "threads": args.opts.threads,
        "entries": set.len(),
        "bytes_in": info.uncompressed_size,
        "bytes_out": info.size,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "mb_per_s": ((info.uncompressed_size as f64 / 1e6 / seconds) * 10.0).round() / 10.0,
        "diff_id": info.diff_id.to_string(),
        "digest": info.blob_digest.to_string(),
    });
    println!("{line}");
    Ok(())
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer_throughput: {e}");
            ExitCode::FAILURE
        }
    }
}
