//! `derived/instructions/error_cases.json`: instruction-level errors, matched by substring.

use libtest_mimic::{Failed, Trial};
use rbuild_frontend::{instructions, parser};

use crate::harness::{check, read_json};

/// Types the first instruction of `src` and returns the error text, parse errors included.
fn first_error(src: &str) -> Result<String, Failed> {
    let ast = match parser::parse(src.as_bytes()) {
        Ok(ast) => ast,
        Err(e) => return Ok(e.to_string()),
    };
    match instructions::parse_instruction(&ast.children[0]) {
        Ok(i) => Err(format!("accepted: {i:?}").into()),
        Err(e) => Ok(e.to_string()),
    }
}

fn expect_error(name: String, src: String, want: String) -> Trial {
    Trial::test(name, move || {
        let got = first_error(&src)?;
        check(got.contains(&want), || {
            format!("error {got:?} does not contain {want:?}")
        })
    })
}

pub fn trials() -> Vec<Trial> {
    let data = read_json("derived/instructions/error_cases.json");
    let mut trials = Vec::new();
    let cases = data["parse_instruction_error_contains"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, case) in cases.into_iter().enumerate() {
        let text = |k: &str| case[k].as_str().expect(k).to_string();
        trials.push(expect_error(
            format!("instructions/error_contains/{i}-{}", text("name")),
            text("dockerfile"),
            text("expectedError"),
        ));
    }
    let bare = [
        (
            "exactly_one_argument_when_bare",
            "requires exactly one argument",
        ),
        (
            "at_least_one_argument_when_bare",
            "requires at least one argument",
        ),
    ];
    for (set, message) in bare {
        for kw in data[set].as_array().cloned().unwrap_or_default() {
            let kw = kw.as_str().expect("keyword").to_string();
            let want = format!("{kw} {message}");
            trials.push(expect_error(format!("instructions/{set}/{kw}"), kw, want));
        }
    }
    for kw in data["no_destination_argument_with_one_arg"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let kw = kw.as_str().expect("keyword").to_string();
        let want = format!(
            "{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        trials.push(expect_error(
            format!("instructions/no_destination/{kw}"),
            format!("{kw} arg1"),
            want,
        ));
    }
    trials
}
