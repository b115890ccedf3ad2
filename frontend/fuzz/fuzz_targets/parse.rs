//! Arbitrary bytes through the whole frontend: parse, then type and lower what parsed. It
//! must return, never panic, never hang. A parsed file is dumped and lowered; an error is
//! rendered as the CLI would show it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_frontend::graph::{lower, LowerOptions, NoBaseImages};
use rbuild_frontend::{diagnostic, parser};

fuzz_target!(|data: &[u8]| {
    match parser::parse(data) {
        Ok(dockerfile) => {
            let _ = dockerfile.dump();
            match lower(&dockerfile, &LowerOptions::default(), &NoBaseImages) {
                Ok(graph) => {
                    let _ = graph.to_json();
                }
                Err(err) => {
                    let (line, column) = err.location();
                    let _ = diagnostic::render("Dockerfile", data, line, column, &err.to_string());
                }
            }
        }
        Err(err) => {
            let message = err.kind.to_string();
            let _ = diagnostic::render("Dockerfile", data, err.start_line, err.column, &message);
        }
    }
});
