//! The command line, as `docker buildx build` users expect it: `rbuild [build] [OPTIONS] PATH`,
//! plus `rbuild debug …` for looking inside the frontend.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rbuild",
    version,
    about = "Build OCI images from Dockerfiles, without a daemon",
    arg_required_else_help = true,
    after_help = "`rbuild [OPTIONS] PATH` is short for `rbuild build [OPTIONS] PATH`; \
                  see `rbuild build --help` for the build options."
)]
pub struct Cli {
    /// Where rbuild keeps images, layers and cache (default: /var/lib/rbuild as root,
    /// else $XDG_DATA_HOME/rbuild).
    #[arg(long, global = true, value_name = "DIR", env = "RBUILD_ROOT")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory (the default command).
    Build(Box<BuildArgs>),
    /// List the images in the local store.
    Images(ImagesArgs),
    /// Remove image names from the local store (`rbuild prune` frees their blobs).
    Rmi(RmiArgs),
    /// Load images from an OCI layout tar or a docker-archive tar (stdin by default).
    Load(LoadArgs),
    /// Save images to a tar (OCI layout by default, or a docker archive).
    Save(SaveArgs),
    /// Show the disk space the store uses, by kind, and what `prune --all` would free.
    Du(DuArgs),
    /// Delete what no image uses: unreferenced blobs and layers, and build cache as asked.
    Prune(PruneArgs),
    /// Push images from the local store to their registries.
    Push(PushArgs),
    /// Pull images from registries into the local store.
    Pull(PullArgs),
    /// Save credentials for a registry in the Docker config (`~/.docker/config.json`).
    Login(LoginArgs),
    /// Remove saved credentials for a registry.
    Logout(LogoutArgs),
    /// Register qemu-user-static's binfmt_misc handlers so RUN steps for foreign platforms run
    /// (as root; mounts binfmt_misc if needed).
    SetupBinfmt(SetupBinfmtArgs),
    /// Look inside the frontend: the parsed Dockerfile, the build graph.
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Debug, Args)]
pub struct SetupBinfmtArgs {
    /// Only the handlers of these platforms (`linux/arm64 riscv64`, or comma-separated as
    /// `--platform` takes them); default: every foreign architecture qemu-user-static has a
    /// handler for.
    #[arg(value_name = "PLATFORM", value_delimiter = ',')]
    pub platforms: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image IDs.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct DuArgs {
    /// Also list every build cache record: its key, size, last use and layer.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Drop the whole build cache too (images stay; `rmi` removes those).
    #[arg(short, long)]
    pub all: bool,
    /// Keep at most this much build cache (`10GB`, `512MB`, `1.5GiB`; binary units, as
    /// docker reads them), dropping the least recently used first.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// `until=DURATION`: drop build cache unused for longer than a Go duration (`24h`, `90m`).
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Accepted for docker compatibility: rbuild never asks for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// The names to remove (`app:1.0`).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this tar instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The images to save.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The archive format.
    #[arg(long, value_enum, default_value_t = SaveFormat::Oci)]
    pub format: SaveFormat,
}

/// How to reach registries; shared by every command that talks to one.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// A registry (`HOST[:PORT]`) to reach over plain HTTP; localhost and 127.0.0.0/8
    /// always are. Repeatable, or comma-separated.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "RBUILD_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// A PEM file of certificate authorities to trust for registries, beside the system's.
    #[arg(long = "registry-ca", value_name = "FILE", env = "SSL_CERT_FILE")]
    pub registry_ca: Vec<PathBuf>,
}

impl RegistryArgs {
    pub fn options(&self, max_concurrent_uploads: usize) -> crate::registry::RegistryOptions {
        let mut options = crate::registry::RegistryOptions::new(
            self.insecure_registries
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            self.registry_ca.clone(),
        );
        options.max_concurrent_uploads = max_concurrent_uploads;
        options
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The images to push (`registry/repository:tag`).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// How many blobs to upload at once.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_concurrent_uploads: usize,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The images to pull (`alpine:3.20`, `registry/repository@sha256:…`).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// The platforms to pull from a multi-platform image, comma-separated (default: this
    /// machine's).
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`ghcr.io`, `localhost:5000`); Docker Hub when left out.
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password or access token (prefer --password-stdin: this one lands in shell history).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password or token from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry; Docker Hub when left out.
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// An OCI image layout in a tar: every digest kept as stored.
    Oci,
    /// A docker archive, as `docker save` writes it (uncompressed layers).
    Docker,
}

