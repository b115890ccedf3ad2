//! What binfmt_misc would see of a program built for an architecture: the first bytes of a
//! typical ELF executable's header, and the names qemu gives the architectures.

/// How many header bytes [`header`] builds: `e_ident` (16), `e_type` (2) and `e_machine` (2),
/// which is what qemu's binfmt magic strings cover.
pub const HEADER_LEN: usize = 20;

/// The ELF properties that tell architectures apart.
struct Elf {
    class64: bool,
    big_endian: bool,
    machine: u16,
}

fn elf(arch: &str) -> Option<Elf> {
    let (class64, big_endian, machine) = match arch {
        "amd64" => (true, false, 0x3e),
        "386" => (false, false, 3),
        "arm64" => (true, false, 0xb7),
        "arm" => (false, false, 0x28),
        "riscv64" => (true, false, 0xf3),
        "ppc64le" => (true, false, 0x15),
        "ppc64" => (true, true, 0x15),
        "s390x" => (true, true, 0x16),
        "mips64le" => (true, false, 8),
        "mips64" => (true, true, 8),
        "loong64" => (true, false, 0x102),
        _ => return None,
    };
    Some(Elf {
        class64,
        big_endian,
        machine,
    })
}

/// The first [`HEADER_LEN`] bytes of an executable (`ET_EXEC`) for `arch` (a platform
/// architecture: `arm64`, `ppc64le`, …); `None` for an architecture without ELF binaries
/// (`wasm`) or one rbuild does not know.
pub fn header(arch: &str) -> Option<[u8; HEADER_LEN]> {
    let elf = elf(arch)?;
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if elf.class64 { 2 } else { 1 };
    h[5] = if elf.big_endian { 2 } else { 1 };
    h[6] = 1; // EV_CURRENT; osabi (7) and the padding stay 0 (System V).
    let (e_type, e_machine) = if elf.big_endian {
        (2u16.to_be_bytes(), elf.machine.to_be_bytes())
    } else {
        (2u16.to_le_bytes(), elf.machine.to_le_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

/// qemu's name for a platform architecture (`arm64` → `aarch64`), as in `qemu-aarch64-static`
/// and the binfmt_misc entry `qemu-aarch64`.
pub fn qemu_name(arch: &str) -> Option<&'static str> {
    QEMU_NAMES.iter().find(|(a, _)| *a == arch).map(|(_, q)| *q)
}

/// The platform architecture a qemu name stands for (`mips64el` → `mips64le`).
pub fn arch_of_qemu_name(qemu: &str) -> Option<&'static str> {
    QEMU_NAMES.iter().find(|(_, q)| *q == qemu).map(|(a, _)| *a)
}

const QEMU_NAMES: [(&str, &str); 11] = [
    ("amd64", "x86_64"),
    ("386", "i386"),
    ("arm64", "aarch64"),
    ("arm", "arm"),
    ("riscv64", "riscv64"),
    ("ppc64le", "ppc64le"),
    ("ppc64", "ppc64"),
    ("s390x", "s390x"),
    ("mips64le", "mips64el"),
    ("mips64", "mips64"),
    ("loong64", "loongarch64"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_those_of_real_executables() {
        // The start of Debian's arm64 busybox-static, as `xxd -l 20` shows it.
        let arm64 = hex::decode("7f454c460201010000000000000000000200b700").unwrap();
        assert_eq!(header("arm64").unwrap().as_slice(), arm64);
        let s390x = header("s390x").unwrap();
        assert_eq!(&s390x[4..7], [2, 2, 1]);
        assert_eq!(&s390x[16..], [0, 2, 0, 0x16]);
        let arm = header("arm").unwrap();
        assert_eq!((arm[4], arm[18], arm[19]), (1, 0x28, 0));
        assert_eq!(&header("loong64").unwrap()[18..], [0x02, 0x01]);
        assert!(header("wasm").is_none());
    }

    #[test]
    fn qemu_names_map_both_ways() {
        assert_eq!(qemu_name("arm64"), Some("aarch64"));
        assert_eq!(arch_of_qemu_name("mips64el"), Some("mips64le"));
        assert_eq!(arch_of_qemu_name("loongarch64"), Some("loong64"));
        assert_eq!(arch_of_qemu_name("sparc"), None);
    }
}
