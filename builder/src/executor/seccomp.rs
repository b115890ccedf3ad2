//! The seccomp filter every RUN gets. BuildKit applies Docker's default profile (an allow-list
//! of ~350 syscalls); this is its deny side: the syscalls that profile refuses to an
//! unprivileged container — namespaces, kernel keyrings, modules, BPF, clocks, reboot, … —
//! refused with EPERM, everything else allowed. `clone` is refused only with namespace flags,
//! `clone3` with ENOSYS so libcs fall back to `clone`, as Docker's profile does.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::ExecError;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// What Docker's default profile does not allow without extra capabilities.
const DENIED: [&str; 41] = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

/// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
const NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

pub fn default_profile() -> Result<LinuxSeccomp, ExecError> {
    let mut syscalls = vec![refuse(&DENIED, EPERM)?, refuse(&["clone3"], ENOSYS)?];
    for flag in NAMESPACE_FLAGS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(spec_error)?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(vec![arg])
                .build()
                .map_err(spec_error)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
        .map_err(spec_error)
}

fn refuse(names: &[&str], errno: u32) -> Result<LinuxSyscall, ExecError> {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .build()
        .map_err(spec_error)
}

/// The host's architecture and the 32-bit ones it runs, so a 32-bit binary cannot slip by.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn spec_error(e: oci_spec::OciSpecError) -> ExecError {
    ExecError::InvalidSpec(format!("seccomp profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_denies_namespaces_and_keyrings_and_allows_the_rest() {
        let profile = default_profile().unwrap();
        let json = serde_json::to_value(&profile).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        let names: Vec<&str> = json["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for denied in ["unshare", "setns", "keyctl", "bpf", "mount", "userfaultfd"] {
            assert!(names.contains(&denied), "{denied}");
        }
        let clone_rules = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["names"][0] == "clone")
            .count();
        assert_eq!(clone_rules, NAMESPACE_FLAGS.len());
    }
}
