//! `--progress=quiet` / `-q`: the image ID on stdout, as `docker build -q` prints it, and on
//! stderr only what explains a failure. BuildKit's quiet display drops everything, leaving the
//! failed step's output to the error buildx prints; rbuild's solver error does not carry that
//! output, so this reporter keeps each running step's last lines and prints them if it fails.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use super::lines::{error_report, StepLog};
use super::{LogStream, Reporter, Sink, VertexInfo};

/// Lines kept per running step; enough to diagnose a failure, bounded for chatty steps.
const KEPT_LINES: usize = 1000;

pub struct Quiet {
    state: Mutex<State>,
}

struct State {
    /// Where the image ID goes.
    out: Sink,
    err: Sink,
    /// Output of steps still running; a finished step's output is dropped.
    logs: HashMap<String, StepLog>,
}

impl Quiet {
    pub fn new(out: Sink, err: Sink) -> Self {
        Quiet {
            state: Mutex::new(State {
                out,
                err,
                logs: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter for Quiet {
    fn started(&self, vertex: &VertexInfo) {
        let mut state = self.state();
        let log = state.logs.entry(vertex.digest.clone());
        log.or_insert_with(|| StepLog::new(KEPT_LINES)).restart();
    }

    fn cached(&self, _vertex: &VertexInfo) {}

    fn completed(&self, vertex: &VertexInfo) {
        self.state().logs.remove(&vertex.digest);
    }

    fn failed(&self, vertex: &VertexInfo, error: &str) {
        // A step stopped by another's failure has nothing to report of its own.
        if super::is_canceled(error) {
            return;
        }
        let mut state = self.state();
        let mut log = state
            .logs
            .remove(&vertex.digest)
            .unwrap_or_else(|| StepLog::new(0));
        log.flush();
        let mut text = error_report(&vertex.name, &log);
        text.extend_from_slice(format!("ERROR: {error}\n").as_bytes());
        let _ = state.err.write_all(&text);
        let _ = state.err.flush();
    }

    fn log(&self, vertex: &VertexInfo, _stream: LogStream, bytes: &[u8]) {
        let mut state = self.state();
        let log = state.logs.entry(vertex.digest.clone());
        log.or_insert_with(|| StepLog::new(KEPT_LINES)).push(bytes);
    }

    fn miss_reason(&self, _vertex: &VertexInfo, _reasons: &[String]) {}

    fn message(&self, _text: &str) {}

    fn finished(&self, image_id: Option<&str>) {
        if let Some(id) = image_id {
            let mut state = self.state();
            let _ = writeln!(state.out, "{id}");
            let _ = state.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::testing::{vertex, Capture};

    #[test]
    fn a_good_build_prints_only_the_id_on_stdout() {
        let (out, err) = (Capture::default(), Capture::default());
        let quiet = Quiet::new(out.sink(), err.sink());
        let (a, b) = (vertex(1, "[1/2] FROM alpine"), vertex(2, "[2/2] RUN make"));
        quiet.cached(&a);
        quiet.miss_reason(&b, &["changed".to_string()]);
        quiet.started(&b);
        quiet.log(&b, LogStream::Stdout, b"cc main.c\n");
        quiet.completed(&b);
        quiet.message("writing image sha256:abc done");
        quiet.finished(Some("sha256:abc"));
        assert_eq!(out.text(), "sha256:abc\n");
        assert_eq!(err.text(), "");
    }

    #[test]
    fn a_failure_prints_the_error_and_the_step_output() {
        let (out, err) = (Capture::default(), Capture::default());
        let quiet = Quiet::new(out.sink(), err.sink());
        let v = vertex(1, "[1/1] RUN make");
        quiet.started(&v);
        quiet.log(&v, LogStream::Stderr, b"main.c:1: error\npartial");
        quiet.failed(&v, "exit code: 2");
        quiet.finished(None);
        assert_eq!(out.text(), "");
        let re = regex::Regex::new(
            r"^------\n > \[1/1\] RUN make:\n0\.\d{3} main\.c:1: error\n0\.\d{3} partial\n------\nERROR: exit code: 2\n$",
        );
        assert!(re.unwrap().is_match(&err.text()), "{}", err.text());
    }
}
