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

/// A trial for a case that does not apply on this platform: ignored when `exceptions.txt`
/// lists it, failing otherwise so that no case is skipped silently.
pub fn excepted_trial(name: String) -> libtest_mimic::Trial {
    let listed = exceptions().contains(&name);
    let msg = format!("{name}: not for this platform and not listed in exceptions.txt");
    libtest_mimic::Trial::test(name, move || if listed { Ok(()) } else { Err(msg.into()) })
        .with_ignored_flag(listed)
}

/// Every line of `exceptions.txt` must name a case that does not apply on this platform (an
/// ignored trial): an entry for a case that runs, or for no case at all, is an error.
pub fn exceptions_are_platform_cases(trials: &[libtest_mimic::Trial]) -> libtest_mimic::Trial {
    let stray: Vec<String> = exceptions()
        .into_iter()
        .filter(|e| !trials.iter().any(|t| t.name() == e && t.has_ignored_flag()))
        .collect();
    libtest_mimic::Trial::test("conformance/exceptions_name_platform_cases", move || {
        check(stray.is_empty(), || {
            format!("exceptions.txt lists cases that are not platform-specific: {stray:?}")
        })
    })
}

/// Turns a failed comparison into the `Failed` a trial reports.
pub fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), libtest_mimic::Failed> {
    if ok {
        Ok(())
    } else {
        Err(msg().into())
    }
}
