//! `derived/patternmatcher/*`: moby/patternmatcher conformance (SOURCE.md section 6), one
//! trial per case, each run through every API upstream's test runs it through.

#![allow(deprecated)] // upstream's tests exercise the deprecated APIs too

use libtest_mimic::{Failed, Trial};
use rbuild_frontend::dockerignore::{
    self, filepath_match, read_ignore_file, to_go_regexp_with_separator, MatchInfo, MatchType,
    Pattern, PatternMatcher, Separator,
};
use serde_json::Value;

use crate::harness::{check, read, read_json};

const DIR: &str = "derived/patternmatcher";

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    trials.extend(matches_trials());
    trials.extend(filepath_match_trials());
    trials.extend(compile_trials());
    trials.extend(simple_matches_trials());
    trials.push(Trial::test(
        "dockerignore/ignorefile_readall",
        ignorefile_readall,
    ));
    trials
}

fn str_field<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {case}"))
}

fn cases<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key].as_array().map_or(&[], Vec::as_slice)
}

fn strings(v: &Value) -> Vec<String> {
    let items = v.as_array().map_or(&[][..], Vec::as_slice);
    items
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn matches_trials() -> Vec<Trial> {
    let doc = read_json(&format!("{DIR}/matches.json"));
    let mut trials = Vec::new();
    let groups = [
        ("single", "single_pattern"),
        ("non_windows", "single_pattern_non_windows_only"),
    ];
    for (label, key) in groups {
        for (i, case) in cases(&doc, key).iter().enumerate() {
            let pattern = str_field(case, "pattern").to_string();
            let (text, pass) = (str_field(case, "text").to_string(), case["pass"] == true);
            let name = format!("dockerignore/matches/{label}/{i:02}-{pattern}");
            trials.push(Trial::test(name, move || {
                run_match_case(&[pattern], &text, pass, true)
            }));
        }
    }
    for (i, case) in cases(&doc, "multi_pattern").iter().enumerate() {
        let patterns = strings(&case["patterns"]);
        let (text, pass) = (str_field(case, "text").to_string(), case["pass"] == true);
        let name = format!("dockerignore/matches/multi/{i:02}-{}", patterns.join(","));
        trials.push(Trial::test(name, move || {
            run_match_case(&patterns, &text, pass, false)
        }));
    }
    trials
}

/// Runs one case through every API upstream's TestMatches uses; the deprecated
/// single-flag walker only for single-pattern cases, as upstream.
fn run_match_case(patterns: &[String], text: &str, pass: bool, single: bool) -> Result<(), Failed> {
    let pm = PatternMatcher::new(patterns).map_err(|e| format!("New({patterns:?}): {e}"))?;
    let mut results = vec![
        (
            "MatchesOrParentMatches",
            pm.matches_or_parent_matches(text).ok(),
        ),
        ("MatchesUsingParentResults", walk_with_match_info(&pm, text)),
        (
            "MatchesUsingParentResultsNoContext",
            pm.matches_using_parent_results(text, &MatchInfo::default())
                .ok()
                .map(|r| r.0),
        ),
        (
            "decide",
            pm.decide(text).ok().map(|d| d.is_some_and(|d| d.excluded)),
        ),
    ];
    if single {
        results.push(("MatchesUsingParentResult", walk_with_flag(&pm, text)));
    }
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, got)| *got != Some(pass))
        .map(|(api, got)| format!("{api} gave {got:?}"))
        .collect();
    check(wrong.is_empty(), || {
        format!(
            "patterns={patterns:?} text={text:?} want {pass}: {}",
            wrong.join("; ")
        )
    })
}