/// The words that name a subcommand (or ask clap for help); anything else in first position
/// means `build`.
const SUBCOMMANDS: [&str; 18] = [
    "build",
    "push",
    "pull",
    "login",
    "logout",
    "images",
    "rmi",
    "load",
    "save",
    "du",
    "prune",
    "debug",
    "setup-binfmt",
    "help",
    "-h",
    "--help",
    "-V",
    "--version",
];

impl Cli {
    /// Parses the process arguments, reading `rbuild ARGS…` as `rbuild build ARGS…` unless the
    /// first argument names a subcommand. Exits (code 2) on usage errors, as clap does.
    pub fn parse_args() -> Cli {
        Cli::parse_from(with_default_subcommand(std::env::args_os().collect()))
    }
}

/// Inserts `build` after the program name unless the first argument is a subcommand (or a
/// request for help or the version). `rbuild` alone stays as it is, so clap prints the help.
pub fn with_default_subcommand(mut args: Vec<OsString>) -> Vec<OsString> {
    // Global options may come before the subcommand: `rbuild --root DIR images`.
    let mut first = 1;
    while let Some(arg) = args.get(first) {
        if arg == "--root" {
            first += 2;
        } else if arg.to_string_lossy().starts_with("--root=") {
            first += 1;
        } else {
            break;
        }
    }
    let explicit = match args.get(first) {
        None => first == 1,
        Some(word) => SUBCOMMANDS.iter().any(|s| word == s),
    };
    if !explicit {
        args.insert(first.min(args.len()), OsString::from("build"));
    }
    args
}

/// `docker buildx build`'s flags (DESIGN.md, "User-facing conventions").
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context directory, or `-` to read the Dockerfile from stdin with no context.
    #[arg(value_name = "PATH")]
    pub context: String,

    /// Name of the Dockerfile (default: PATH/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,

    /// Name and optionally a tag (`name:tag`) for the image; repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub build_args: Vec<BuildArg>,

    /// Set the target build stage to build.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Set target platform(s) for the build (`linux/amd64,linux/arm64`); repeatable.
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Shorthand for `--output=type=registry`.
    #[arg(long)]
    pub push: bool,

    /// Output destination (`type=local,dest=path`, `type=oci,dest=file.tar`, …); repeatable.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// External cache sources (`type=registry,ref=…`, `type=local,src=…`); repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Cache export destinations (`type=registry,ref=…,mode=max`, …); repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Do not use cache when building the image.
    #[arg(long)]
    pub no_cache: bool,

    /// How many RUN steps may run at once (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Do not use the cache for the steps of this stage (name or index); repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Always attempt to pull all referenced images.
    #[arg(long)]
    pub pull: bool,

    /// How many blobs to upload at once when pushing.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_concurrent_uploads: usize,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Secret to expose to the build (`id=mysecret[,src=/local/secret]`); repeatable.
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,

    /// SSH agent socket or keys to expose to the build (`default|<id>[=<socket>|<key>[,…]]`).
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,

    /// Allow an extra privilege (`security.insecure` for `RUN --security=insecure`,
    /// `network.host`); repeatable.
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,

    /// Set metadata for an image (`KEY=VALUE`); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<KeyValue>,

    /// Networking mode for the RUN instructions during build (`default`, `host`, `none`).
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,

    /// Type of progress output.
    #[arg(long, value_enum, default_value_t = Progress::Auto, env = "BUILDKIT_PROGRESS")]
    pub progress: Progress,

    /// Print only the image ID (`--progress=quiet`), as `docker build -q` does.
    #[arg(short, long)]
    pub quiet: bool,

    /// Write the image ID to a file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Write build result metadata to a file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// How step filesystems are made: overlayfs mounts, or copies where overlay is missing.
    #[arg(long, value_enum, default_value_t = SnapshotterChoice::Auto, env = "RBUILD_SNAPSHOTTER")]
    pub snapshotter: SnapshotterChoice,

    /// Run RUN steps for a foreign architecture through this host program (a static
    /// qemu-user: `arm64=/usr/bin/qemu-aarch64-static`) instead of binfmt_misc; repeatable.
    /// Stock qemu emulates the step's first process only: programs it starts need
    /// binfmt_misc too (busybox applets run in-process).
    #[arg(long = "emulator", value_name = "ARCH=PATH", value_parser = parse_emulator)]
    pub emulators: Vec<EmulatorArg>,
}

