//! `rbuild setup-binfmt`: registers qemu-user-static's binfmt_misc handlers with the `F` (fix
//! binary) flag, so the kernel runs foreign binaries inside build containers too.
//!
//! The handlers come from the package's systemd files (`/usr/lib/binfmt.d/qemu-*.conf`, one
//! register line each) or, failing those, its binfmt-support files (`/usr/share/binfmts/qemu-*`).
//! A handler already registered is left as it is: it may belong to the system's own setup
//! (systemd-binfmt, binfmt-support) and be in use by running builds, so one registered without
//! `F` is reported with the command that removes it rather than removed behind the user's back.

use std::io::Write;
use std::path::{Path, PathBuf};

use rbuild_frontend::platform::Platform;

use super::binfmt::Entry;
use super::{elf, runs_natively, EmulationError, BINFMT_MISC};

/// qemu-user-static's systemd binfmt.d files.
pub const BINFMT_D: &str = "/usr/lib/binfmt.d";
/// qemu-user-static's binfmt-support files.
pub const BINFMTS: &str = "/usr/share/binfmts";

/// One installed qemu handler rbuild can register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    /// The platform architecture it runs (`arm64`).
    pub arch: &'static str,
    /// The entry name (`qemu-aarch64`).
    pub name: String,
    pub interpreter: String,
    /// The flags it is registered with, `F` included.
    pub flags: String,
    /// What is written to `register`: `:name:type:offset:magic:mask:interpreter:flags`.
    pub line: String,
}

/// What became of one handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Registered,
    AlreadyRegistered,
    /// Registered in a way RUN steps cannot use; the text says what to do.
    Unusable(String),
}

