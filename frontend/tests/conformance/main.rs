//! BuildKit's own conformance data (see `testdata/conformance/buildkit/SOURCE.md`), every case a
//! named test. Cases that cannot apply on this platform are listed, with reasons, in
//! `testdata/conformance/exceptions.txt`; nothing else is excepted.

mod dockerignore;
mod harness;
mod instructions;
mod parser;
mod shell;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(parser::trials());
    trials.extend(shell::trials());
    trials.extend(dockerignore::trials());
    trials.extend(instructions::trials());
    let policy = harness::exceptions_are_platform_cases(&trials);
    trials.push(policy);
    libtest_mimic::run(&args, trials).exit();
}
