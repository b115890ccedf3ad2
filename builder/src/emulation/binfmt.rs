//! The kernel's binfmt_misc handlers, read from its filesystem (`/proc/sys/fs/binfmt_misc`):
//! one file per handler (`enabled`, `interpreter …`, `flags: …`, `offset …`, `magic …`,
//! `mask …`), beside `register` and `status`.

use std::path::{Path, PathBuf};

use super::EmulationError;

/// One registered handler, as its entry file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's file name (`qemu-aarch64`).
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    /// The flag letters (`POF`).
    pub flags: String,
    /// `None` for a handler that matches file name extensions rather than magic bytes.
    pub magic: Option<Magic>,
}

/// A magic-bytes rule: the masked file bytes at `offset` equal `magic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magic {
    pub offset: usize,
    pub magic: Vec<u8>,
    /// As long as `magic`; all ones when the entry has none.
    pub mask: Vec<u8>,
}

impl Entry {
    /// Parses an entry file's text.
    pub fn parse(name: &str, text: &str) -> Entry {
        let mut entry = Entry {
            name: name.to_string(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            magic: None,
        };
        let (mut offset, mut magic, mut mask) = (0, None, None);
        for line in text.lines() {
            let (key, value) = line.split_once([' ', ':']).unwrap_or((line, ""));
            let value = value.trim_start_matches(':').trim();
            match key {
                "enabled" => entry.enabled = true,
                "disabled" => entry.enabled = false,
                "interpreter" => entry.interpreter = value.to_string(),
                "flags" => entry.flags = value.to_string(),
                "offset" => offset = value.parse().unwrap_or(0),
                "magic" => magic = hex::decode(value).ok(),
                "mask" => mask = hex::decode(value).ok(),
                _ => {}
            }
        }
        entry.magic = magic.map(|magic| {
            let mask = mask
                .filter(|m: &Vec<u8>| m.len() == magic.len())
                .unwrap_or_else(|| vec![0xff; magic.len()]);
            Magic {
                offset,
                magic,
                mask,
            }
        });
        entry
    }

    /// Whether the kernel would hand a file starting with `header` to this handler (as
    /// `check_file` does: enabled, and the masked bytes at the offset equal the magic).
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(m) = self.magic.as_ref().filter(|_| self.enabled) else {
            return false;
        };
        let Some(bytes) = header.get(m.offset..m.offset + m.magic.len()) else {
            return false;
        };
        bytes
            .iter()
            .zip(&m.mask)
            .zip(&m.magic)
            .all(|((b, mask), magic)| b & mask == *magic)
    }

    /// The `F` (fix binary) flag: the kernel opened the interpreter when it was registered, so
    /// it runs in any mount namespace, a build container's included.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// What a binfmt_misc directory holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Handlers {
    /// Nothing is mounted there (no `register` file): the kernel runs no foreign binaries.
    NotMounted,
    /// Mounted, but `status` says `disabled`: no handler is used.
    Disabled,
    Entries(Vec<Entry>),
}

/// Reads every entry of the binfmt_misc filesystem at `dir`, sorted by name.
pub fn read(dir: &Path) -> Result<Handlers, EmulationError> {
    if !dir.join("register").exists() {
        return Ok(Handlers::NotMounted);
    }
    let io = |path: PathBuf| move |source| EmulationError::Io { path, source };
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    if status.trim() == "disabled" {
        return Ok(Handlers::Disabled);
    }
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io(dir.to_path_buf()))? {
        let item = item.map_err(io(dir.to_path_buf()))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let path = item.path();
        let text = std::fs::read_to_string(&path).map_err(io(path))?;
        entries.push(Entry::parse(&name, &text));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Handlers::Entries(entries))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::emulation::elf::header;

    /// Debian qemu-user-static's aarch64 entry, as the kernel shows it.
    pub const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn an_entry_file_parses() {
        let e = Entry::parse("qemu-aarch64", AARCH64);
        assert!(e.enabled && e.fix_binary());
        assert_eq!(e.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert_eq!(e.flags, "POF");
        let m = e.magic.as_ref().unwrap();
        assert_eq!((m.offset, m.magic.len(), m.mask[7]), (0, 20, 0));
        assert!(e.matches(&header("arm64").unwrap()));
        assert!(!e.matches(&header("amd64").unwrap()));
        assert!(!e.matches(&header("arm").unwrap()));
    }

    #[test]
    fn the_mask_is_applied_to_the_file_bytes() {
        // The aarch64 mask ignores the osabi byte and e_type's low bit (ET_DYN matches too).
        let e = Entry::parse("qemu-aarch64", AARCH64);
        let mut pie = header("arm64").unwrap();
        pie[7] = 3;
        pie[16] = 3;
        assert!(e.matches(&pie));
        // An offset past the header's bytes cannot be judged: no match.
        let far = "enabled\ninterpreter /x\nflags: F\noffset 18\nmagic b700b700\n";
        assert!(!Entry::parse("far", far).matches(&header("arm64").unwrap()));
        let at = "enabled\ninterpreter /x\nflags: F\noffset 18\nmagic b700\n";
        assert!(Entry::parse("at", at).matches(&header("arm64").unwrap()));
    }

    #[test]
    fn disabled_and_extension_entries_match_nothing() {
        let disabled = AARCH64.replacen("enabled", "disabled", 1);
        assert!(!Entry::parse("d", &disabled).matches(&header("arm64").unwrap()));
        let jar = "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n";
        let e = Entry::parse("jar", jar);
        assert_eq!((e.magic.clone(), e.flags.as_str()), (None, ""));
        assert!(!e.matches(&header("arm64").unwrap()));
    }

    #[test]
    fn a_directory_without_register_is_not_mounted() {
        let dir = tempfile::TempDir::new().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Handlers::NotMounted);
        assert_eq!(
            read(&dir.path().join("missing")).unwrap(),
            Handlers::NotMounted
        );
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join("status"), "disabled\n").unwrap();
        std::fs::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Handlers::Disabled);
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let Handlers::Entries(entries) = read(dir.path()).unwrap() else {
            panic!("entries expected");
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "qemu-aarch64");
    }
}
