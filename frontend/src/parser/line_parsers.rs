//! The per-keyword rules that split an instruction's arguments, as BuildKit's parser splits
//! them (quotes and escapes stay raw here; they are processed when the instruction is typed).

use super::error::ParseErrorKind;
use super::split_command::is_token_space;

/// Arguments as split for one keyword, and whether they were a JSON array.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SplitArgs {
    pub args: Vec<String>,
    pub json: bool,
}

impl SplitArgs {
    fn plain(args: Vec<String>) -> Self {
        SplitArgs { args, json: false }
    }
}

/// The rule a keyword's arguments follow at parse level.
pub fn split_args(keyword: &str, rest: &str, escape: char) -> Result<SplitArgs, ParseErrorKind> {
    match keyword {
        "add" | "copy" | "volume" => maybe_json_to_list(rest),
        "run" | "cmd" | "entrypoint" | "shell" => maybe_json(rest),
        "env" => name_val(rest, "ENV", escape),
        "label" => name_val(rest, "LABEL", escape),
        "arg" => Ok(SplitArgs::plain(parse_words(rest, escape))),
        "from" | "expose" => Ok(SplitArgs::plain(whitespace_delimited(rest))),
        "maintainer" | "user" | "workdir" | "stopsignal" => Ok(SplitArgs::plain(one_string(rest))),
        "healthcheck" => health_config(rest),
        // Unknown keywords keep one empty argument; typing the instruction rejects them.
        _ => Ok(SplitArgs::plain(vec![String::new()])),
    }
}

fn one_string(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

/// Splits on runs of `[\t\v\f\r ]`, keeping empty leading/trailing pieces as Go's
/// `regexp.Split` does (the rest is already trimmed, so there are none in practice).
pub fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for c in rest.chars() {
        if is_token_space(c) {
            if !in_space {
                out.push(std::mem::take(&mut current));
            }
            in_space = true;
        } else {
            in_space = false;
            current.push(c);
        }
    }
    out.push(current);
    out
}

/// `Ok(Some(..))` for a JSON array of strings, `Ok(None)` for text that is not a JSON array
/// (it falls back to shell form), and an error for an array holding anything but strings.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, ParseErrorKind> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ParseErrorKind::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn maybe_json(rest: &str) -> Result<SplitArgs, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(SplitArgs::default());
    }
    Ok(match parse_json(rest)? {
        Some(args) => SplitArgs { args, json: true },
        None => SplitArgs::plain(vec![rest.to_string()]),
    })
}

fn maybe_json_to_list(rest: &str) -> Result<SplitArgs, ParseErrorKind> {
    Ok(match parse_json(rest)? {
        Some(args) => SplitArgs { args, json: true },
        None => SplitArgs::plain(whitespace_delimited(rest)),
    })
}

/// Go's `unicode.IsSpace` on ASCII: unlike Rust's `is_ascii_whitespace` it includes `\v`.
fn is_go_ascii_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// HEALTHCHECK: the first word (`CMD`, `NONE`, …), then the rest as CMD takes it.
fn health_config(rest: &str) -> Result<SplitArgs, ParseErrorKind> {
    let sep = rest.find(is_go_ascii_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(SplitArgs::default());
    }
    let kind = rest[..sep].to_string();
    let cmd = maybe_json(rest[sep..].trim_start_matches(is_go_ascii_space))?;
    let mut args = vec![kind];
    args.extend(cmd.args);
    Ok(SplitArgs {
        args,
        json: cmd.json,
    })
}

/// ENV and LABEL: `key value sep` triples; `sep` is `=` for `k=v` words and empty for the legacy
/// `KEY name value` form, whose value is the rest of the line.
fn name_val(rest: &str, keyword: &str, escape: char) -> Result<SplitArgs, ParseErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(SplitArgs::default());
    };
    if !first.contains('=') {
        let Some(at) = rest.find(is_token_space) else {
            return Err(ParseErrorKind::MissingValue(keyword.to_string()));
        };
        let value = rest[at..].trim_start_matches(is_token_space);
        let args = vec![rest[..at].to_string(), value.to_string(), String::new()];
        return Ok(SplitArgs::plain(args));
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word));
        };
        args.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(SplitArgs::plain(args))
}

/// Splits on whitespace, keeping quotes and escapes raw (`parseWords` upstream): quoted
/// sections may hold spaces, an escape keeps the next character in the word.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == escape && q != '\'' {
                match chars.next() {
                    Some(next) => {
                        word.push(c);
                        word.push(next);
                    }
                    None => quote = None,
                }
                continue;
            }
            word.push(c);
            continue;
        }
        if !in_word {
            if c.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        if c.is_whitespace() {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            word.clear();
            blank_ok = false;
            in_word = false;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            // An escape at the very end is dropped.
            if let Some(next) = chars.next() {
                word.push(c);
                word.push(next);
            }
            continue;
        }
        word.push(c);
    }
    if (in_word || quote.is_some()) && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fallback_and_errors() {
        let s = split_args("cmd", r#"["a", "b"]"#, '\\').unwrap();
        assert_eq!((s.args, s.json), (vec!["a".into(), "b".into()], true));
        let s = split_args("cmd", "['a']", '\\').unwrap();
        assert_eq!((s.args, s.json), (vec!["['a']".into()], false));
        assert_eq!(
            split_args("run", r#"["a", 1]"#, '\\'),
            Err(ParseErrorKind::NotStringArray)
        );
        let s = split_args("cmd", "[]", '\\').unwrap();
        assert!(s.args.is_empty() && s.json);
    }

    #[test]
    fn env_forms() {
        let s = split_args("env", "a b c", '\\').unwrap();
        assert_eq!(s.args, vec!["a", "b c", ""]);
        let s = split_args("env", "a=1 b=\"x y\"", '\\').unwrap();
        assert_eq!(s.args, vec!["a", "1", "=", "b", "\"x y\"", "="]);
        assert_eq!(
            split_args("env", "PATH", '\\'),
            Err(ParseErrorKind::MissingValue("ENV".into()))
        );
        assert!(matches!(
            split_args("label", "a=1 b", '\\'),
            Err(ParseErrorKind::MissingEquals(_))
        ));
    }

    #[test]
    fn healthcheck_splits_type_then_command() {
        let s = split_args("healthcheck", "CMD [\"a\", \"b c\"]", '\\').unwrap();
        assert_eq!(s.args, vec!["CMD", "a", "b c"]);
        assert!(s.json);
        assert!(split_args("healthcheck", "", '\\').unwrap().args.is_empty());
    }
}
