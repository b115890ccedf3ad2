//! BuildKit's plain progress (`--progress=plain`), as its `textMux` prints it:
//!
//! ```text
//! #1 [stage-0 1/2] FROM docker.io/library/alpine
//! #1 CACHED
//!
//! #2 [stage-0 2/2] RUN echo hi
//! #2 0.153 hi
//! #2 DONE 0.2s
//! ```
//!
//! Vertices are numbered in order of first appearance. Output comes in blocks: one vertex holds
//! the output, a blank line sets blocks apart, and a block left unfinished ends with `#N ...`
//! before another vertex's header. While a vertex holds the output, other running vertices'
//! lines wait, so parallel steps do not turn into one header per line; the holder hands over
//! when it finishes, falls quiet, or has held it for a turn (BuildKit's anti-flicker).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lines::{error_report, StepLog};
use super::{LogStream, Reporter, Sink, VertexInfo};

/// A holder that printed nothing for this long lets a waiting vertex in.
const QUIET_HANDOFF: Duration = Duration::from_secs(1);
/// A holder that is still printing hands over after this long (BuildKit's `antiFlicker`).
const TURN: Duration = Duration::from_secs(5);
/// Lines kept per step for the error report at the end; the rest was printed as it came.
const REPORT_LINES: usize = 10;

pub struct Plain {
    state: Mutex<State>,
}

struct State {
    out: Sink,
    /// Bytes of the current event, written at once when it is handled.
    buf: Vec<u8>,
    vertices: HashMap<String, Vertex>,
    next_index: usize,
    block: Block,
    /// Blocks after the first are set apart by a blank line.
    printed: bool,
    /// Digests of failed vertices, in order, for the report at the end.
    failed: Vec<String>,
    quiet_handoff: Duration,
    turn: Duration,
}

struct Vertex {
    index: usize,
    name: String,
    log: StepLog,
    /// Lines (without `#N `) held back while another vertex has the output.
    pending: Vec<Vec<u8>>,
    /// Since when this vertex wants the output: it has pending lines or an unshown start.
    waiting: Option<Instant>,
}

/// Who printed last.
enum Block {
    Idle,
    Message,
    Vertex {
        digest: String,
        since: Instant,
        last: Instant,
    },
}

impl Plain {
    pub fn new(out: Sink) -> Self {
        Self::with_timing(out, QUIET_HANDOFF, TURN)
    }

    fn with_timing(out: Sink, quiet_handoff: Duration, turn: Duration) -> Self {
        Plain {
            state: Mutex::new(State {
                out,
                buf: Vec::new(),
                vertices: HashMap::new(),
                next_index: 1,
                block: Block::Idle,
                printed: false,
                failed: Vec::new(),
                quiet_handoff,
                turn,
            }),
        }
    }

    /// Runs one event under the lock and writes what it printed in one go, so lines from
    /// parallel steps never mix.
    fn with(&self, event: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        event(&mut state);
        let State { out, buf, .. } = &mut *state;
        if !buf.is_empty() {
            let _ = out.write_all(buf);
            let _ = out.flush();
            buf.clear();
        }
    }
}

impl Reporter for Plain {
    fn started(&self, vertex: &VertexInfo) {
        self.with(|s| {
            s.vertex(vertex).log.restart();
            s.emit(vertex, Vec::new(), false);
        });
    }

    fn cached(&self, vertex: &VertexInfo) {
        self.with(|s| s.emit(vertex, vec![b"CACHED".to_vec()], true));
    }

    fn completed(&self, vertex: &VertexInfo) {
        self.with(|s| {
            let v = s.vertex(vertex);
            let mut lines: Vec<_> = v.log.flush().iter().map(|l| l.stamped()).collect();
            lines.push(format!("DONE {:.1}s", v.log.elapsed()).into_bytes());
            s.emit(vertex, lines, true);
        });
    }

    fn failed(&self, vertex: &VertexInfo, error: &str) {
        self.with(|s| {
            let v = s.vertex(vertex);
            let mut lines: Vec<_> = v.log.flush().iter().map(|l| l.stamped()).collect();
            let canceled = super::is_canceled(error);
            lines.push(match canceled {
                true => b"CANCELED".to_vec(),
                false => format!("ERROR: {error}").into_bytes(),
            });
            s.emit(vertex, lines, true);
            // Only real errors get the box of last output lines at the end.
            if !canceled {
                s.failed.push(vertex.digest.clone());
            }
        });
    }

