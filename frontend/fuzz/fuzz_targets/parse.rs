//! Arbitrary bytes into the Dockerfile parser: it must return, never panic, never hang. A
//! parsed file is dumped; an error is rendered as the CLI would show it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_frontend::{diagnostic, parser};

fuzz_target!(|data: &[u8]| {
    match parser::parse(data) {
        Ok(dockerfile) => {
            let _ = dockerfile.dump();
        }
        Err(err) => {
            let message = err.kind.to_string();
            let _ = diagnostic::render("Dockerfile", data, err.start_line, err.column, &message);
        }
    }
});