/// The parent directories of `text` as upstream's test walks them: "a", "a/b", ...
fn parents(text: &str) -> Vec<String> {
    let parent = dockerignore::dir(text);
    if parent == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = parent.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

fn walk_with_match_info(pm: &PatternMatcher, text: &str) -> Option<bool> {
    let mut info = MatchInfo::default();
    for dir in parents(text) {
        info = pm.matches_using_parent_results(&dir, &info).ok()?.1;
    }
    pm.matches_using_parent_results(text, &info)
        .ok()
        .map(|r| r.0)
}

fn walk_with_flag(pm: &PatternMatcher, text: &str) -> Option<bool> {
    let mut matched = false;
    for dir in parents(text) {
        matched = pm.matches_using_parent_result(&dir, matched).ok()?;
    }
    pm.matches_using_parent_result(text, matched).ok()
}

fn filepath_match_trials() -> Vec<Trial> {
    let doc = read_json(&format!("{DIR}/filepath_match_compat.json"));
    let list = doc.as_array().cloned().unwrap_or_default();
    let mut trials = Vec::new();
    for (i, case) in list.into_iter().enumerate() {
        let pattern = str_field(&case, "pattern").to_string();
        let s = str_field(&case, "s").to_string();
        let name = format!("dockerignore/filepath_match/{i:02}-{pattern}");
        trials.push(Trial::test(name, move || {
            let want = (case["match"] == true, case["err"].as_str().map(str::to_string));
            let got = match dockerignore::matches(&s, &[pattern.as_str()]) {
                Ok(m) => (m, None),
                Err(e) => (false, Some(e.to_string())),
            };
            // filepath_match itself must agree with the Matches wrapper on the error.
            let direct_err = filepath_match(&pattern, &s).err().map(|e| e.to_string());
            check(got == want && direct_err == want.1, || {
                format!("Matches({s:?}, [{pattern:?}]) = {got:?}, filepath_match err {direct_err:?}, want {want:?}")
            })
        }));
    }
    trials
}

fn compile_trials() -> Vec<Trial> {
    let doc = read_json(&format!("{DIR}/compile.json"));
    let list = doc.as_array().cloned().unwrap_or_default();
    let mut trials = Vec::new();
    for (i, case) in list.into_iter().enumerate() {
        let pattern = str_field(&case, "pattern").to_string();
        for (label, sep) in [
            ("slash", Separator::Slash),
            ("backslash", Separator::Backslash),
        ] {
            let name = format!("dockerignore/compile/{label}/{i:02}-{pattern}");
            let case = case.clone();
            trials.push(Trial::test(name, move || compile_case(&case, sep)));
        }
    }
    trials
}

/// Upstream's TestCompile: the `path.Clean`ed pattern, its `/` replaced by `sep`, compiled
/// with `sep` as the separator.
fn compile_case(case: &Value, sep: Separator) -> Result<(), Failed> {
    let cleaned =
        dockerignore::clean(str_field(case, "pattern")).replace('/', &sep.as_char().to_string());
    let (kind, regexp) = to_go_regexp_with_separator(&cleaned, sep);
    let want_kind = str_field(case, "matchType");
    let got_kind = match kind {
        MatchType::Exact => "exactMatch",
        MatchType::Prefix => "prefixMatch",
        MatchType::Suffix => "suffixMatch",
        MatchType::Regexp => "regexpMatch",
    };
    check(got_kind == want_kind, || {
        format!("{cleaned:?}: matchType {got_kind}, want {want_kind}")
    })?;
    if kind != MatchType::Regexp {
        return Ok(());
    }
    let want = str_field(
        case,
        match sep {
            Separator::Slash => "regexp_slash",
            Separator::Backslash => "regexp_backslash",
        },
    );
    check(regexp == want, || {
        format!("{cleaned:?}: regexp {regexp}, want {want}")
    })?;
    let compiled = Pattern::compile_with_separator(&cleaned, false, sep);
    check(compiled.matches("x").is_ok(), || {
        format!("{want} does not compile")
    })
}

fn simple_matches_trials() -> Vec<Trial> {
    let doc = read_json(&format!("{DIR}/simple_matches.json"));
    let list = doc.as_array().cloned().unwrap_or_default();
    let mut trials = Vec::new();
    for (i, case) in list.into_iter().enumerate() {
        let file = str_field(&case, "file").to_string();
        let patterns = strings(&case["patterns"]);
        let name = format!(
            "dockerignore/simple_matches/{i:02}-{file}-[{}]",
            patterns.join(",")
        );
        trials.push(Trial::test(name, move || {
            let want_err = case["error"] == true;
            let want_match = case["match"] == true;
            let got = dockerignore::matches(&file, &patterns);
            let ok = match &got {
                Ok(m) => !want_err && *m == want_match,
                Err(_) => want_err && !want_match,
            };
            check(ok, || format!("Matches({file:?}, {patterns:?}) = {got:?}, want error={want_err} match={want_match}"))
        }));
    }
    trials
}

fn ignorefile_readall() -> Result<(), Failed> {
    let input = read(&format!("{DIR}/ignorefile_readall/dockerignore"));
    let want = strings(&read_json(&format!(
        "{DIR}/ignorefile_readall/expected.json"
    )));
    let rules = read_ignore_file(&input).map_err(|e| e.to_string())?;
    let got: Vec<String> = rules.into_iter().map(|r| r.pattern).collect();
    check(got == want, || {
        format!("ReadAll gave {got:?}, want {want:?}")
    })
}