    fn log(&self, vertex: &VertexInfo, _stream: LogStream, bytes: &[u8]) {
        self.with(|s| {
            let lines = s.vertex(vertex).log.push(bytes);
            if !lines.is_empty() {
                s.emit(vertex, lines.iter().map(|l| l.stamped()).collect(), false);
            }
        });
    }

    fn miss_reason(&self, vertex: &VertexInfo, reasons: &[String]) {
        let lines = reasons.iter().map(|r| format!("miss: {r}").into_bytes());
        self.with(|s| s.emit(vertex, lines.collect(), false));
    }

    fn message(&self, text: &str) {
        self.with(|s| s.message(text));
    }

    fn finished(&self, _image_id: Option<&str>) {
        self.with(State::finish);
    }
}

impl State {
    /// The vertex's state, numbered on first appearance.
    fn vertex(&mut self, info: &VertexInfo) -> &mut Vertex {
        let next = &mut self.next_index;
        self.vertices.entry(info.digest.clone()).or_insert_with(|| {
            let index = *next;
            *next += 1;
            Vertex {
                index,
                name: info.name.clone(),
                log: StepLog::new(REPORT_LINES),
                pending: Vec::new(),
                waiting: None,
            }
        })
    }

    /// Prints `lines` for a vertex now if it may have the output, else holds them back. `ends`
    /// marks the vertex's last event: BuildKit prints finished vertices first, so those always
    /// take the output.
    fn emit(&mut self, info: &VertexInfo, lines: Vec<Vec<u8>>, ends: bool) {
        self.vertex(info);
        let holds = self.holder() == Some(info.digest.as_str());
        if holds || ends || self.may_take_over() {
            self.switch_to(&info.digest);
            self.print(&info.digest, &lines);
            if ends {
                self.block = Block::Idle;
            }
        } else {
            let v = self.vertex(info);
            v.pending.extend(lines);
            v.waiting.get_or_insert_with(Instant::now);
        }
        self.promote();
    }

    fn holder(&self) -> Option<&str> {
        match &self.block {
            Block::Vertex { digest, .. } => Some(digest),
            _ => None,
        }
    }

    fn may_take_over(&self) -> bool {
        match &self.block {
            Block::Idle | Block::Message => true,
            Block::Vertex { since, last, .. } => {
                last.elapsed() >= self.quiet_handoff || since.elapsed() >= self.turn
            }
        }
    }

    /// Gives the output to the vertex that has waited longest, if the holder lets go.
    fn promote(&mut self) {
        if !self.may_take_over() {
            return;
        }
        let holder = self.holder();
        let next = self
            .vertices
            .iter()
            .filter(|(digest, v)| v.waiting.is_some() && Some(digest.as_str()) != holder)
            .min_by_key(|(_, v)| v.waiting)
            .map(|(digest, _)| digest.clone());
        if let Some(digest) = next {
            self.switch_to(&digest);
        }
    }

    /// Opens the vertex's block (unless it holds the output already) and prints what it had
    /// waiting.
    fn switch_to(&mut self, digest: &str) {
        match &self.block {
            Block::Vertex { digest: d, .. } if d == digest => return,
            Block::Vertex { digest: d, .. } => {
                let index = self.vertices[d].index;
                self.buf
                    .extend_from_slice(format!("#{index} ...\n").as_bytes());
            }
            Block::Idle | Block::Message => {}
        }
        if self.printed {
            self.buf.push(b'\n');
        }
        self.printed = true;
        let v = self.vertices.get_mut(digest).expect("numbered before use");
        v.waiting = None;
        let pending = std::mem::take(&mut v.pending);
        let header = format!("#{} {}\n", v.index, v.name);
        self.buf.extend_from_slice(header.as_bytes());
        let now = Instant::now();
        self.block = Block::Vertex {
            digest: digest.to_string(),
            since: now,
            last: now,
        };
        self.print(digest, &pending);
    }

