//! How RUN steps for a foreign platform run here (issue 7): natively when the host runs that
//! architecture, through a user-named emulator hook (`--emulator ARCH=PATH`, the config file),
//! or through the kernel's binfmt_misc handlers (qemu-user-static). When none works, the error
//! says how to make one work.
//!
//! The parts:
//! - [`elf`]: the ELF header binfmt_misc would see for each architecture;
//! - [`binfmt`]: reading and matching the kernel's handlers;
//! - [`hooks`]: the emulator hooks of the flags and the config file;
//! - [`setup`]: `rbuild setup-binfmt`, which registers qemu-user-static's handlers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_frontend::platform::Platform;

pub mod binfmt;
pub mod elf;
pub mod hooks;
pub mod setup;

use binfmt::Handlers;

/// Where the kernel's binfmt_misc filesystem is mounted.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Overrides [`BINFMT_MISC`] for reading handlers (a test double).
pub const BINFMT_MISC_ENV: &str = "RBUILD_BINFMT_MISC";

/// The ways RUN steps can run on this host.
#[derive(Clone, Debug)]
pub struct Emulators {
    /// Emulator hooks by platform architecture, checked to be executable, absolute.
    hooks: BTreeMap<String, PathBuf>,
    binfmt_dir: PathBuf,
}

