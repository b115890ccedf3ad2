//! Parser suites: `parser/testfiles` (byte-identical dumps), `parser/testfiles-negative`,
//! `parser/testfile-line`, and the derived heredoc and parseWords cases.

use libtest_mimic::{Failed, Trial};
use rbuild_frontend::parser::{self, Heredoc};
use serde_json::Value;

use crate::harness::{check, data_dir, read, read_json};

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    trials.extend(positive_cases());
    trials.extend(negative_cases());
    trials.push(Trial::test("parser/testfile-line", line_numbers));
    trials.extend(heredoc_extract_cases());
    trials.extend(heredoc_helper_cases());
    trials.extend(parse_words_cases());
    trials
}

fn case_dirs(set: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir().join(set))
        .unwrap_or_else(|e| panic!("listing {set}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn positive_cases() -> Vec<Trial> {
    let names = case_dirs("parser/testfiles");
    assert_eq!(names.len(), 33, "parser/testfiles should hold 33 cases");
    names
        .into_iter()
        .map(|name| {
            Trial::test(format!("parser/testfiles/{name}"), move || {
                let src = read(&format!("parser/testfiles/{name}/Dockerfile"));
                let want = read(&format!("parser/testfiles/{name}/result"));
                let ast = parser::parse(&src).map_err(|e| format!("parse failed: {e}"))?;
                let got = ast.dump();
                let want = String::from_utf8_lossy(&want);
                check(got == want, || {
                    format!("dump differs\n--- want\n{want}--- got\n{got}")
                })
            })
        })
        .collect()
}

fn negative_cases() -> Vec<Trial> {
    let expected = [
        ("empty_dockerfile", "file with no instructions"),
        ("env_no_value", "ENV must have two arguments"),
        ("only_comments", "file with no instructions"),
        (
            "shykes-nested-json",
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
    ];
    let names = case_dirs("parser/testfiles-negative");
    assert_eq!(names.len(), expected.len(), "testfiles-negative case count");
    expected
        .into_iter()
        .map(|(name, message)| {
            Trial::test(format!("parser/testfiles-negative/{name}"), move || {
                let src = read(&format!("parser/testfiles-negative/{name}/Dockerfile"));
                match parser::parse(&src) {
                    Ok(ast) => Err(format!("accepted; dump:\n{}", ast.dump()).into()),
                    Err(e) => check(e.to_string() == message, || format!("error {e:?}")),
                }
            })
        })
        .collect()
}

fn line_numbers() -> Result<(), Failed> {
    let ast = parser::parse(&read("parser/testfile-line/Dockerfile"))?;
    let got: Vec<(usize, usize)> = ast
        .children
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    check(ast.line_range() == (5, 31), || {
        format!("root range {:?}", ast.line_range())
    })?;
    check(got == [(5, 5), (11, 12), (17, 31)], || {
        format!("child ranges {got:?}")
    })
}

fn heredoc_json(doc: &Heredoc) -> Value {
    serde_json::json!({
        "Name": doc.name,
        "FileDescriptor": doc.file_descriptor,
        "Expand": doc.expand,
        "Chomp": doc.chomp,
        "Content": doc.content,
    })
}

fn heredoc_extract_cases() -> Vec<Trial> {
    let Value::Array(cases) = read_json("derived/parser/heredoc_extract/expected.json") else {
        panic!("expected.json is not an array");
    };
    cases
        .into_iter()
        .map(|case| {
            let index = case["child_index"].as_u64().expect("child_index") as usize;
            Trial::test(format!("parser/heredoc_extract/child-{index}"), move || {
                let ast = parser::parse(&read("derived/parser/heredoc_extract/Dockerfile"))?;
                let node = ast.children.get(index).ok_or("no such child")?;
                let got = if node.heredocs.is_empty() {
                    Value::Null
                } else {
                    Value::Array(node.heredocs.iter().map(heredoc_json).collect())
                };
                check(got == case["heredocs"], || {
                    format!("want {}\n got {got}", case["heredocs"])
                })
            })
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn heredoc_helper_cases() -> Vec<Trial> {
    let data = read_json("derived/parser/heredoc_helpers.json");
    let mut trials = Vec::new();
    for word in strings(&data["ParseHeredoc_valid_name_EOF"]) {
        trials.push(Trial::test(
            format!("parser/heredoc_helpers/valid/{word}"),
            move || {
                let doc = parser::parse_heredoc(&word)?.ok_or("not a heredoc")?;
                check(doc.name == "EOF", || format!("name {:?}", doc.name))
            },
        ));
    }
    for word in strings(&data["ParseHeredoc_invalid_error"]) {
        trials.push(Trial::test(
            format!("parser/heredoc_helpers/invalid/{word}"),
            move || check(parser::parse_heredoc(&word).is_err(), || "no error".into()),
        ));
    }
    for word in strings(&data["ParseHeredoc_not_heredoc_nil"]) {
        trials.push(Trial::test(
            format!("parser/heredoc_helpers/not_heredoc/{word}"),
            move || {
                let got = parser::parse_heredoc(&word)?;
                check(got.is_none(), || format!("got {got:?}"))
            },
        ));
    }
    for case in data["heredocsFromLine"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let line = case["line"].as_str().expect("line").to_string();
        trials.push(Trial::test(
            format!("parser/heredoc_helpers/from_line/{line}"),
            move || {
                let got: Vec<String> = parser::heredocs_from_line(&line)?
                    .into_iter()
                    .map(|h| h.name)
                    .collect();
                let want = strings(&case["heredocNames"]);
                check(got == want, || format!("got {got:?}, want {want:?}"))
            },
        ));
    }
    let src = data["json_form_never_heredoc_dockerfile"]
        .as_str()
        .expect("src")
        .to_string();
    trials.push(Trial::test(
        "parser/heredoc_helpers/json_form_never_heredoc",
        move || {
            let ast = parser::parse(src.as_bytes())?;
            let with: Vec<usize> = (1..=3)
                .filter(|i| !ast.children[*i].heredocs.is_empty())
                .collect();
            check(ast.children.len() == 4 && with.is_empty(), || {
                format!("heredocs on {with:?}")
            })
        },
    ));
    for (i, case) in data["ChompHeredocContent"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        trials.push(Trial::test(
            format!("parser/heredoc_helpers/chomp/{i}"),
            move || {
                let got = parser::chomp_heredoc_content(case["input"].as_str().unwrap_or_default());
                check(got == case["expected"].as_str().unwrap_or_default(), || {
                    format!("got {got:?}")
                })
            },
        ));
    }
    trials
}

fn parse_words_cases() -> Vec<Trial> {
    let Value::Array(cases) = read_json("derived/parser/parse_words.json") else {
        panic!("parse_words.json is not an array");
    };
    cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            let input = case["input"].as_str().expect("input").to_string();
            Trial::test(format!("parser/parse_words/{i}-{input}"), move || {
                let got = parser::parse_words(&input, '\\');
                let want = strings(&case["expect"]);
                check(got == want, || format!("got {got:?}, want {want:?}"))
            })
        })
        .collect()
}