/// `rbuild setup-binfmt [PLATFORM...]`: prints one line per handler; fails when one cannot
/// be used.
pub fn setup_binfmt(platforms: &[String]) -> Result<(), EmulationError> {
    if !rustix::process::geteuid().is_root() {
        return Err(EmulationError::NotRoot);
    }
    let wanted = platforms
        .iter()
        .map(|p| {
            Platform::parse(p).map_err(|e| EmulationError::BadPlatform {
                platform: p.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let installed = installed(Path::new(BINFMT_D), Path::new(BINFMTS))?;
    let host = Platform::host().architecture;
    for p in wanted
        .iter()
        .filter(|p| runs_natively(&host, &p.architecture))
    {
        println!(
            "{}: runs natively here, nothing to register",
            p.architecture
        );
    }
    let chosen = choose(&installed, &host, &wanted)?;
    let dir = Path::new(BINFMT_MISC);
    mount_if_needed(dir)?;
    let mut unusable = Vec::new();
    for handler in &chosen {
        match register(dir, handler)? {
            Outcome::Registered => println!(
                "{}: registered {} ({}, flags {})",
                handler.arch, handler.name, handler.interpreter, handler.flags
            ),
            Outcome::AlreadyRegistered => println!("{}: already registered", handler.arch),
            Outcome::Unusable(why) => {
                println!("{}: {why}", handler.arch);
                unusable.push(handler.arch);
            }
        }
    }
    if !unusable.is_empty() {
        return Err(EmulationError::Unusable(format!(
            "binfmt_misc handlers RUN steps cannot use: {} (see above)",
            unusable.join(", ")
        )));
    }
    Ok(())
}

/// The installed handlers for the `wanted` platforms' architectures (all foreign ones when
/// none is named), skipping what `host` runs natively.
pub fn choose(
    installed: &[Handler],
    host: &str,
    wanted: &[Platform],
) -> Result<Vec<Handler>, EmulationError> {
    let foreign = |h: &&Handler| !runs_natively(host, h.arch);
    if wanted.is_empty() {
        return Ok(installed.iter().filter(foreign).cloned().collect());
    }
    let mut chosen: Vec<Handler> = Vec::new();
    for platform in wanted {
        let arch = platform.architecture.as_str();
        if runs_natively(host, arch) {
            continue;
        }
        if elf::header(arch).is_none() {
            return Err(EmulationError::BadPlatform {
                platform: platform.to_string(),
                message: format!(
                    "{arch} programs are not ELF executables, which is all binfmt_misc can \
                     run; name a program that runs them with --emulator {arch}=PATH"
                ),
            });
        }
        let handler = installed.iter().find(|h| h.arch == arch).ok_or_else(|| {
            EmulationError::NoHandlerFor {
                platform: platform.to_string(),
                why: format!(
                    " (no qemu-{} handler)",
                    elf::qemu_name(arch).unwrap_or(arch)
                ),
            }
        })?;
        if !chosen.contains(handler) {
            chosen.push(handler.clone());
        }
    }
    Ok(chosen)
}

/// qemu-user-static's handlers for platform architectures, from the binfmt.d files, else the
/// binfmt-support ones, sorted by architecture.
pub fn installed(binfmt_d: &Path, binfmts: &Path) -> Result<Vec<Handler>, EmulationError> {
    let mut handlers = Vec::new();
    for (path, qemu) in qemu_files(binfmt_d, ".conf") {
        let text = read(&path)?;
        handlers.extend(from_conf(&text).filter(|h| h.name == format!("qemu-{qemu}")));
    }
    if handlers.is_empty() {
        for (path, qemu) in qemu_files(binfmts, "") {
            handlers.extend(from_binfmts(&qemu, &read(&path)?));
        }
    }
    if handlers.is_empty() && !any_qemu_file(binfmt_d, binfmts) {
        return Err(EmulationError::QemuMissing {
            conf_dirs: format!("{}, {}", binfmt_d.display(), binfmts.display()),
        });
    }
    handlers.sort_by_key(|h| h.arch);
    Ok(handlers)
}

fn read(path: &Path) -> Result<String, EmulationError> {
    std::fs::read_to_string(path).map_err(|source| EmulationError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The `qemu-NAME{suffix}` files of `dir`, with NAME; none when `dir` is missing.
fn qemu_files(dir: &Path, suffix: &str) -> Vec<(PathBuf, String)> {
    let Ok(items) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, String)> = items
        .flatten()
        .filter_map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            let qemu = name
                .strip_prefix("qemu-")?
                .strip_suffix(suffix)?
                .to_string();
            Some((item.path(), qemu))
        })
        .collect();
    files.sort();
    files
}

fn any_qemu_file(binfmt_d: &Path, binfmts: &Path) -> bool {
    !qemu_files(binfmt_d, ".conf").is_empty() || !qemu_files(binfmts, "").is_empty()
}

/// A handler from a binfmt.d file: its first register line (`#` and `;` start comments).
pub fn from_conf(text: &str) -> Option<Handler> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(['#', ';']))?;
    let delim = line.chars().next()?;
    let fields: Vec<&str> = line[delim.len_utf8()..].split(delim).collect();
    let [name, kind, offset, magic, mask, interpreter, flags] = fields[..] else {
        return None;
    };
    let arch = elf::arch_of_qemu_name(name.strip_prefix("qemu-")?)?;
    Some(handler(
        arch,
        [name, kind, offset, magic, mask, interpreter, flags],
    ))
}

/// A handler from a binfmt-support file (`interpreter`, `magic`, `offset`, `mask`,
/// `credentials`, `preserve` lines), with the flags those give.
pub fn from_binfmts(qemu: &str, text: &str) -> Option<Handler> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
    };
    let arch = elf::arch_of_qemu_name(qemu)?;
    let mut flags = String::new();
    if field("preserve") == Some("yes") {
        flags.push('P');
    }
    if field("credentials") == Some("yes") {
        flags.push('C');
    }
    let name = format!("qemu-{qemu}");
    let offset = field("offset").unwrap_or("0");
    let (magic, mask) = (field("magic")?, field("mask").unwrap_or(""));
    let interpreter = field("interpreter")?;
    Some(handler(
        arch,
        [&name, "M", offset, magic, mask, interpreter, &flags],
    ))
}