/// One `--emulator ARCH=PATH`: `arch` normalised as platforms are (`aarch64` → `arm64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorArg {
    pub arch: String,
    pub path: PathBuf,
}

fn parse_emulator(text: &str) -> Result<EmulatorArg, String> {
    let (arch, path) = text
        .split_once('=')
        .ok_or_else(|| "expected ARCH=PATH, e.g. arm64=/usr/bin/qemu-aarch64-static".to_string())?;
    if path.is_empty() {
        return Err("the emulator's PATH after `=` is empty".to_string());
    }
    Ok(EmulatorArg {
        arch: crate::emulation::hooks::normalize_arch(arch)?,
        path: PathBuf::from(path),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotterChoice {
    /// overlayfs when the state root's filesystem supports it, else native.
    Auto,
    Overlay,
    /// Copy-based: slower, works on any filesystem.
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

/// One `KEY=VALUE` pair from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One `--build-arg`: `value` is `None` for a bare `KEY` that is not set in the environment,
/// which buildx drops without a word (so scripts may pass optional variables through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArg {
    pub key: String,
    pub value: Option<String>,
}

/// `KEY=VALUE`, or `KEY` alone to take the value from the environment, as buildx does.
fn parse_build_arg(text: &str) -> Result<BuildArg, String> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (text, std::env::var(text).ok()),
    };
    if key.is_empty() {
        return Err("the key before `=` is empty".to_string());
    }
    Ok(BuildArg {
        key: key.to_string(),
        value,
    })
}

/// `KEY=VALUE`, or `KEY` alone for an empty value, as buildx does for labels.
fn parse_label(text: &str) -> Result<KeyValue, String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    key_value(key, value)
}

fn key_value(key: &str, value: &str) -> Result<KeyValue, String> {
    if key.is_empty() {
        return Err("the key before `=` is empty".to_string());
    }
    Ok(KeyValue {
        key: key.to_string(),
        value: value.to_string(),
    })
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the parsed Dockerfile as BuildKit's AST dump.
    Ast(DebugAstArgs),
    /// Print the build graph the Dockerfile lowers to.
    Graph(DebugGraphArgs),
}

#[derive(Debug, Args)]
pub struct DebugAstArgs {
    /// The Dockerfile to read; `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = DEFAULT_DOCKERFILE)]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct DebugGraphArgs {
    /// The Dockerfile to read; `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = DEFAULT_DOCKERFILE)]
    pub file: String,

    /// Keep only what this stage needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub build_args: Vec<BuildArg>,

    /// The target platform (`linux/amd64`, …).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `debug` reads `./Dockerfile` when no `-f` is given.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let args = args.iter().map(OsString::from).collect();
        Cli::try_parse_from(with_default_subcommand(args))
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_path_alone_means_build() {
        let cli = parse(&["rbuild", "-t", "app:1.0", "."]).unwrap();
        let Command::Build(args) = cli.command else {
            panic!("not a build: {cli:?}");
        };
        assert_eq!(args.context, ".");
        assert_eq!(args.tags, ["app:1.0"]);
    }

    #[test]
    fn subcommands_are_not_taken_for_paths() {
        let cli = parse(&["rbuild", "debug", "ast", "-f", "x"]).unwrap();
        assert!(matches!(cli.command, Command::Debug(DebugCommand::Ast(a)) if a.file == "x"));
        let cli = parse(&["rbuild", "build", "ctx"]).unwrap();
        assert!(matches!(cli.command, Command::Build(a) if a.context == "ctx"));
    }

