//! The arm64 static busybox that foreign-platform tests put in their images: Debian's
//! busybox-static for arm64, whose one binary runs a shell and every tool a test needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

/// The arm64 static busybox: `$RBUILD_TEST_ARM64_BUSYBOX`, else `bin/busybox` extracted (once
/// per test process) from the `busybox-static_*_arm64.deb` in the directory
/// `$RBUILD_TEST_DEBS` (scripts/test.sh downloads it there). Missing, `None` with the reason
/// printed; under `CI=true` that is a failure instead.
pub fn arm64_busybox() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find) {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the arm64 busybox is required under CI=true: {why}"
            );
            eprintln!("skipping: no arm64 busybox: {why}");
            None
        }
    }
}

fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RBUILD_TEST_ARM64_BUSYBOX") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!(
                "RBUILD_TEST_ARM64_BUSYBOX={} is not a file",
                path.display()
            )),
        };
    }
    let debs = std::env::var_os("RBUILD_TEST_DEBS").ok_or(
        "neither RBUILD_TEST_ARM64_BUSYBOX nor RBUILD_TEST_DEBS is set (scripts/test.sh sets \
         RBUILD_TEST_DEBS)",
    )?;
    extract(&find_deb(Path::new(&debs))?)
}

/// The `busybox-static_*_arm64.deb` in `dir`.
fn find_deb(dir: &Path) -> Result<PathBuf, String> {
    let items =
        std::fs::read_dir(dir).map_err(|e| format!("RBUILD_TEST_DEBS={}: {e}", dir.display()))?;
    items
        .flatten()
        .map(|item| item.path())
        .find(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("busybox-static_") && name.ends_with("_arm64.deb")
        })
        .ok_or_else(|| format!("no busybox-static_*_arm64.deb in {}", dir.display()))
}

/// `bin/busybox` of the package, unpacked into a directory kept for the test process.
fn extract(deb: &Path) -> Result<PathBuf, String> {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| TempDir::new().expect("a temporary directory"));
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir.path())
        .output()
        .map_err(|e| format!("running dpkg-deb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dpkg-deb -x {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let busybox = dir.path().join("bin/busybox");
    match busybox.is_file() {
        true => Ok(busybox),
        false => Err(format!("{} holds no bin/busybox", deb.display())),
    }
}