/// A handler from the fields of its register line, `F` added to its flags.
fn handler(arch: &'static str, fields: [&str; 7]) -> Handler {
    let [name, kind, offset, magic, mask, interpreter, flags] = fields;
    let flags = with_fix_binary(flags);
    Handler {
        arch,
        name: name.to_string(),
        interpreter: interpreter.to_string(),
        line: format!(":{name}:{kind}:{offset}:{magic}:{mask}:{interpreter}:{flags}"),
        flags,
    }
}

/// `flags` with `F` added when missing: without it the kernel opens the interpreter at exec
/// time, in the mount namespace of the build container, where it does not exist.
pub fn with_fix_binary(flags: &str) -> String {
    let mut flags = flags.trim().to_string();
    if !flags.contains('F') {
        flags.push('F');
    }
    flags
}

/// Mounts binfmt_misc at `dir` unless it is mounted there already.
fn mount_if_needed(dir: &Path) -> Result<(), EmulationError> {
    if dir.join("register").exists() {
        return Ok(());
    }
    let failed = |source: std::io::Error| EmulationError::Mount {
        dir: dir.display().to_string(),
        source,
    };
    use rustix::mount::{mount, MountFlags};
    match mount("binfmt_misc", dir, "binfmt_misc", MountFlags::empty(), None) {
        Ok(()) => Ok(()),
        // Another setup-binfmt mounted it in between.
        Err(_) if dir.join("register").exists() => Ok(()),
        Err(e) => Err(failed(e.into())),
    }
}

/// Registers `handler` with the binfmt_misc filesystem at `dir`, unless it is registered.
pub fn register(dir: &Path, handler: &Handler) -> Result<Outcome, EmulationError> {
    if let Some(outcome) = existing(dir, handler)? {
        return Ok(outcome);
    }
    let register = dir.join("register");
    let failed = |source| EmulationError::Register {
        name: handler.name.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&register)
        .map_err(failed)?;
    // One write: the kernel takes a registration from a single write(2).
    match file.write(handler.line.as_bytes()) {
        Ok(_) => Ok(Outcome::Registered),
        // Someone registered it since we looked (another rbuild setup-binfmt): theirs counts.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
            Ok(existing(dir, handler)?.unwrap_or(Outcome::AlreadyRegistered))
        }
        Err(e) => Err(failed(e)),
    }
}

