//! BuildKit's shell-lexer data: `shell/envVarTest`, `shell/wordsTest`,
//! `derived/shell/process_word_with_matches.json` and `derived/shell/shell_pattern.json`
//! (formats in SOURCE.md, sections 4 to 6). Every case is one named trial.

use std::collections::BTreeSet;

use libtest_mimic::{Failed, Trial};
use rbuild_frontend::shell::{pattern, Lexer};
use serde_json::Value;

use crate::harness::{check, excepted_trial, read, read_json};

pub fn trials() -> Vec<Trial> {
    let mut trials = env_var_trials();
    trials.extend(words_trials());
    trials.extend(matches_trials());
    trials.extend(pattern_trials());
    trials
}

fn text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap_or_else(|e| panic!("{rel} is not UTF-8: {e}"))
}

/// The environment of `TestShellParser4EnvVars`.
fn env_var_env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Whether a platform tag of envVarTest applies here.
fn tag_applies(tag: &str) -> Option<bool> {
    match tag {
        "A" => Some(true),
        "U" => Some(!cfg!(windows)),
        "W" => Some(cfg!(windows)),
        _ => None,
    }
}

fn env_var_trials() -> Vec<Trial> {
    let data = text("shell/envVarTest");
    let mut trials = Vec::new();
    for (i, raw) in data.lines().enumerate() {
        let line = raw.trim();
        if raw.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = format!("shell/envVarTest/line-{}", i + 1);
        let fields: Vec<String> = line.split('|').map(|f| f.trim().to_string()).collect();
        let [tag, source, expected] = <[String; 3]>::try_from(fields).unwrap_or_default();
        match tag_applies(&tag) {
            Some(true) => trials.push(Trial::test(name, move || env_var_case(&source, &expected))),
            Some(false) => trials.push(excepted_trial(name)),
            None => {
                let msg = format!("bad line (want TAG|source|expected): {line:?}");
                trials.push(Trial::test(name, move || Err(msg.into())));
            }
        }
    }
    trials
}

fn env_var_case(source: &str, expected: &str) -> Result<(), Failed> {
    let got = Lexer::new('\\').process_word(source, &env_var_env());
    match (expected, got) {
        ("error", got) => check(got.is_err(), || {
            format!("{source:?}: want error, got {got:?}")
        }),
        (_, got) => check(got.as_deref() == Ok(expected), || {
            format!("{source:?}: want {expected:?}, got {got:?}")
        }),
    }
}

fn words_trials() -> Vec<Trial> {
    let data = text("shell/wordsTest");
    let mut env: Vec<(String, String)> = Vec::new();
    let mut trials = Vec::new();
    for (i, line) in data.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let (k, v) = assignment
                .trim_start_matches(' ')
                .split_once('=')
                .unwrap_or((assignment, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let name = format!("shell/wordsTest/line-{}", i + 1);
        let (line, env) = (line.to_string(), env.clone());
        trials.push(Trial::test(name, move || words_case(&line, &env)));
    }
    trials
}

fn words_case(line: &str, env: &[(String, String)]) -> Result<(), Failed> {
    let parts: Vec<&str> = line.split('|').collect();
    let [input, expected] = parts[..] else {
        return Err(format!("want exactly one '|' in {line:?}").into());
    };
    let input = input.trim();
    let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
    let got = match Lexer::new('\\').process_words(input, &env) {
        Ok(words) => words,
        Err(_) => vec!["error".to_string()],
    };
    check(got == expected, || {
        format!("{input:?}: want {expected:?}, got {got:?}")
    })
}

fn matches_trials() -> Vec<Trial> {
    let Value::Array(cases) = read_json("derived/shell/process_word_with_matches.json") else {
        panic!("process_word_with_matches.json is not an array");
    };
    cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            let input = case["input"].as_str().unwrap_or_default().to_string();
            let name = format!("shell/process_word_with_matches/{i}-{input}");
            Trial::test(name, move || matches_case(&case))
        })
        .collect()
}

fn string_set(v: &Value) -> BTreeSet<String> {
    let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn matches_case(case: &Value) -> Result<(), Failed> {
    let input = case["input"].as_str().ok_or("input is not a string")?;
    let env: Vec<(String, String)> = case["envs"]
        .as_object()
        .ok_or("envs is not an object")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let got = Lexer::new('\\').process_word_with_matches(input, &env);
    if case["expectedErr"].as_bool() == Some(true) {
        return check(got.is_err(), || {
            format!("{input:?}: want error, got {got:?}")
        });
    }
    let got = got.map_err(|e| format!("{input:?}: unexpected error: {e}"))?;
    let expected = case["expected"]
        .as_str()
        .ok_or("expected is not a string")?;
    check(got.result == expected, || {
        format!("{input:?}: want {expected:?}, got {:?}", got.result)
    })?;
    let (matched, unmatched) = (string_set(&case["matches"]), string_set(&case["unmatched"]));
    check(got.matched == matched, || {
        format!("matched: want {matched:?}, got {:?}", got.matched)
    })?;
    check(got.unmatched == unmatched, || {
        format!("unmatched: want {unmatched:?}, got {:?}", got.unmatched)
    })
}

fn pattern_trials() -> Vec<Trial> {
    let data = read_json("derived/shell/shell_pattern.json");
    let mut trials = Vec::new();
    let object = |key: &str| data[key].as_object().cloned().unwrap_or_default();
    for (pat, want) in object("convertShellPatternToRegex_greedy_anchored") {
        let want = want.as_str().unwrap_or_default().to_string();
        trials.push(Trial::test(
            format!("shell/shell_pattern/convert/{pat}"),
            move || {
                let got = pattern::convert_shell_pattern_to_regex(&pat, true, true);
                check(got.as_deref() == Ok(want.as_str()), || {
                    format!("{pat:?}: want {want:?}, got {got:?}")
                })?;
                check(regex::Regex::new(&want).is_ok(), || {
                    format!("{want:?} does not compile in Rust")
                })
            },
        ));
    }
    let invalid = data["convertShellPatternToRegex_invalid"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, pat) in invalid.into_iter().enumerate() {
        let pat = pat.as_str().unwrap_or_default().to_string();
        trials.push(Trial::test(
            format!("shell/shell_pattern/invalid/{i}-{pat}"),
            move || {
                let got = pattern::convert_shell_pattern_to_regex(&pat, true, true);
                check(got.is_err(), || format!("{pat:?}: want error, got {got:?}"))
            },
        ));
    }
    for (pat, want) in object("reversePattern") {
        let want = want.as_str().unwrap_or_default().to_string();
        trials.push(Trial::test(
            format!("shell/shell_pattern/reverse/{pat}"),
            move || {
                let got = pattern::reverse_pattern(&pat);
                check(got == want, || {
                    format!("{pat:?}: want {want:?}, got {got:?}")
                })
            },
        ));
    }
    trials
}
