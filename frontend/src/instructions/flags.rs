//! An instruction's `--flag[=value]` words, checked against the flags it declares (BuildKit's
//! `BFlags`): unknown flags, duplicates, missing values and bad booleans are errors.

use std::collections::BTreeMap;

use super::error::InstructionErrorKind;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlagKind {
    Bool,
    String,
    /// May repeat; every value is kept in order.
    Strings,
}

/// The parsed flags of one instruction.
#[derive(Debug, Default)]
pub struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Parses `words` (each `--name` or `--name=value`) against the declared flags.
    pub fn parse(
        words: &[String],
        declared: &[(&'static str, FlagKind)],
    ) -> Result<Flags, InstructionErrorKind> {
        let mut flags = Flags::default();
        for word in words {
            let body = word.strip_prefix("--").ok_or_else(|| {
                InstructionErrorKind::Invalid(format!("Arg {word:?} must start with '--'"))
            })?;
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, kind)) = declared.iter().find(|(n, _)| *n == name) else {
                return Err(InstructionErrorKind::UnknownFlag(name.to_string()));
            };
            let slot = flags.values.entry(key).or_default();
            if kind != FlagKind::Strings && !slot.is_empty() {
                return Err(InstructionErrorKind::DuplicateFlag(name.to_string()));
            }
            slot.push(flag_value(name, kind, value)?);
        }
        Ok(flags)
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// `None` when the flag was not given.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

fn flag_value(
    name: &str,
    kind: FlagKind,
    value: Option<&str>,
) -> Result<String, InstructionErrorKind> {
    match (kind, value) {
        (FlagKind::Bool, None) => Ok("true".into()),
        (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
            "" | "true" => Ok("true".into()),
            "false" => Ok("false".into()),
            _ => Err(InstructionErrorKind::BadBool {
                flag: name.to_string(),
                value: v.to_string(),
            }),
        },
        (_, None) => Err(InstructionErrorKind::MissingFlagValue(name.to_string())),
        (_, Some(v)) => Ok(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &[(&str, FlagKind)] = &[
        ("from", FlagKind::String),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Strings),
    ];

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_declared_flags() {
        let f = Flags::parse(
            &words(&["--from=a", "--link", "--exclude=x", "--exclude=y"]),
            DECL,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.strings("exclude"), vec!["x", "y"]);
        assert_eq!(f.bool("nope"), None);
    }

    #[test]
    fn rejects_bad_flags() {
        let err = |w: &[&str]| Flags::parse(&words(w), DECL).unwrap_err().to_string();
        assert_eq!(err(&["--boo"]), "unknown flag: --boo");
        assert_eq!(
            err(&["--from=a", "--from=b"]),
            "Duplicate flag specified: --from"
        );
        assert_eq!(err(&["--from"]), "Missing a value on flag: --from");
        assert_eq!(
            err(&["--link=maybe"]),
            "expecting boolean value for flag link, not: maybe"
        );
    }
}