/// What is registered already under the handler's name, if anything.
fn existing(dir: &Path, handler: &Handler) -> Result<Option<Outcome>, EmulationError> {
    let path = dir.join(&handler.name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EmulationError::Io { path, source }),
    };
    let entry = Entry::parse(&handler.name, &text);
    let shown = path.display();
    Ok(Some(if !entry.fix_binary() {
        Outcome::Unusable(format!(
            "{} is registered without the F flag (flags {:?}), so the kernel looks for its \
             interpreter inside build containers; remove it (`echo -1 > {shown}`) and run \
             `rbuild setup-binfmt` again",
            handler.name, entry.flags
        ))
    } else if !entry.enabled {
        Outcome::Unusable(format!(
            "{} is registered but disabled; enable it with `echo 1 > {shown}`",
            handler.name
        ))
    } else {
        Outcome::AlreadyRegistered
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF";

    const BINFMTS_FILE: &str = r"package qemu-user-static
interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P
magic \x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00
offset 0
mask \xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff
credentials no
fix_binary yes
preserve yes
";

    #[test]
    fn binfmt_d_lines_are_taken_as_they_are() {
        let h = from_conf(&format!("# qemu\n\n{CONF}\n")).unwrap();
        assert_eq!(h.arch, "arm64");
        assert_eq!(h.name, "qemu-aarch64");
        assert_eq!(h.flags, "OPF");
        assert_eq!(h.line, CONF);
        let no_f = CONF.replace(":OPF", ":OP");
        assert!(from_conf(&no_f).unwrap().line.ends_with(":OPF"));
        // Handlers for CPUs no platform names are not rbuild's business.
        assert!(from_conf(&CONF.replace("qemu-aarch64", "qemu-sparc")).is_none());
        assert!(from_conf("garbage").is_none());
    }

    #[test]
    fn binfmts_files_become_register_lines() {
        let h = from_binfmts("riscv64", BINFMTS_FILE).unwrap();
        assert_eq!(h.arch, "riscv64");
        assert_eq!(h.flags, "PF");
        assert!(h.line.starts_with(r":qemu-riscv64:M:0:\x7f\x45"));
        assert!(h
            .line
            .ends_with(r"\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/riscv64-binfmt-P:PF"));
        assert!(
            from_binfmts("riscv64", "interpreter /x\n").is_none(),
            "no magic"
        );
    }

    #[test]
    fn installed_handlers_prefer_binfmt_d_and_say_when_qemu_is_missing() {
        let d = tempfile::TempDir::new().unwrap();
        let (binfmt_d, binfmts) = (d.path().join("binfmt.d"), d.path().join("binfmts"));
        let msg = installed(&binfmt_d, &binfmts).unwrap_err().to_string();
        assert!(msg.contains("apt-get install qemu-user-static"), "{msg}");
        std::fs::create_dir_all(&binfmts).unwrap();
        std::fs::write(binfmts.join("qemu-riscv64"), BINFMTS_FILE).unwrap();
        let found = installed(&binfmt_d, &binfmts).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].arch, "riscv64");
        std::fs::create_dir_all(&binfmt_d).unwrap();
        std::fs::write(binfmt_d.join("qemu-aarch64.conf"), CONF).unwrap();
        std::fs::write(binfmt_d.join("python3.11.conf"), ":python:M::x::/p:").unwrap();
        let found = installed(&binfmt_d, &binfmts).unwrap();
        assert_eq!(found.iter().map(|h| h.arch).collect::<Vec<_>>(), ["arm64"]);
    }

    #[test]
    fn only_foreign_and_wanted_handlers_are_chosen() {
        let arm64 = from_conf(CONF).unwrap();
        let arm = from_conf(&CONF.replace("qemu-aarch64", "qemu-arm")).unwrap();
        let riscv = from_binfmts("riscv64", BINFMTS_FILE).unwrap();
        let all = [arm, arm64, riscv];
        let arches = |hs: Vec<Handler>| hs.iter().map(|h| h.arch).collect::<Vec<_>>();
        assert_eq!(
            arches(choose(&all, "amd64", &[]).unwrap()),
            ["arm", "arm64", "riscv64"]
        );
        assert_eq!(arches(choose(&all, "arm64", &[]).unwrap()), ["riscv64"]);
        let p = |s: &str| Platform::parse(s).unwrap();
        let wanted = [p("linux/arm64"), p("aarch64"), p("linux/amd64")];
        assert_eq!(arches(choose(&all, "amd64", &wanted).unwrap()), ["arm64"]);
        let msg = choose(&all, "amd64", &[p("linux/s390x")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("qemu-s390x"),
            "{msg}"
        );
        let msg = choose(&all, "amd64", &[p("linux/wasm")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("--emulator wasm=PATH"), "{msg}");
    }

    #[test]
    fn registration_respects_what_is_there() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        let h = from_conf(CONF).unwrap();
        assert_eq!(register(dir.path(), &h).unwrap(), Outcome::Registered);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("register")).unwrap(),
            CONF
        );
        let entry = crate::emulation::binfmt::tests::AARCH64;
        std::fs::write(dir.path().join("qemu-aarch64"), entry).unwrap();
        assert_eq!(
            register(dir.path(), &h).unwrap(),
            Outcome::AlreadyRegistered
        );
        std::fs::write(dir.path().join("qemu-aarch64"), entry.replace("POF", "PO")).unwrap();
        let Outcome::Unusable(why) = register(dir.path(), &h).unwrap() else {
            panic!("a registration without F is not usable");
        };
        assert!(
            why.contains("without the F flag") && why.contains("echo -1 >"),
            "{why}"
        );
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            entry.replace("enabled", "disabled"),
        )
        .unwrap();
        assert!(matches!(
            register(dir.path(), &h).unwrap(),
            Outcome::Unusable(_)
        ));
    }
}