    /// Writes lines under the vertex's number; it must hold the output.
    fn print(&mut self, digest: &str, lines: &[Vec<u8>]) {
        let index = self.vertices[digest].index;
        for line in lines {
            self.buf.extend_from_slice(format!("#{index} ").as_bytes());
            self.buf.extend_from_slice(line);
            self.buf.push(b'\n');
        }
        if let Block::Vertex { last, .. } = &mut self.block {
            *last = Instant::now();
        }
    }

    /// A free line: it closes an open block like another vertex would.
    fn message(&mut self, text: &str) {
        if let Some(digest) = self.holder() {
            let index = self.vertices[digest].index;
            self.buf
                .extend_from_slice(format!("#{index} ...\n").as_bytes());
        }
        if self.printed && !matches!(self.block, Block::Message) {
            self.buf.push(b'\n');
        }
        self.printed = true;
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(b'\n');
        self.block = Block::Message;
    }

    /// Prints everything still held back, then BuildKit's report of each failed step.
    fn finish(&mut self) {
        let mut waiting: Vec<_> = self
            .vertices
            .iter()
            .filter_map(|(digest, v)| Some((v.waiting?, digest.clone())))
            .collect();
        waiting.sort();
        for (_, digest) in waiting {
            self.switch_to(&digest);
        }
        for digest in std::mem::take(&mut self.failed) {
            let v = &self.vertices[&digest];
            let report = error_report(&v.name, &v.log);
            self.buf.extend_from_slice(&report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::testing::{vertex, Capture};

    /// Output with the seconds stamps replaced by `T`, so expectations are exact.
    fn masked(capture: &Capture) -> String {
        let re = regex::Regex::new(r"(?m)^(#\d+) \d+\.\d+ ").unwrap();
        let text = re.replace_all(&capture.text(), "$1 T ").to_string();
        let done = regex::Regex::new(r"(?m)^(#\d+) DONE \d+\.\ds$").unwrap();
        done.replace_all(&text, "$1 DONE Ts").to_string()
    }

    #[test]
    fn numbers_vertices_and_prints_cached_done_and_error() {
        let out = Capture::default();
        let plain = Plain::new(out.sink());
        let (a, b, c) = (
            vertex(1, "[a 1/3] FROM x"),
            vertex(2, "[a 2/3] RUN make"),
            vertex(3, "[a 3/3] RUN test"),
        );
        plain.cached(&a);
        plain.started(&b);
        plain.miss_reason(&b, &["Makefile changed".to_string()]);
        plain.log(&b, LogStream::Stdout, b"cc main.c\n");
        plain.completed(&b);
        plain.started(&c);
        plain.failed(&c, "exit code: 1");
        plain.message("writing image sha256:abc done");
        plain.finished(None);
        let expected = "\
#1 [a 1/3] FROM x
#1 CACHED

#2 [a 2/3] RUN make
#2 miss: Makefile changed
#2 T cc main.c
#2 DONE Ts

#3 [a 3/3] RUN test
#3 ERROR: exit code: 1

writing image sha256:abc done
------
 > [a 3/3] RUN test:
------
";
        assert_eq!(masked(&out), expected);
    }

    #[test]
    fn log_lines_carry_seconds_with_three_decimals() {
        let out = Capture::default();
        let plain = Plain::new(out.sink());
        let v = vertex(1, "[1/1] RUN echo hi");
        plain.started(&v);
        plain.log(&v, LogStream::Stderr, b"hi\n");
        let re = regex::Regex::new(r"(?m)^#1 0\.\d{3} hi$").unwrap();
        assert!(re.is_match(&out.text()), "{}", out.text());
    }

    #[test]
    fn a_partial_line_waits_for_its_end_or_the_step_end() {
        let out = Capture::default();
        let plain = Plain::new(out.sink());
        let v = vertex(1, "[1/1] RUN x");
        plain.started(&v);
        plain.log(&v, LogStream::Stdout, b"downloading");
        plain.log(&v, LogStream::Stdout, b"... ");
        assert_eq!(masked(&out), "#1 [1/1] RUN x\n");
        plain.log(&v, LogStream::Stdout, b"ok\nlast");
        assert_eq!(masked(&out), "#1 [1/1] RUN x\n#1 T downloading... ok\n");
        plain.completed(&v);
        assert!(
            masked(&out).ends_with("#1 T last\n#1 DONE Ts\n"),
            "{}",
            out.text()
        );
    }

    #[test]
    fn a_partial_line_is_flushed_before_the_error() {
        let out = Capture::default();
        let plain = Plain::new(out.sink());
        let v = vertex(1, "[1/1] RUN x");
        plain.started(&v);
        plain.log(&v, LogStream::Stdout, b"no newline");
        plain.failed(&v, "boom");
        plain.finished(None);
        let text = masked(&out);
        assert!(text.contains("#1 T no newline\n#1 ERROR: boom\n"), "{text}");
        assert!(text.contains(" > [1/1] RUN x:\n0."), "{text}");
    }

    #[test]
    fn a_busy_holder_keeps_the_output_until_it_finishes() {
        let out = Capture::default();
        let plain = Plain::new(out.sink());
        let (a, b) = (vertex(1, "[a 2/2] RUN a"), vertex(2, "[b 2/2] RUN b"));
        plain.started(&a);
        plain.started(&b);
        plain.log(&a, LogStream::Stdout, b"a1\n");
        plain.log(&b, LogStream::Stdout, b"b1\n");
        plain.log(&a, LogStream::Stdout, b"a2\n");
        plain.completed(&a);
        plain.completed(&b);
        let expected = "\
#1 [a 2/2] RUN a
#1 T a1
#1 T a2
#1 DONE Ts

#2 [b 2/2] RUN b
#2 T b1
#2 DONE Ts
";
        assert_eq!(masked(&out), expected);
    }

    #[test]
    fn a_vertex_taking_over_closes_the_open_block_with_dots() {
        let out = Capture::default();
        let plain = Plain::with_timing(out.sink(), Duration::ZERO, Duration::ZERO);
        let (a, b) = (vertex(1, "[a 2/2] RUN a"), vertex(2, "[b 2/2] RUN b"));
        plain.started(&a);
        plain.log(&a, LogStream::Stdout, b"a1\n");
        plain.log(&b, LogStream::Stdout, b"b1\n");
        plain.completed(&a);
        let expected = "\
#1 [a 2/2] RUN a
#1 T a1
#1 ...

#2 [b 2/2] RUN b
#2 T b1
#2 ...

#1 [a 2/2] RUN a
#1 DONE Ts
";
        assert_eq!(masked(&out), expected);
    }

    #[test]
    fn parallel_steps_print_whole_lines() {
        let out = Capture::default();
        let plain = std::sync::Arc::new(Plain::with_timing(
            out.sink(),
            Duration::ZERO,
            Duration::ZERO,
        ));
        let threads: Vec<_> = (1..=2u8)
            .map(|n| {
                let plain = plain.clone();
                std::thread::spawn(move || {
                    let v = vertex(n, &format!("[s{n} 1/1] RUN loop"));
                    plain.started(&v);
                    for i in 0..200 {
                        // Each line in two writes, to catch a line split by the other thread.
                        plain.log(&v, LogStream::Stdout, format!("step{n} line").as_bytes());
                        plain.log(&v, LogStream::Stdout, format!(" {i}\n").as_bytes());
                    }
                    plain.completed(&v);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let text = out.text();
        let line = regex::Regex::new(
            r"^(|#(\d) \[s(\d) 1/1\] RUN loop|#\d \.\.\.|#(\d) \d\.\d{3} step(\d) line \d+|#\d DONE \d\.\ds)$",
        )
        .unwrap();
        let mut counts = [0, 0];
        for l in text.lines() {
            let caps = line
                .captures(l)
                .unwrap_or_else(|| panic!("torn line {l:?}"));
            if let (Some(index), Some(step)) = (caps.get(4), caps.get(5)) {
                // Numbers follow first appearance, so a line's step matches its vertex's name.
                let header = format!("#{} [s{} 1/1] RUN loop", index.as_str(), step.as_str());
                assert!(text.contains(&header), "{l} under a wrong number");
                counts[step.as_str().parse::<usize>().unwrap() - 1] += 1;
            }
        }
        assert_eq!(counts, [200, 200]);
    }
}
