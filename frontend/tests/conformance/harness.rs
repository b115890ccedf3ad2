//! Small helpers shared by the conformance suites.

use std::path::PathBuf;

/// The copy of BuildKit's conformance data kept under `testdata/`.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/conformance/buildkit")
}

pub fn read(rel: &str) -> Vec<u8> {
    let path = data_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn read_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

/// Cases excepted on this platform, as `suite/case-name` lines in `exceptions.txt`
/// (`#` comments give the reason).
pub fn exceptions() -> Vec<String> {
    let path = data_dir().join("../exceptions.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Turns a failed comparison into the `Failed` a trial reports.
pub fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), libtest_mimic::Failed> {
    if ok {
        Ok(())
    } else {
        Err(msg().into())
    }
}