/// How the RUN steps of one platform run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Execution {
    /// The host runs the platform's binaries itself.
    Native,
    /// The kernel hands them to this binfmt_misc interpreter (registered with `F`).
    Binfmt { interpreter: String },
    /// The executor runs them through this host emulator, bound into the container.
    Hook(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error("RUN for {platform} needs an emulator: {why}. Fix: {fix}")]
    NoEmulator {
        platform: String,
        why: String,
        fix: String,
    },
    #[error("RUN for {platform} cannot run here: rbuild runs Linux containers only")]
    NotLinux { platform: String },
    #[error(
        "RUN for {platform} would run through the binfmt_misc handler {entry} ({interpreter}), \
         but it was registered without the F (fix binary) flag, so the kernel looks for \
         {interpreter} inside the build container, where it is missing. Fix: {fix}"
    )]
    NotFixBinary {
        platform: String,
        entry: String,
        interpreter: String,
        fix: String,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(
        "the emulator for {arch} ({origin}) {}: {why}; it must be an executable file",
        path.display()
    )]
    NotExecutable {
        arch: String,
        path: PathBuf,
        origin: String,
        why: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rbuild setup-binfmt must run as root: it mounts binfmt_misc and registers handlers \
         with the kernel"
    )]
    NotRoot,
    #[error(
        "no qemu binfmt handlers are installed (none in {conf_dirs}). Fix: apt-get install \
         qemu-user-static"
    )]
    QemuMissing { conf_dirs: String },
    #[error(
        "no installed qemu handler runs {platform} binaries{why}. Fix: apt-get install \
         qemu-user-static"
    )]
    NoHandlerFor { platform: String, why: String },
    #[error("{platform}: {message}")]
    BadPlatform { platform: String, message: String },
    #[error("mounting binfmt_misc at {dir}: {source}")]
    Mount {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registering {name} with binfmt_misc: {source}")]
    Register {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unusable(String),
}

impl Emulators {
    /// Hooks from the `--emulator ARCH=PATH` flags (win) and the config file; binfmt_misc read
    /// from $RBUILD_BINFMT_MISC (a test double; default /proc/sys/fs/binfmt_misc).
    pub fn load(flags: &[crate::cli::EmulatorArg]) -> Result<Emulators, EmulationError> {
        let file = hooks::config_path(|name| std::env::var_os(name));
        let mut hooks = BTreeMap::new();
        if let Some(path) = &file {
            for (arch, hook) in hooks::from_file(path)? {
                let origin = format!("[emulators] in {}", path.display());
                let checked = hooks::checked(&arch, &hook, &origin)?;
                hooks.insert(arch, checked);
            }
        }
        for flag in flags {
            let checked = hooks::checked(&flag.arch, &flag.path, "--emulator")?;
            hooks.insert(flag.arch.clone(), checked);
        }
        let binfmt_dir = std::env::var_os(BINFMT_MISC_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(BINFMT_MISC), PathBuf::from);
        Ok(Emulators { hooks, binfmt_dir })
    }

    /// Emulators from already checked hooks (absolute, executable) and a binfmt_misc directory.
    pub fn new(hooks: BTreeMap<String, PathBuf>, binfmt_dir: PathBuf) -> Emulators {
        Emulators { hooks, binfmt_dir }
    }

    /// How RUN steps for `platform` run here; an error that says how to fix it when they cannot.
    pub fn for_platform(&self, platform: &Platform) -> Result<Execution, EmulationError> {
        if platform.os != "linux" {
            return Err(EmulationError::NotLinux {
                platform: platform.to_string(),
            });
        }
        let arch = platform.architecture.as_str();
        if runs_natively(&Platform::host().architecture, arch) {
            return Ok(Execution::Native);
        }
        if let Some(hook) = self.hooks.get(arch) {
            return Ok(Execution::Hook(hook.clone()));
        }
        self.binfmt(platform)
    }

    /// The binfmt_misc handler that runs `platform`'s executables, or why there is none.
    fn binfmt(&self, platform: &Platform) -> Result<Execution, EmulationError> {
        let Some(header) = elf::header(&platform.architecture) else {
            return Err(self.no_emulator(platform, Missing::NotElf));
        };
        let entries = match binfmt::read(&self.binfmt_dir)? {
            Handlers::Entries(entries) => entries,
            Handlers::NotMounted => return Err(self.no_emulator(platform, Missing::NotMounted)),
            Handlers::Disabled => return Err(self.no_emulator(platform, Missing::Disabled)),
        };
        let matching: Vec<_> = entries.iter().filter(|e| e.matches(&header)).collect();
        if let Some(e) = matching.iter().find(|e| e.fix_binary()) {
            return Ok(Execution::Binfmt {
                interpreter: e.interpreter.clone(),
            });
        }
        match matching.first() {
            None => Err(self.no_emulator(platform, Missing::NoHandler)),
            Some(e) => Err(EmulationError::NotFixBinary {
                platform: platform.to_string(),
                entry: e.name.clone(),
                interpreter: e.interpreter.clone(),
                fix: format!(
                    "as root, remove it (`echo -1 > {}`) and run `rbuild setup-binfmt`, which \
                     registers it with F; or {}",
                    self.binfmt_dir.join(&e.name).display(),
                    hook_fix(&platform.architecture)
                ),
            }),
        }
    }

    /// The error for a platform nothing here runs, with the fix for `why`.
    fn no_emulator(&self, platform: &Platform, why: Missing) -> EmulationError {
        let arch = platform.architecture.as_str();
        let qemu = elf::qemu_name(arch).unwrap_or(arch);
        let dir = self.binfmt_dir.display();
        let hook = hook_fix(arch);
        let (why, fix) = match why {
            Missing::NotElf => (
                format!("{arch} programs are not ELF executables, which is all binfmt_misc runs"),
                format!("name a program that runs them with --emulator {arch}=PATH"),
            ),
            Missing::NotMounted => (
                format!(
                    "binfmt_misc is not mounted at {dir}, so the kernel runs no {arch} ({qemu}) \
                     binaries"
                ),
                format!(
                    "install qemu-user-static and run `rbuild setup-binfmt` as root (it mounts \
                     binfmt_misc and registers qemu's handlers), or {hook}"
                ),
            ),
            Missing::Disabled => (
                format!("binfmt_misc is disabled ({dir}/status says so)"),
                format!(
                    "as root, `echo 1 > {dir}/status` and run `rbuild setup-binfmt`, or {hook}"
                ),
            ),
            Missing::NoHandler => (
                format!("binfmt_misc has no handler for {arch} ({qemu}) binaries"),
                format!(
                    "install qemu-user-static and run `rbuild setup-binfmt` as root, or {hook}"
                ),
            ),
        };
        EmulationError::NoEmulator {
            platform: platform.to_string(),
            why,
            fix,
        }
    }
}

/// Why binfmt_misc cannot run a platform's programs.
enum Missing {
    NotElf,
    NotMounted,
    Disabled,
    NoHandler,
}

/// The hook that would do, named in errors: Debian's qemu-user-static binary for `arch`.
fn hook_fix(arch: &str) -> String {
    let qemu = elf::qemu_name(arch).unwrap_or(arch);
    format!("name an emulator with --emulator {arch}=/usr/bin/qemu-{qemu}-static")
}

/// Whether a `host` CPU runs `arch` binaries itself: its own, and the 32-bit architecture its
/// 64-bit one grew from (amd64 runs 386, arm64 runs arm v6/v7/v8).
pub fn runs_natively(host: &str, arch: &str) -> bool {
    host == arch || matches!((host, arch), ("amd64", "386") | ("arm64", "arm"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use binfmt::tests::AARCH64;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    /// A binfmt_misc double with these entries (mounted: it has `register`).
    fn binfmt_dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        for (name, text) in entries {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn err(emulators: &Emulators, platform: &str) -> String {
        emulators
            .for_platform(&p(platform))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_host_and_its_older_siblings_run_natively() {
        let none = Emulators::new(BTreeMap::new(), "/nonexistent".into());
        assert_eq!(
            none.for_platform(&Platform::host()).unwrap(),
            Execution::Native
        );
        assert!(runs_natively("amd64", "386"));
        assert!(runs_natively("arm64", "arm"));
        assert!(!runs_natively("386", "amd64"));
        assert!(!runs_natively("amd64", "arm64"));
        // A hook for the host's own architecture is not used.
        let host = Platform::host().architecture;
        let hooks = BTreeMap::from([(host, PathBuf::from("/q"))]);
        let emulators = Emulators::new(hooks, "/nonexistent".into());
        assert_eq!(
            emulators.for_platform(&Platform::host()).unwrap(),
            Execution::Native
        );
        assert!(err(&emulators, "windows/amd64").contains("Linux containers only"));
    }

    /// A foreign platform for these tests, whatever the host.
    fn foreign() -> (&'static str, &'static str) {
        match Platform::host().architecture.as_str() {
            "s390x" => ("linux/arm64", "qemu-aarch64"),
            _ => ("linux/s390x", "qemu-s390x"),
        }
    }

    #[test]
    fn a_handler_with_fix_binary_runs_the_platform() {
        let dir = binfmt_dir(&[
            ("qemu-aarch64", AARCH64),
            ("jar", "enabled\ninterpreter /j\nflags: \nextension .jar\n"),
        ]);
        let emulators = Emulators::new(BTreeMap::new(), dir.path().into());
        if Platform::host().architecture != "arm64" {
            assert_eq!(
                emulators.for_platform(&p("linux/arm64")).unwrap(),
                Execution::Binfmt {
                    interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".to_string()
                }
            );
        }
        let msg = err(&emulators, "linux/riscv64");
        let expected = "RUN for linux/riscv64 needs an emulator: binfmt_misc has no handler for \
            riscv64 (riscv64) binaries. Fix: install qemu-user-static and run `rbuild \
            setup-binfmt` as root, or name an emulator with \
            --emulator riscv64=/usr/bin/qemu-riscv64-static";
        assert_eq!(msg, expected);
    }

    #[test]
    fn handlers_without_f_or_disabled_do_not_count() {
        let (platform, _) = foreign();
        let arch = &p(platform).architecture;
        let header = hex::encode(elf::header(arch).unwrap());
        let entry = |flags: &str, state: &str| {
            format!(
                "{state}\ninterpreter /usr/bin/qemu-x\nflags: {flags}\noffset 0\nmagic {header}\n"
            )
        };
        let dir = binfmt_dir(&[("x", &entry("PO", "enabled"))]);
        let emulators = Emulators::new(BTreeMap::new(), dir.path().into());
        let msg = err(&emulators, platform);
        assert!(msg.contains("without the F (fix binary) flag"), "{msg}");
        assert!(
            msg.contains(&format!("echo -1 > {}/x", dir.path().display())),
            "{msg}"
        );
        assert!(msg.contains("rbuild setup-binfmt"), "{msg}");
        std::fs::write(dir.path().join("x"), entry("F", "disabled")).unwrap();
        assert!(err(&emulators, platform).contains("has no handler"));
        std::fs::write(dir.path().join("x"), entry("F", "enabled")).unwrap();
        assert!(emulators.for_platform(&p(platform)).is_ok());
        std::fs::write(dir.path().join("status"), "disabled\n").unwrap();
        assert!(err(&emulators, platform).contains("binfmt_misc is disabled"));
    }

    #[test]
    fn unmounted_binfmt_misc_and_non_elf_platforms_say_how_to_fix_them() {
        let empty = tempfile::TempDir::new().unwrap();
        let emulators = Emulators::new(BTreeMap::new(), empty.path().into());
        let (platform, _) = foreign();
        let msg = err(&emulators, platform);
        assert!(
            msg.contains(&format!(
                "RUN for {platform} needs an emulator: binfmt_misc is not mounted"
            )),
            "{msg}"
        );
        assert!(
            msg.contains("`rbuild setup-binfmt` as root (it mounts binfmt_misc"),
            "{msg}"
        );
        assert!(msg.contains("--emulator "), "{msg}");
        let msg = err(&emulators, "linux/wasm");
        assert!(
            msg.contains("not ELF executables") && msg.contains("--emulator wasm=PATH"),
            "{msg}"
        );
    }

    #[test]
    fn a_hook_wins_over_binfmt_for_a_foreign_platform() {
        let (platform, _) = foreign();
        let arch = p(platform).architecture;
        let dir = binfmt_dir(&[]);
        let hooks = BTreeMap::from([(arch, PathBuf::from("/usr/bin/qemu-hook"))]);
        let emulators = Emulators::new(hooks, dir.path().into());
        assert_eq!(
            emulators.for_platform(&p(platform)).unwrap(),
            Execution::Hook("/usr/bin/qemu-hook".into())
        );
    }
}
