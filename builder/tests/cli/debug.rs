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
fn graph_parses_first_then_reports_it_is_not_available() {
    let out = run(rbuild(&fixture("nested-json")).args(["debug", "graph"]));
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("Dockerfile:2:1: "), "{out}");
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
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "error: debug graph is not available yet\n");
}
