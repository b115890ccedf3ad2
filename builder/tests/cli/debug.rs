//! `rbuild debug ast` and `rbuild debug graph`.

use std::io::Write;

use crate::util::{fixture, rbuild, run};

#[test]
fn ast_of_a_good_dockerfile() {
    let out = run(rbuild(&fixture("ok")).args(["debug", "ast"]));
    assert_eq!(out.code, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn ast_of_nested_json_is_a_located_error() {
    let out = run(rbuild(&fixture("nested-json")).args(["debug", "ast"]));
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!(out);
}

#[test]
fn ast_of_an_unterminated_heredoc_is_a_located_error() {
    let out = run(rbuild(&fixture("unterminated-heredoc")).args(["debug", "ast"]));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn ast_of_a_file_without_instructions_is_an_error() {
    let out = run(rbuild(&fixture("only-comments")).args(["debug", "ast"]));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}

/// The parser reads unknown keywords as BuildKit's does; rejecting them is the job of the
/// typed-instruction layer, so the AST dump shows them.
#[test]
fn ast_keeps_unknown_instructions() {
    let out = run(rbuild(&fixture("bad-instruction")).args(["debug", "ast"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("(foo "), "{out}");
}

#[test]
fn ast_errors_name_the_file_as_given_and_expand_tabs() {
    let out = run(rbuild(&fixture("")).args(["debug", "ast", "-f", "tabs/Dockerfile"]));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn parser_warnings_go_to_stderr_and_the_dump_still_to_stdout() {
    let out = run(rbuild(&fixture("warning")).args(["debug", "ast"]));
    assert_eq!(out.code, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn ast_reads_stdin() {
    let out = run(rbuild(&fixture("ok"))
        .args(["debug", "ast", "-f", "-"])
        .write_stdin("FROM a\nCMD [\"x\", {}]\n"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("<stdin>:2:1: when using JSON array syntax"),
        "{out}"
    );
    let out = run(rbuild(&fixture("ok"))
        .args(["debug", "ast", "-f", "-"])
        .write_stdin("from a\n"));
    assert_eq!((out.code, out.stdout.as_str()), (0, "(from \"a\")\n"));
}

#[test]
fn ast_of_the_readme_example() {
    let root = fixture("").join("../..");
    let out = run(rbuild(&root).args(["debug", "ast", "-f", "testdata/examples/hello/Dockerfile"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("(from "))
            .count(),
        2
    );
}

#[test]
fn invalid_utf8_is_an_error_without_excerpt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("Dockerfile"))
        .unwrap()
        .write_all(b"FROM a\nRUN echo \xff\xfe\n")
        .unwrap();
    let out = run(rbuild(dir.path()).args(["debug", "ast"]));
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Dockerfile:2:10: the Dockerfile is not valid UTF-8 (first bad byte at column 10)\n"
    );
}

#[test]
fn a_missing_file_names_its_path() {
    let out = run(rbuild(&fixture("ok")).args(["debug", "ast", "-f", "sub/Nope"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: cannot read the Dockerfile \"sub/Nope\": "),
        "{out}"
    );
}

#[test]
fn graph_reports_parse_errors_located() {
    let out = run(rbuild(&fixture("nested-json")).args(["debug", "graph"]));
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("Dockerfile:2:1: "), "{out}");
}

#[test]
fn graph_lowers_only_the_target_for_the_platform() {
    let out = run(rbuild(&fixture("ok")).args([
        "debug",
        "graph",
        "--target",
        "build",
        "--build-arg",
        "VERSION=2",
        "--platform",
        "linux/arm64",
    ]));
    assert_eq!(out.code, 0, "{out}");
    let graph: serde_json::Value = serde_json::from_str(&out.stdout).expect("graph JSON");
    assert_eq!(graph["target"], 0);
    let stages = graph["stages"].as_array().expect("stages");
    assert_eq!(
        stages.len(),
        1,
        "the final stage is not needed for --target build"
    );
    assert_eq!(stages[0]["platform"]["architecture"], "arm64");
    let run = graph["vertices"]
        .as_array()
        .expect("vertices")
        .iter()
        .find(|v| v["op"]["op"] == "exec")
        .expect("the RUN vertex");
    assert_eq!(run["op"]["args"][0], "/bin/sh");
    assert!(run["op"]["args"][2]
        .as_str()
        .unwrap()
        .contains("building $VERSION"));
    insta::assert_snapshot!(out);
}

#[test]
fn graph_of_the_whole_file_carries_the_final_config() {
    let out = run(rbuild(&fixture("ok")).args(["debug", "graph"]));
    assert_eq!(out.code, 0, "{out}");
    let graph: serde_json::Value = serde_json::from_str(&out.stdout).expect("graph JSON");
    assert_eq!(graph["target"], 1);
    let last = &graph["stages"][1]["config"];
    assert_eq!(last["Cmd"], serde_json::json!(["/bin/true"]));
    assert_eq!(last["Labels"]["org.opencontainers.image.title"], "ok");
}

#[test]
fn graph_errors_point_at_the_instruction() {
    let out = run(rbuild(&fixture("bad-instruction")).args(["debug", "graph"]));
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out);
}
