//! `RunSpec` → the bundle's `config.json`, modelled on BuildKit's `oci.GenerateSpec`
//! (`executor/oci/spec.go`, `spec_linux.go`) over containerd's default Unix spec:
//!
//! - process: argv, env (+ `PATH` and `HOME` defaults), cwd, uid/gid/additional gids, no
//!   terminal, no rlimits (BuildKit resets containerd's NOFILE 1024), new privileges allowed
//!   (`oci.WithNewPrivileges`), Docker's 14 default capabilities;
//! - namespaces pid, ipc, uts, mount (+ network for `Network::None`; + cgroup where cgroup v2
//!   namespaces are supported, as BuildKit checks);
//! - containerd's default mounts without `/run` (moby/buildkit#429), a read-only cgroup mount,
//!   and read-only binds of the generated `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`;
//! - containerd's masked and read-only paths, and a device cgroup that denies everything but
//!   the runtime's default devices.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::{ExecError, Network, RunSpec, DEFAULT_HOSTNAME};
use crate::users::Identity;

/// BuildKit's (and Docker's) default `PATH` on Linux, added when the env has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The files generated in the bundle and bound into the container.
#[derive(Clone, Debug)]
pub struct BundleFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// containerd's `defaultUnixCaps`, which BuildKit grants in sandbox mode.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability Linux has, by number: `RUN --security=insecure` (with `--allow
/// security.insecure`) runs privileged, as BuildKit's insecure mode does — with those of them
/// rbuild itself holds (a container cannot get more, and asking fails the start).
const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn capabilities(privileged: bool) -> Result<oci_spec::runtime::Capabilities, ExecError> {
    if !privileged {
        return Ok(DEFAULT_CAPABILITIES.into_iter().collect());
    }
    let bounding = own_bounding_set();
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, name)| {
            serde_json::from_value::<Capability>(serde_json::json!(format!("CAP_{name}")))
                .map_err(|e| ExecError::InvalidSpec(format!("capability {name}: {e}")))
        })
        .collect()
}

/// This process's capability bounding set (`CapBnd` in /proc/self/status); all bits when it
/// cannot be read.
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .unwrap_or(u64::MAX)
}

const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Checks what the runtime would otherwise reject with a less clear message.
pub fn validate(run: &RunSpec) -> Result<(), ExecError> {
    if run.args.is_empty() {
        return Err(ExecError::InvalidSpec("no command to run".to_string()));
    }
    if !run.cwd.starts_with('/') {
        return Err(ExecError::InvalidSpec(format!(
            "working directory {:?} is not absolute",
            run.cwd
        )));
    }
    let targets = run.mounts.iter().map(|m| &m.target);
    for target in targets.chain(run.tmpfs.iter().map(|t| &t.target)) {
        if !target.starts_with('/') {
            return Err(ExecError::InvalidSpec(format!(
                "mount target {target:?} is not absolute"
            )));
        }
    }
    if let Some(emulator) = run.emulator.as_ref().filter(|e| !e.is_absolute()) {
        return Err(ExecError::InvalidSpec(format!(
            "emulator {} is not an absolute path",
            emulator.display()
        )));
    }
    for kv in &run.env {
        if !kv.contains('=') {
            return Err(ExecError::InvalidSpec(format!(
                "environment entry {kv:?} is not KEY=VALUE"
            )));
        }
    }
    Ok(())
}

/// The process environment: `env` as given, `PATH` added when missing (BuildKit's exec op) and
/// `HOME` from passwd, else `/`, when missing (what runc does for BuildKit).
pub fn process_env(env: &[String], identity: &Identity) -> Vec<String> {
    let has = |key: &str| {
        env.iter()
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let mut out = env.to_vec();
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        let home = identity
            .home
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or("/");
        out.push(format!("HOME={home}"));
    }
    out
}

fn hostname(run: &RunSpec) -> &str {
    if run.hostname.is_empty() {
        DEFAULT_HOSTNAME
    } else {
        &run.hostname
    }
}

/// The contents of the generated files for this run.
pub fn file_contents(run: &RunSpec, host_resolv_conf: &str) -> (String, String, String) {
    (
        super::etc::hosts(hostname(run)),
        super::etc::resolv_conf(host_resolv_conf, run.network),
        super::etc::hostname(hostname(run)),
    )
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, ExecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_error)
}

fn spec_error(e: oci_spec::OciSpecError) -> ExecError {
    ExecError::InvalidSpec(format!("building the OCI runtime spec: {e}"))
}

