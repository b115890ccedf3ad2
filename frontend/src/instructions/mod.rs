//! Typed instructions: each AST node checked against its keyword's flags and argument rules,
//! and the file grouped into build stages (BuildKit's `instructions.Parse`).
//!
//! Values stay as written here (quotes, `$vars`); they are expanded when a stage is lowered,
//! because only then is the environment known.

mod duration;
mod error;
mod flags;
mod mount;
mod stages;

pub use duration::parse_duration;
pub use error::{InstructionError, InstructionErrorKind};
pub use mount::{parse_mount, CacheSharing, Mount, MountType, NetworkMode, SecurityMode};
pub use stages::{parse_stages, MetaArg, Stage, Stages};

use serde::Serialize;

use crate::parser::{Heredoc, Node};
use error::invalid;
use flags::{FlagKind, Flags};

/// A command line in exec form (JSON) or shell form (one string run through the shell).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandLine {
    pub args: Vec<String>,
    /// Shell form: `args` holds one string for the SHELL to run.
    pub shell_form: bool,
}

impl CommandLine {
    fn from_node(node: &Node) -> Self {
        CommandLine {
            args: node.args.clone(),
            shell_form: !node.json,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Written in the legacy `KEY name value` form (a lint warning).
    pub legacy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct From {
    pub image: String,
    pub platform: Option<String>,
    /// The stage name, lowercased.
    pub name: Option<String>,
    /// The `AS` keyword was not all upper or all lower case like FROM (lint).
    pub as_keyword: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: CommandLine,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
}

/// The parts COPY and ADD share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopySpec {
    pub sources: Vec<String>,
    pub dest: String,
    pub heredocs: Vec<Heredoc>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub exclude: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub spec: CopySpec,
    pub from: Option<String>,
    pub parents: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Add {
    pub spec: CopySpec,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`, as the image config holds it.
    pub test: Vec<String>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Command {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Copy(Copy),
    Add(Add),
    Env { pairs: Vec<KeyValue> },
    Label { pairs: Vec<KeyValue> },
    Arg { args: Vec<ArgDecl> },
    Expose { ports: Vec<String> },
    Healthcheck(Healthcheck),
    Maintainer { name: String },
    Onbuild { expression: String },
    Shell { shell: Vec<String> },
    Stopsignal { signal: String },
    User { user: String },
    Volume { paths: Vec<String> },
    Workdir { path: String },
}

/// A typed instruction and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instruction {
    pub command: Command,
    /// The keyword as written.
    pub keyword: String,
    pub original: String,
    pub line: usize,
    pub end_line: usize,
    pub column: usize,
}

/// Types one AST node.
pub fn parse_instruction(node: &Node) -> Result<Instruction, InstructionError> {
    let command = parse_command(node).map_err(|kind| locate(node, kind))?;
    Ok(Instruction {
        command,
        keyword: node.keyword.clone(),
        original: node.original.clone(),
        line: node.start_line,
        end_line: node.end_line,
        column: node.column,
    })
}

/// Places an error on the node; an error about a flag points at that flag.
fn locate(node: &Node, kind: InstructionErrorKind) -> InstructionError {
    let flag = match &kind {
        InstructionErrorKind::UnknownFlag(f)
        | InstructionErrorKind::DuplicateFlag(f)
        | InstructionErrorKind::MissingFlagValue(f) => Some(format!("--{f}")),
        InstructionErrorKind::BadBool { flag, .. } => Some(format!("--{flag}")),
        _ => None,
    };
    let offset = flag
        .and_then(|f| node.original.rfind(&f))
        .map_or(0, |at| node.original[..at].chars().count());
    InstructionError {
        kind,
        line: node.start_line,
        end_line: node.end_line,
        column: node.column + offset,
    }
}

fn parse_command(node: &Node) -> Result<Command, InstructionErrorKind> {
    let keyword = node.keyword.to_ascii_uppercase();
    match keyword.as_str() {
        "FROM" => parse_from(node).map(Command::From),
        "RUN" => parse_run(node).map(Command::Run),
        "CMD" => no_flags(node).map(|_| Command::Cmd(CommandLine::from_node(node))),
        "ENTRYPOINT" => no_flags(node).map(|_| Command::Entrypoint(CommandLine::from_node(node))),
        "COPY" => parse_copy(node).map(Command::Copy),
        "ADD" => parse_add(node).map(Command::Add),
        "ENV" => key_values(node, "ENV").map(|pairs| Command::Env { pairs }),
        "LABEL" => key_values(node, "LABEL").map(|pairs| Command::Label { pairs }),
        "ARG" => parse_arg(node).map(|args| Command::Arg { args }),
        "EXPOSE" => at_least_one(node, "EXPOSE").map(|ports| Command::Expose { ports }),
        "HEALTHCHECK" => parse_healthcheck(node).map(Command::Healthcheck),
        "MAINTAINER" => exactly_one(node, "MAINTAINER").map(|name| Command::Maintainer { name }),
        "ONBUILD" => parse_onbuild(node),
        "SHELL" => parse_shell(node).map(|shell| Command::Shell { shell }),
        "STOPSIGNAL" => {
            exactly_one(node, "STOPSIGNAL").map(|signal| Command::Stopsignal { signal })
        }
        "USER" => exactly_one(node, "USER").map(|user| Command::User { user }),
        "VOLUME" => parse_volume(node).map(|paths| Command::Volume { paths }),
        "WORKDIR" => exactly_one(node, "WORKDIR").map(|path| Command::Workdir { path }),
        _ => Err(InstructionErrorKind::UnknownInstruction(
            node.keyword.clone(),
        )),
    }
}

fn no_flags(node: &Node) -> Result<Flags, InstructionErrorKind> {
    Flags::parse(&node.flags, &[])
}

fn exactly_one(node: &Node, name: &str) -> Result<String, InstructionErrorKind> {
    no_flags(node)?;
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(InstructionErrorKind::ExactlyOne(name.into())),
    }
}

fn at_least_one(node: &Node, name: &str) -> Result<Vec<String>, InstructionErrorKind> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(InstructionErrorKind::AtLeastOne(name.into()));
    }
    Ok(node.args.clone())
}

fn parse_from(node: &Node) -> Result<From, InstructionErrorKind> {
    let flags = Flags::parse(&node.flags, &[("platform", FlagKind::String)])?;
    let (image, name, as_keyword) = match node.args.as_slice() {
        [image] => (image.clone(), None, None),
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            (image.clone(), Some(stage_name(name)?), Some(as_kw.clone()))
        }
        _ => return Err(InstructionErrorKind::FromArgs),
    };
    Ok(From {
        image,
        platform: flags.string("platform"),
        name,
        as_keyword,
    })
}

/// Stage names are case-insensitive: `^[a-z][a-z0-9-_.]*$` after lowercasing.
fn stage_name(name: &str) -> Result<String, InstructionErrorKind> {
    let lower = name.to_lowercase();
    let mut chars = lower.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(lower)
    } else {
        Err(InstructionErrorKind::StageName(name.to_string()))
    }
}

fn parse_run(node: &Node) -> Result<Run, InstructionErrorKind> {
    let declared = [
        ("mount", FlagKind::Strings),
        ("network", FlagKind::String),
        ("security", FlagKind::String),
    ];
    let flags = Flags::parse(&node.flags, &declared)?;
    if node.args.is_empty() && node.heredocs.is_empty() {
        return Err(InstructionErrorKind::AtLeastOne("RUN".into()));
    }
    let mounts = flags
        .strings("mount")
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Run {
        command: CommandLine::from_node(node),
        heredocs: node.heredocs.clone(),
        mounts,
        network: flags
            .string("network")
            .map(|n| mount::parse_network(&n))
            .transpose()?,
        security: flags
            .string("security")
            .map(|s| mount::parse_security(&s))
            .transpose()?,
    })
}

fn copy_spec(node: &Node, flags: &Flags, name: &str) -> Result<CopySpec, InstructionErrorKind> {
    let (dest, sources) = match node.args.split_last() {
        None => return Err(InstructionErrorKind::AtLeastTwo(name.into())),
        Some((_, [])) if node.heredocs.is_empty() => {
            return Err(InstructionErrorKind::NoDestination(name.into()))
        }
        Some((dest, sources)) => (dest.clone(), sources.to_vec()),
    };
    Ok(CopySpec {
        sources,
        dest,
        heredocs: node.heredocs.clone(),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        exclude: flags.strings("exclude"),
    })
}

fn parse_copy(node: &Node) -> Result<Copy, InstructionErrorKind> {
    let declared = [
        ("from", FlagKind::String),
        ("chown", FlagKind::String),
        ("chmod", FlagKind::String),
        ("link", FlagKind::Bool),
        ("parents", FlagKind::Bool),
        ("exclude", FlagKind::Strings),
    ];
    let flags = Flags::parse(&node.flags, &declared)?;
    Ok(Copy {
        spec: copy_spec(node, &flags, "COPY")?,
        from: flags.string("from"),
        parents: flags.bool("parents").unwrap_or(false),
    })
}

fn parse_add(node: &Node) -> Result<Add, InstructionErrorKind> {
    let declared = [
        ("chown", FlagKind::String),
        ("chmod", FlagKind::String),
        ("link", FlagKind::Bool),
        ("checksum", FlagKind::String),
        ("keep-git-dir", FlagKind::Bool),
        ("unpack", FlagKind::Bool),
        ("exclude", FlagKind::Strings),
    ];
    let flags = Flags::parse(&node.flags, &declared)?;
    Ok(Add {
        spec: copy_spec(node, &flags, "ADD")?,
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
    })
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, InstructionErrorKind> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(InstructionErrorKind::AtLeastOne(name.into()));
    }
    let pairs: Vec<KeyValue> = node
        .args
        .chunks(3)
        .map(|c| KeyValue {
            key: c[0].clone(),
            value: c.get(1).cloned().unwrap_or_default(),
            legacy: c.get(2).is_none_or(|sep| sep.is_empty()),
        })
        .collect();
    if pairs.iter().any(|p| p.key.is_empty()) {
        return Err(invalid(format!("{name} names can not be blank")));
    }
    Ok(pairs)
}

fn parse_arg(node: &Node) -> Result<Vec<ArgDecl>, InstructionErrorKind> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(InstructionErrorKind::AtLeastOne("ARG".into()));
    }
    node.args
        .iter()
        .map(|word| {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (word.clone(), None),
            };
            if name.is_empty() {
                return Err(invalid("ARG names can not be blank"));
            }
            Ok(ArgDecl { name, default })
        })
        .collect()
}

fn parse_shell(node: &Node) -> Result<Vec<String>, InstructionErrorKind> {
    no_flags(node)?;
    if !node.json {
        return Err(InstructionErrorKind::NotJson("SHELL".into()));
    }
    if node.args.is_empty() {
        return Err(InstructionErrorKind::AtLeastOne("SHELL".into()));
    }
    Ok(node.args.clone())
}

fn parse_volume(node: &Node) -> Result<Vec<String>, InstructionErrorKind> {
    let paths = at_least_one(node, "VOLUME")?;
    if paths.iter().any(|p| p.trim().is_empty()) {
        return Err(invalid("VOLUME specified can not be an empty string"));
    }
    Ok(paths)
}

fn parse_onbuild(node: &Node) -> Result<Command, InstructionErrorKind> {
    no_flags(node)?;
    let Some(sub) = node.sub.as_deref() else {
        return Err(InstructionErrorKind::AtLeastOne("ONBUILD".into()));
    };
    match sub.keyword.to_ascii_uppercase().as_str() {
        "ONBUILD" => return Err(InstructionErrorKind::OnbuildChain),
        "FROM" | "MAINTAINER" => {
            return Err(InstructionErrorKind::OnbuildForbidden(
                sub.keyword.to_ascii_uppercase(),
            ))
        }
        _ => {}
    }
    // The trigger must itself be a valid instruction; it is stored as written, as Docker does.
    parse_command(sub)?;
    let expression = node.original.trim();
    let expression = expression[node.keyword.len()..].trim_start().to_string();
    Ok(Command::Onbuild { expression })
}

const HEALTH_FLAGS: [(&str, FlagKind); 5] = [
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];

fn parse_healthcheck(node: &Node) -> Result<Healthcheck, InstructionErrorKind> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(InstructionErrorKind::AtLeastOne("HEALTHCHECK".into()));
    };
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        no_flags(node)?;
        if !rest.is_empty() {
            return Err(invalid("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck {
            test: vec![kind],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        });
    }
    let flags = Flags::parse(&node.flags, &HEALTH_FLAGS)?;
    if kind != "CMD" {
        return Err(invalid(format!(
            "Unknown type {kind:?} in HEALTHCHECK (try CMD)"
        )));
    }
    if rest.is_empty() || (!node.json && rest.iter().all(|a| a.is_empty())) {
        return Err(invalid("Missing command after HEALTHCHECK CMD"));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(rest.iter().cloned());
    Ok(Healthcheck {
        test,
        interval: interval(&flags, "interval")?,
        timeout: interval(&flags, "timeout")?,
        start_period: interval(&flags, "start-period")?,
        start_interval: interval(&flags, "start-interval")?,
        retries: retries(&flags)?,
    })
}

/// A HEALTHCHECK duration: 0 means "inherit"; otherwise at least 1ms.
fn interval(flags: &Flags, name: &str) -> Result<Option<i64>, InstructionErrorKind> {
    let Some(text) = flags.string(name) else {
        return Ok(None);
    };
    let nanos = parse_duration(&text)?;
    if nanos < 0 {
        return Err(invalid(format!("Interval {name:?} cannot be negative")));
    }
    if nanos != 0 && nanos < 1_000_000 {
        return Err(invalid(format!(
            "Interval {name:?} cannot be less than 1ms"
        )));
    }
    Ok(Some(nanos))
}

fn retries(flags: &Flags) -> Result<Option<i64>, InstructionErrorKind> {
    let Some(text) = flags.string("retries") else {
        return Ok(None);
    };
    let n: i32 = text
        .parse()
        .map_err(|_| invalid(format!("invalid value {text:?} for --retries")))?;
    if n < 0 {
        return Err(invalid(format!("--retries cannot be negative ({n})")));
    }
    Ok(Some(n.into()))
}
