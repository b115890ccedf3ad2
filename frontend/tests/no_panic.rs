//! The parser is total: whatever bytes it is handed, it returns (a Dockerfile or a located
//! error) and never panics. Arbitrary bytes, arbitrary UTF-8 text, and text assembled from
//! Dockerfile fragments (keywords, flags, heredoc markers, JSON forms, escapes, directives,
//! continuations) are tried; the results are also checked for sane line numbers.
//!
//! 2,000 cases per property by default, so the suite stays fast; `PROPTEST_CASES=1000000`
//! for a long run.

use proptest::prelude::*;
use rbuild_frontend::{diagnostic, parser};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Pieces Dockerfiles are made of, including the awkward ones.
const FRAGMENTS: &[&str] = &[
    "FROM",
    "from",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "LABEL",
    "CMD",
    "ENTRYPOINT",
    "ONBUILD",
    "HEALTHCHECK",
    "SHELL",
    "EXPOSE",
    "USER",
    "WORKDIR",
    "VOLUME",
    "MAINTAINER",
    "STOPSIGNAL",
    "AS",
    "stage",
    "NONE",
    "busybox",
    "--mount=type=cache,target=/x",
    "--from=a",
    "--chmod=755",
    "--",
    "--=",
    "<<EOF",
    "<<-EOT",
    "<<'EOF'",
    "<<\"E\"",
    "3<<X",
    "<<",
    "EOF",
    "EOT",
    "\tEOT",
    "E",
    "X",
    "\\",
    "`",
    "# escape=`",
    "# escape=\\",
    "# escape=x",
    "# syntax=docker/x",
    "#",
    "#check=skip=all",
    "[",
    "]",
    "\"",
    "'",
    "[\"a\", \"b\"]",
    "[\"a\", [1]]",
    "[]",
    "{}",
    "=",
    "A=1",
    "B=\"x y\"",
    "C='z'",
    "$VAR",
    "${VAR:-x}",
    "${",
    "}",
    "\t",
    " ",
    "é",
    "\u{feff}",
    "\r",
    "&&",
    "\\\\",
    "\\ ",
    "` ",
];

/// Dockerfile-like text: lines of fragments, joined by spaces or nothing, ended by LF or CRLF.
fn dockerfile_like() -> impl Strategy<Value = String> {
    let word = prop::sample::select(FRAGMENTS);
    let line = (
        prop::collection::vec((word, prop::bool::ANY), 0..8),
        prop::bool::ANY,
    )
        .prop_map(|(words, crlf)| {
            let mut line = String::new();
            for (word, space) in words {
                line.push_str(word);
                if space {
                    line.push(' ');
                }
            }
            line.push_str(if crlf { "\r\n" } else { "\n" });
            line
        });
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.concat())
}

/// Physical lines in `src`, as the parser numbers them.
fn line_count(src: &[u8]) -> usize {
    let newlines = src.iter().filter(|b| **b == b'\n').count();
    newlines + usize::from(!src.is_empty() && !src.ends_with(b"\n"))
}

/// Parses `src` and checks what came back; panics (failing the property) on nonsense.
fn check(src: &[u8]) {
    let lines = line_count(src);
    match parser::parse(src) {
        Ok(dockerfile) => {
            assert!(!dockerfile.children.is_empty(), "Ok with no instructions");
            for node in &dockerfile.children {
                assert!(
                    1 <= node.start_line
                        && node.start_line <= node.end_line
                        && node.end_line <= lines,
                    "node at lines {}..{} of a {lines}-line file",
                    node.start_line,
                    node.end_line
                );
                assert!(node.column >= 1, "node at column {}", node.column);
            }
            let dump = dockerfile.dump();
            assert!(dump.ends_with('\n'), "dump without final newline: {dump:?}");
            // The parser is a function of its input.
            let again = parser::parse(src).expect("parses the second time");
            assert_eq!(again.children, dockerfile.children);
            assert_eq!(again.warnings, dockerfile.warnings);
            check_lowering(&dockerfile);
        }
        Err(err) => {
            assert!(
                err.start_line <= err.end_line && err.end_line <= lines.max(1),
                "error at lines {}..{} of a {lines}-line file: {err}",
                err.start_line,
                err.end_line
            );
            let text = diagnostic::render("Dockerfile", src, err.start_line, err.column, "m");
            assert!(text.starts_with("Dockerfile:"), "{text}");
            assert_eq!(parser::parse(src).unwrap_err(), err);
        }
    }
}

/// Lowering never panics, and an error it returns points inside the file.
fn check_lowering(dockerfile: &rbuild_frontend::parser::Dockerfile) {
    use rbuild_frontend::graph::{lower, LowerOptions, NoBaseImages};
    match lower(dockerfile, &LowerOptions::default(), &NoBaseImages) {
        Ok(graph) => {
            assert!(
                graph.stages.contains_key(&graph.target),
                "target stage not lowered"
            );
            let again =
                lower(dockerfile, &LowerOptions::default(), &NoBaseImages).expect("lowers again");
            assert_eq!(
                graph.to_json(),
                again.to_json(),
                "lowering is a function of its input"
            );
        }
        Err(err) => {
            let (line, _) = err.location();
            let last = dockerfile.children.last().map_or(0, |n| n.end_line);
            assert!(
                line <= last,
                "error at line {line} past the last instruction ({last}): {err}"
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(src in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&src);
    }

    #[test]
    fn arbitrary_text(src in "\\PC{0,40}(\n\\PC{0,40}){0,12}") {
        check(src.as_bytes());
    }

    #[test]
    fn dockerfile_like_text(src in dockerfile_like()) {
        check(src.as_bytes());
    }
}