/// Every mount of the container, in the order the runtime mounts them.
pub fn mounts(run: &RunSpec, files: &BundleFiles) -> Result<Vec<Mount>, ExecError> {
    let p = Path::new;
    let etc_bind = ["nosuid", "noexec", "nodev", "rbind", "ro"];
    let mut mounts = vec![
        mount("/proc", "proc", p("proc"), &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            p("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            p("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            p("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            p("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            p("sysfs"),
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            p("cgroup"),
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount("/etc/resolv.conf", "bind", &files.resolv_conf, &etc_bind)?,
        mount("/etc/hosts", "bind", &files.hosts, &etc_bind)?,
        mount("/etc/hostname", "bind", &files.hostname, &etc_bind)?,
    ];
    // Outer targets first (by depth, as BuildKit sorts them): a cache at /src/node_modules
    // goes on top of a bind at /src, a secret in /run/secrets on top of a tmpfs at /run.
    let mut extra: Vec<(&str, Mount)> = Vec::new();
    for m in &run.mounts {
        let options: &[&str] = if m.readonly {
            &["rbind", "ro"]
        } else {
            &["rbind"]
        };
        extra.push((&m.target, mount(&m.target, "bind", &m.source, options)?));
    }
    for t in &run.tmpfs {
        let size = t.size.map(|s| format!("size={s}"));
        let mut options = vec!["nosuid", "nodev"];
        options.extend(size.as_deref());
        extra.push((&t.target, mount(&t.target, "tmpfs", p("tmpfs"), &options)?));
    }
    extra.sort_by_key(|(target, _)| target.split('/').filter(|c| !c.is_empty()).count());
    mounts.extend(extra.into_iter().map(|(_, m)| m));
    if let Some(emulator) = &run.emulator {
        // Executable (no noexec), as BuildKit binds its qemu.
        let options = ["rbind", "ro", "nosuid", "nodev"];
        mounts.push(mount(super::EMULATOR_PATH, "bind", emulator, &options)?);
    }
    Ok(mounts)
}

/// Whether cgroup v2 namespaces work here (BuildKit's `cgroupV2NamespaceSupported`).
fn cgroup_namespace_supported() -> bool {
    Path::new("/proc/self/ns/cgroup").exists()
        && Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists()
}

/// The complete runtime spec.
pub fn build(
    rootfs: &Path,
    run: &RunSpec,
    identity: &Identity,
    files: &BundleFiles,
) -> Result<Spec, ExecError> {
    validate(run)?;
    let caps = capabilities(run.privileged)?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(spec_error)?;
    let mut user = UserBuilder::default().uid(identity.uid).gid(identity.gid);
    if !identity.additional_gids.is_empty() {
        user = user.additional_gids(identity.additional_gids.clone());
    }
    let env = process_env(&run.env, identity);
    let args = match run.emulator {
        Some(_) => super::emulated::args(rootfs, &run.args, &env)?,
        None => run.args.clone(),
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build().map_err(spec_error)?)
        .args(args)
        .env(env)
        .cwd(&run.cwd)
        .capabilities(capabilities)
        .no_new_privileges(false)
        .build()
        .map_err(spec_error)?;
    // The builder's default carries NOFILE 1024; BuildKit runs without rlimits.
    let mut process = process;
    process.set_rlimits(None);

    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if run.network == Network::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    if cgroup_namespace_supported() {
        kinds.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = kinds
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(spec_error)?;
    // Privileged: every device, no seccomp filter, nothing masked.
    let devices = LinuxDeviceCgroupBuilder::default()
        .allow(run.privileged)
        .access("rwm")
        .build()
        .map_err(spec_error)?;
    let mut linux = LinuxBuilder::default().namespaces(namespaces).resources(
        LinuxResourcesBuilder::default()
            .devices(vec![devices])
            .build()
            .map_err(spec_error)?,
    );
    if !run.privileged {
        linux = linux
            .seccomp(super::seccomp::default_profile()?)
            .masked_paths(MASKED_PATHS.map(String::from).to_vec())
            .readonly_paths(READONLY_PATHS.map(String::from).to_vec());
    }
    let linux = linux.build().map_err(spec_error)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()
                .map_err(spec_error)?,
        )
        .process(process)
        .hostname(hostname(run))
        .mounts(mounts(run, files)?)
        .linux(linux)
        .build()
        .map_err(spec_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::BindMount;

    fn files() -> BundleFiles {
        BundleFiles {
            hosts: "/b/hosts".into(),
            resolv_conf: "/b/resolv.conf".into(),
            hostname: "/b/hostname".into(),
        }
    }

    fn root() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: Some("/root".to_string()),
        }
    }

    fn json(spec: &Spec) -> serde_json::Value {
        serde_json::to_value(spec).unwrap()
    }

    #[test]
    fn the_spec_is_buildkits() {
        let mut run = RunSpec::new(["/bin/sh", "-c", "true"]);
        run.env = vec!["FOO=bar".to_string()];
        run.cwd = "/work".to_string();
        run.mounts.push(BindMount {
            source: "/host/cache".into(),
            target: "/cache".to_string(),
            readonly: true,
        });
        let app = Identity {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![50],
            home: Some("/home/app".to_string()),
        };
        let v = json(&build(Path::new("/r/rootfs"), &run, &app, &files()).unwrap());
        assert_eq!(v["root"]["path"], "/r/rootfs");
        assert_eq!(v["hostname"], "buildkitsandbox");
        let p = &v["process"];
        assert_eq!(p["terminal"], false);
        assert_eq!(p["args"], serde_json::json!(["/bin/sh", "-c", "true"]));
        assert_eq!(p["cwd"], "/work");
        assert_eq!(
            p["env"],
            serde_json::json!(["FOO=bar", format!("PATH={DEFAULT_PATH}"), "HOME=/home/app"])
        );
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["user"]["additionalGids"], serde_json::json!([50]));
        assert_eq!(p["noNewPrivileges"], false);
        assert!(p.get("rlimits").is_none());
        let mut caps: Vec<String> =
            serde_json::from_value(p["capabilities"]["bounding"].clone()).unwrap();
        caps.sort();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/hostname",
                "/cache"
            ]
        );
        let cache = &v["mounts"][10];
        assert_eq!(cache["options"], serde_json::json!(["rbind", "ro"]));
        assert_eq!(v["mounts"][8]["source"], "/b/hosts");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"), "host networking: {ns:?}");
        assert_eq!(&ns[..4], ["pid", "ipc", "uts", "mount"]);
    }

    #[test]
    fn network_none_gets_a_namespace() {
        let mut run = RunSpec::new(["true"]);
        run.network = Network::None;
        let v = json(&build(Path::new("/r"), &run, &root(), &files()).unwrap());
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n["type"] == "network"));
    }

    #[test]
    fn path_and_home_are_defaults_only() {
        let nobody = Identity {
            uid: 4242,
            gid: 0,
            additional_gids: vec![],
            home: None,
        };
        let env = process_env(&["PATH=/x".to_string()], &nobody);
        assert_eq!(env, ["PATH=/x", "HOME=/"]);
        let env = process_env(&["HOME=/h".to_string()], &root());
        assert_eq!(env, ["HOME=/h".to_string(), format!("PATH={DEFAULT_PATH}")]);
    }

    #[test]
    fn an_emulator_is_bound_and_runs_the_program() {
        let mut run = RunSpec::new(["/bin/busybox", "sh", "-c", "uname -m"]);
        run.emulator = Some("/usr/bin/qemu-aarch64-static".into());
        let v = json(&build(Path::new("/r/rootfs"), &run, &root(), &files()).unwrap());
        assert_eq!(
            v["process"]["args"],
            serde_json::json!([
                "/dev/.rbuild-emulator",
                "-0",
                "/bin/busybox",
                "/bin/busybox",
                "sh",
                "-c",
                "uname -m"
            ])
        );
        let last = v["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            last,
            serde_json::json!({
                "destination": "/dev/.rbuild-emulator",
                "type": "bind",
                "source": "/usr/bin/qemu-aarch64-static",
                "options": ["rbind", "ro", "nosuid", "nodev"]
            })
        );
        // Without one, neither the bind nor the argv change.
        run.emulator = None;
        let v = json(&build(Path::new("/r/rootfs"), &run, &root(), &files()).unwrap());
        assert_eq!(v["process"]["args"][0], "/bin/busybox");
        assert!(!v["mounts"].to_string().contains("rbuild-emulator"));
        run.emulator = Some("qemu".into());
        assert!(matches!(validate(&run), Err(ExecError::InvalidSpec(_))));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut run = RunSpec::new(["true"]);
        run.cwd = "work".to_string();
        assert!(matches!(validate(&run), Err(ExecError::InvalidSpec(_))));
        assert!(validate(&RunSpec::new(Vec::<String>::new())).is_err());
    }
}