    #[test]
    fn buildx_flags_parse() {
        let cli = parse(&[
            "rbuild",
            "--platform=linux/amd64,linux/arm64",
            "--platform",
            "linux/riscv64",
            "--build-arg",
            "A=1=2",
            "--label",
            "l",
            "--progress=plain",
            "-o",
            "type=local,dest=out",
            "--push",
            "--no-cache",
            "--pull",
            "--network=none",
            "--cache-from",
            "type=local,src=c",
            "--cache-to",
            "type=local,dest=c",
            "--secret",
            "id=s",
            "--ssh",
            "default",
            "--iidfile",
            "iid",
            "--metadata-file",
            "meta.json",
            "--target",
            "final",
            "ctx",
        ])
        .unwrap();
        let Command::Build(args) = cli.command else {
            panic!("not a build");
        };
        assert_eq!(
            args.platforms,
            ["linux/amd64", "linux/arm64", "linux/riscv64"]
        );
        assert_eq!(args.build_args[0].key, "A");
        assert_eq!(args.build_args[0].value.as_deref(), Some("1=2"));
        assert_eq!(args.labels[0].value, "");
        assert_eq!(args.progress, Progress::Plain);
        assert_eq!(args.network, "none");
        assert_eq!(args.target.as_deref(), Some("final"));
        assert!(args.push && args.no_cache && args.pull);
    }

    #[test]
    fn a_build_arg_without_value_comes_from_the_environment() {
        // PATH is set in every environment cargo runs tests in.
        let cli = parse(&[
            "rbuild",
            "--build-arg",
            "PATH",
            "--build-arg",
            "RBUILD_SURELY_UNSET_VAR",
            ".",
        ])
        .unwrap();
        let Command::Build(args) = cli.command else {
            panic!("not a build");
        };
        let path = std::env::var("PATH").unwrap();
        assert_eq!(args.build_args[0].value.as_deref(), Some(path.as_str()));
        assert_eq!(args.build_args[1].key, "RBUILD_SURELY_UNSET_VAR");
        assert_eq!(args.build_args[1].value, None);
        assert!(parse(&["rbuild", "--build-arg", "=v", "."]).is_err());
    }

    #[test]
    fn the_root_may_come_before_the_subcommand() {
        let cli = parse(&["rbuild", "--root", "/r", "images"]).unwrap();
        assert!(matches!(cli.command, Command::Images(_)));
        assert_eq!(cli.root.as_deref(), Some(std::path::Path::new("/r")));
        let cli = parse(&["rbuild", "--root=/r", "-t", "a", "."]).unwrap();
        assert!(matches!(cli.command, Command::Build(a) if a.tags == ["a"]));
        let cli = parse(&["rbuild", "save", "a", "--root", "/r"]).unwrap();
        assert_eq!(cli.root.as_deref(), Some(std::path::Path::new("/r")));
    }

    #[test]
    fn emulators_parse_with_their_architecture_normalised() {
        let cli = parse(&[
            "rbuild",
            "--emulator",
            "aarch64=/usr/bin/qemu-aarch64-static",
            "--emulator=linux/riscv64=q",
            ".",
        ])
        .unwrap();
        let Command::Build(args) = cli.command else {
            panic!("not a build");
        };
        assert_eq!(args.emulators[0].arch, "arm64");
        assert_eq!(
            args.emulators[0].path,
            PathBuf::from("/usr/bin/qemu-aarch64-static")
        );
        assert_eq!(args.emulators[1].arch, "riscv64");
        assert!(parse(&["rbuild", "--emulator", "arm64", "."]).is_err());
        assert!(parse(&["rbuild", "--emulator", "vax=/q", "."]).is_err());
        assert!(parse(&["rbuild", "--emulator", "arm64=", "."]).is_err());
    }

    #[test]
    fn setup_binfmt_is_a_subcommand() {
        let cli = parse(&["rbuild", "setup-binfmt", "linux/arm64"]).unwrap();
        assert!(matches!(cli.command, Command::SetupBinfmt(a) if a.platforms == ["linux/arm64"]));
    }

    #[test]
    fn unknown_progress_modes_are_rejected() {
        assert!(parse(&["rbuild", "--progress=fancy", "."]).is_err());
    }
}
