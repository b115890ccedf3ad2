//! Emulator hooks: a host program (qemu-user, statically linked) named for an architecture,
//! which the executor binds into the build container and runs the step's program with. They
//! come from `--emulator ARCH=PATH` flags and from the `[emulators]` table of the config file
//! (`$RBUILD_CONFIG`, else `$XDG_CONFIG_HOME/rbuild/config.toml`, else
//! `~/.config/rbuild/config.toml`); a flag wins over the file for its architecture.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rbuild_frontend::platform::Platform;

use super::EmulationError;

/// The config file's shape; other tables are for other settings and ignored here.
#[derive(Debug, Default, serde::Deserialize)]
struct Config {
    #[serde(default)]
    emulators: BTreeMap<String, PathBuf>,
}

/// Where the config file is, from the environment as `var` reads it; `None` without any of
/// `RBUILD_CONFIG`, `XDG_CONFIG_HOME` and `HOME`.
pub fn config_path(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = set("RBUILD_CONFIG") {
        return Some(path);
    }
    let config_home = set("XDG_CONFIG_HOME").or_else(|| set("HOME").map(|h| h.join(".config")));
    config_home.map(|dir| dir.join("rbuild/config.toml"))
}

/// The hooks the config file at `path` names, by architecture, their paths made absolute
/// (relative ones are taken from the file's directory). A missing file names none.
pub fn from_file(path: &Path) -> Result<BTreeMap<String, PathBuf>, EmulationError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(EmulationError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let config: Config = toml::from_str(&text).map_err(|e| EmulationError::Config {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut hooks = BTreeMap::new();
    for (arch, hook) in config.emulators {
        let arch = normalize_arch(&arch).map_err(|message| EmulationError::Config {
            path: path.to_path_buf(),
            message: format!("[emulators] {message}"),
        })?;
        hooks.insert(arch, base.join(hook));
    }
    Ok(hooks)
}

/// The platform architecture `arch` stands for (`aarch64` → `arm64`, `linux/arm/v7` → `arm`).
pub fn normalize_arch(arch: &str) -> Result<String, String> {
    Platform::parse(arch).map(|p| p.architecture).map_err(|_| {
        format!(
            "{arch:?} is not an architecture rbuild knows (amd64, arm64, arm, 386, riscv64, \
                 ppc64le, ppc64, s390x, mips64le, mips64, loong64, wasm)"
        )
    })
}

/// Checks that `path` is an executable file and returns it absolute, so the executor can bind
/// it into containers whatever its working directory.
pub fn checked(arch: &str, path: &Path, origin: &str) -> Result<PathBuf, EmulationError> {
    use std::os::unix::fs::PermissionsExt;
    let not_executable = |why: String| EmulationError::NotExecutable {
        arch: arch.to_string(),
        path: path.to_path_buf(),
        origin: origin.to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| not_executable(e.to_string()))?;
    if !meta.is_file() {
        return Err(not_executable("it is not a regular file".to_string()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(not_executable("it has no execute permission".to_string()));
    }
    std::fs::canonicalize(path).map_err(|e| not_executable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_config_file_is_found_as_documented() {
        let all = [
            ("RBUILD_CONFIG", "/etc/rb.toml"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(config_path(env(&all)), Some("/etc/rb.toml".into()));
        assert_eq!(
            config_path(env(&all[1..])),
            Some("/x/rbuild/config.toml".into())
        );
        assert_eq!(
            config_path(env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/home/u")])),
            Some("/home/u/.config/rbuild/config.toml".into())
        );
        assert_eq!(config_path(env(&[])), None);
    }

    #[test]
    fn hooks_are_read_by_architecture() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("config.toml");
        assert!(
            from_file(&path).unwrap().is_empty(),
            "a missing file is fine"
        );
        let text = "[emulators]\naarch64 = \"/usr/bin/qemu-aarch64-static\"\n\
                    \"linux/riscv64\" = \"bin/qemu-riscv64\"\n\n[other]\nx = 1\n";
        std::fs::write(&path, text).unwrap();
        let hooks = from_file(&path).unwrap();
        assert_eq!(
            hooks.get("arm64"),
            Some(&PathBuf::from("/usr/bin/qemu-aarch64-static"))
        );
        assert_eq!(
            hooks.get("riscv64"),
            Some(&dir.path().join("bin/qemu-riscv64"))
        );
    }

    #[test]
    fn a_malformed_config_names_the_file_and_the_problem() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("config.toml");
        for (text, expect) in [
            ("[emulators]\narm64 = ", "string values must be quoted"),
            ("[emulators]\narm64 = 3\n", "invalid type"),
            (
                "[emulators]\nvax = \"/q\"\n",
                "\"vax\" is not an architecture",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let msg = from_file(&path).unwrap_err().to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(msg.contains(expect), "{text:?}: {msg}");
        }
    }

    #[test]
    fn a_hook_must_be_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("qemu");
        std::fs::write(&file, "").unwrap();
        let msg = checked("arm64", &file, "--emulator")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("no execute permission"), "{msg}");
        let msg = checked("arm64", dir.path(), "--emulator")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
        let msg = checked("arm64", &dir.path().join("nope"), "x")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("No such file"), "{msg}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = checked("arm64", &file, "--emulator").unwrap();
        assert!(ok.is_absolute());
    }
}
