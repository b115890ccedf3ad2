//! Lint warnings, named as BuildKit's build checks name them, printed as
//! `Dockerfile:LINE: warning: Rule: message`.

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use crate::instructions::{Command, Stages};
use crate::parser::Dockerfile;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub rule: &'static str,
    pub message: String,
    pub line: usize,
}

impl Warning {
    pub fn new(rule: &'static str, line: usize, message: impl Into<String>) -> Self {
        Warning {
            rule,
            message: message.into(),
            line,
        }
    }

    /// `Dockerfile:12: warning: JSONArgsRecommended: …`
    pub fn render(&self, file_name: &str) -> String {
        format!(
            "{file_name}:{}: warning: {}: {}",
            self.line, self.rule, self.message
        )
    }
}

/// The `# check=skip=A,B` directive: rules to leave out (`all` for every rule).
pub fn skipped_rules(dockerfile: &Dockerfile) -> Vec<String> {
    let Some(check) = dockerfile.directives.iter().find(|d| d.name == "check") else {
        return Vec::new();
    };
    check
        .value
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("skip="))
        .flat_map(|list| list.split(',').map(|r| r.trim().to_string()))
        .collect()
}

/// Drops warnings the file's `# check=skip=` directive turns off.
pub fn apply_skips(dockerfile: &Dockerfile, warnings: &mut Vec<Warning>) {
    let skip = skipped_rules(dockerfile);
    if skip.iter().any(|s| s.eq_ignore_ascii_case("all")) {
        warnings.clear();
    }
    warnings.retain(|w| !skip.iter().any(|s| s == w.rule));
}

/// Rules that need only the typed instructions (UndefinedVar and UndefinedArgInFrom need
/// expansion and come from lowering).
pub fn check_stages(stages: &Stages) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for meta in &stages.meta_args {
        secrets_check(&mut out, "ARG", &meta.arg.name, meta.line);
    }
    for stage in &stages.stages {
        check_from(&mut out, stage, &mut names);
        let has_shell = stage
            .instructions
            .iter()
            .any(|i| matches!(i.command, Command::Shell { .. }));
        let mut workdir_absolute = false;
        for instr in &stage.instructions {
            let line = instr.line;
            match &instr.command {
                Command::Cmd(c) | Command::Entrypoint(c) if c.shell_form && !has_shell => {
                    let kw = instr.keyword.to_ascii_uppercase();
                    out.push(Warning::new(
                        "JSONArgsRecommended",
                        line,
                        format!("JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"),
                    ));
                }
                Command::Env { pairs } | Command::Label { pairs } => {
                    let kw = instr.keyword.to_ascii_uppercase();
                    if pairs.iter().any(|p| p.legacy) {
                        out.push(Warning::new(
                            "LegacyKeyValueFormat",
                            line,
                            format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                        ));
                    }
                    if kw == "ENV" {
                        pairs
                            .iter()
                            .for_each(|p| secrets_check(&mut out, "ENV", &p.key, line));
                    }
                }
                Command::Arg { args } => {
                    args.iter()
                        .for_each(|a| secrets_check(&mut out, "ARG", &a.name, line));
                }
                Command::Maintainer { .. } => out.push(Warning::new(
                    "MaintainerDeprecated",
                    line,
                    "Maintainer instruction is deprecated in favor of using label",
                )),
                Command::Workdir { path } => {
                    let absolute = path.starts_with('/') || path.starts_with('$');
                    if !absolute && !workdir_absolute {
                        out.push(Warning::new(
                            "WorkdirRelativePath",
                            line,
                            format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                        ));
                    }
                    workdir_absolute |= absolute;
                }
                _ => {}
            }
        }
    }
    out.sort_by_key(|w| w.line);
    out
}

fn check_from<'a>(
    out: &mut Vec<Warning>,
    stage: &'a crate::instructions::Stage,
    names: &mut Vec<&'a str>,
) {
    let line = stage.from_instruction.line;
    let keyword = &stage.from_instruction.keyword;
    let Some(name) = stage.from.name.as_deref() else {
        return;
    };
    // The raw name (before lowercasing) is the third argument of the FROM line.
    let raw = stage
        .from_instruction
        .original
        .split_whitespace()
        .last()
        .unwrap_or(name);
    if raw != raw.to_lowercase() {
        out.push(Warning::new(
            "StageNameCasing",
            line,
            format!("Stage name '{raw}' should be lowercase"),
        ));
    }
    if let Some(as_kw) = &stage.from.as_keyword {
        let upper = |s: &str| s == s.to_uppercase();
        let lower = |s: &str| s == s.to_lowercase();
        if (upper(keyword) && !upper(as_kw)) || (lower(keyword) && !lower(as_kw)) {
            out.push(Warning::new(
                "FromAsCasing",
                line,
                "'as' and 'FROM' keywords' casing do not match",
            ));
        }
    }
    if names.contains(&name) {
        out.push(Warning::new(
            "DuplicateStageName",
            line,
            format!("Duplicate stage name {name:?}, stage names should be unique"),
        ));
    }
    names.push(name);
}

fn secret_regexes() -> &'static (Regex, Regex) {
    static RE: OnceLock<(Regex, Regex)> = OnceLock::new();
    RE.get_or_init(|| {
        let deny = r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pass|pword|passwd|secret|token)(?:_|$)";
        let allow = r"(?i)(?:_|^)public(?:_|$)";
        (Regex::new(deny).expect("valid"), Regex::new(allow).expect("valid"))
    })
}

fn secrets_check(out: &mut Vec<Warning>, kw: &str, name: &str, line: usize) {
    let (deny, allow) = secret_regexes();
    if deny.is_match(name) && !allow.is_match(name) {
        out.push(Warning::new(
            "SecretsUsedInArgOrEnv",
            line,
            format!("Do not use ARG or ENV instructions for sensitive data ({kw} {name:?})"),
        ));
    }
}
