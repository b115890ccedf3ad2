//! `--progress=tty`: a live display for a terminal, after BuildKit's console display. A header
//! (`[+] Building 3.2s (4/7)`) and one line per running step, with its time and last output
//! line, are redrawn in place; a finished step leaves the live area as a fixed line above it
//! (`✔ [stage-0 1/3] COPY . /app/ 0.3s`, `✔ … CACHED`), so long builds scroll like plain output
//! instead of outgrowing the screen. A failed step prints its output at once, framed as
//! BuildKit's error report.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::lines::{error_report, Line, StepLog};
use super::{LogStream, Reporter, Sink, VertexInfo};

/// How often times and spinners move.
const TICK: Duration = Duration::from_millis(100);
/// Lines kept per running step for its error report: all a normal step prints, bounded for
/// steps that print without end.
const KEPT_LINES: usize = 10_000;

pub struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    state: Mutex<State>,
}

struct State {
    /// Finished steps' lines, messages and error reports, written while the live area is
    /// cleared.
    err: Sink,
    steps: HashMap<String, Step>,
    /// Vertices whose line has left the live area: late output must not bring it back.
    settled: HashSet<String>,
    /// Vertices seen and finished, for the header's count.
    seen: u64,
    finished: u64,
    color: bool,
}

struct Step {
    bar: ProgressBar,
    log: StepLog,
}

impl Tty {
    /// Draws on stderr even when it is not a terminal: `tty` was asked for by name.
    pub fn on_stderr() -> Self {
        let term = console::Term::stderr();
        let target = ProgressDrawTarget::term_like(Box::new(term));
        Self::new(
            target,
            Box::new(io::stderr()),
            console::colors_enabled_stderr(),
        )
    }

    pub fn new(target: ProgressDrawTarget, err: Sink, color: bool) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let header = multi.add(ProgressBar::new(0).with_style(header_style("")));
        header.enable_steady_tick(TICK);
        Tty {
            multi,
            header,
            state: Mutex::new(State {
                err,
                steps: HashMap::new(),
                settled: HashSet::new(),
                seen: 0,
                finished: 0,
                color,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vertex's live line, made on its first event; `None` once it has settled.
    fn step<'a>(&self, state: &'a mut State, info: &VertexInfo) -> Option<&'a mut Step> {
        if state.settled.contains(&info.digest) {
            return None;
        }
        if !state.steps.contains_key(&info.digest) {
            state.seen += 1;
            self.header.set_length(state.seen);
        }
        let step = state.steps.entry(info.digest.clone()).or_insert_with(|| {
            let bar = ProgressBar::new_spinner()
                .with_style(running_style())
                .with_prefix(info.name.clone());
            let bar = self.multi.add(bar);
            bar.enable_steady_tick(TICK);
            Step {
                bar,
                log: StepLog::new(KEPT_LINES),
            }
        });
        Some(step)
    }

    /// Takes the step out of the live area and prints `text` above it in its place.
    fn settle(&self, state: &mut State, info: &VertexInfo, text: &[u8]) {
        // A duplicate end event prints again but must not count twice.
        let first = state.settled.insert(info.digest.clone());
        let step = state.steps.remove(&info.digest);
        if let Some(step) = &step {
            step.bar.finish_and_clear();
            self.multi.remove(&step.bar);
        }
        if first {
            if step.is_none() {
                // A cache hit has no live line: this is its first appearance.
                state.seen += 1;
                self.header.set_length(state.seen);
            }
            state.finished += 1;
            self.header.set_position(state.finished);
        }
        self.multi.suspend(|| {
            let _ = state.err.write_all(text);
            let _ = state.err.flush();
        });
    }
}

impl Reporter for Tty {
    fn started(&self, vertex: &VertexInfo) {
        let mut state = self.state();
        if let Some(step) = self.step(&mut state, vertex) {
            step.log.restart();
            step.bar.reset_elapsed();
        }
    }

    fn cached(&self, vertex: &VertexInfo) {
        let mut state = self.state();
        let line = settled_line(state.color, true, &vertex.name, "CACHED");
        self.settle(&mut state, vertex, line.as_bytes());
    }

    fn completed(&self, vertex: &VertexInfo) {
        let mut state = self.state();
        let secs = state
            .steps
            .get(&vertex.digest)
            .map_or(0.0, |s| s.log.elapsed());
        let line = settled_line(state.color, true, &vertex.name, &format!("{secs:.1}s"));
        self.settle(&mut state, vertex, line.as_bytes());
    }

    fn failed(&self, vertex: &VertexInfo, error: &str) {
        let mut state = self.state();
        let mut log = match state.steps.get_mut(&vertex.digest) {
            Some(step) => std::mem::replace(&mut step.log, StepLog::new(0)),
            None => StepLog::new(0),
        };
        log.flush();
        let canceled = super::is_canceled(error);
        let status = match canceled {
            true => "CANCELED".to_string(),
            false => format!("ERROR: {error}"),
        };
        let mut text = settled_line(state.color, false, &vertex.name, &status).into_bytes();
        if !canceled {
            text.extend_from_slice(&error_report(&vertex.name, &log));
        }
        self.settle(&mut state, vertex, &text);
    }

    fn log(&self, vertex: &VertexInfo, _stream: LogStream, bytes: &[u8]) {
        let mut state = self.state();
        let Some(step) = self.step(&mut state, vertex) else {
            return;
        };
        if let Some(line) = step.log.push(bytes).last() {
            step.bar.set_message(shown(line));
        }
    }

    fn miss_reason(&self, vertex: &VertexInfo, reasons: &[String]) {
        let mut state = self.state();
        if let Some(step) = self.step(&mut state, vertex) {
            step.bar
                .set_message(format!("miss: {}", reasons.join("; ")));
        }
    }

    fn message(&self, text: &str) {
        let mut state = self.state();
        self.multi.suspend(|| {
            let _ = writeln!(state.err, "{text}");
            let _ = state.err.flush();
        });
    }

    fn finished(&self, _image_id: Option<&str>) {
        let state = self.state();
        self.header.set_style(header_style(" FINISHED"));
        self.header.finish();
        // Steps the solver left running (a failed build stops early) stay as they were drawn.
        for step in state.steps.values() {
            step.bar.abandon();
        }
    }
}

/// `[+] Building 3.2s (4/7)`, as BuildKit's console header.
fn header_style(suffix: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("[+] Building {{secs}} ({{pos}}/{{len}}){suffix}"))
        .expect("a valid template")
        .with_key("secs", seconds)
}

/// ` ⠋ [stage-0 2/3] RUN make  1.2s  cc main.c`
fn running_style() -> ProgressStyle {
    ProgressStyle::with_template(" {spinner:.cyan} {prefix}  {secs:.dim}  {wide_msg:.dim}")
        .expect("a valid template")
        .with_key("secs", seconds)
}

/// Seconds with a tenth, as BuildKit shows step times.
fn seconds(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

/// `✔ NAME STATUS` for a step that ended well, `✘ NAME STATUS` for one that failed.
fn settled_line(color: bool, ok: bool, name: &str, status: &str) -> String {
    let (mark, style) = if ok {
        ("✔", Style::new().green())
    } else {
        ("✘", Style::new().red())
    };
    let style = style.force_styling(color);
    let dim = Style::new().dim().force_styling(color);
    format!("{} {name} {}\n", style.apply_to(mark), dim.apply_to(status))
}

/// A log line as a live line shows it: what a terminal would show last after carriage
/// returns (progress meters), without control characters that would break the redraw.
fn shown(line: &Line) -> String {
    let text = String::from_utf8_lossy(&line.text);
    let last = text.split('\r').rev().find(|s| !s.trim().is_empty());
    let mut out = String::new();
    for c in last.unwrap_or("").chars() {
        match c {
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::testing::{vertex, Capture};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    fn hidden(err: &Capture) -> Tty {
        Tty::new(ProgressDrawTarget::hidden(), err.sink(), false)
    }

    #[test]
    fn finished_steps_collapse_to_one_line_each() {
        let err = Capture::default();
        let tty = hidden(&err);
        let (a, b) = (vertex(1, "[a 1/2] FROM x"), vertex(2, "[a 2/2] RUN make"));
        tty.cached(&a);
        tty.started(&b);
        tty.log(&b, LogStream::Stdout, b"cc main.c\n");
        tty.completed(&b);
        tty.message("naming to app:latest");
        tty.finished(Some("sha256:abc"));
        let re = regex::Regex::new(
            r"^✔ \[a 1/2\] FROM x CACHED\n✔ \[a 2/2\] RUN make \d+\.\ds\nnaming to app:latest\n$",
        );
        assert!(re.unwrap().is_match(&err.text()), "{}", err.text());
        assert_eq!((tty.header.position(), tty.header.length()), (2, Some(2)));
        assert!(tty.state().steps.is_empty());
    }

    #[test]
    fn output_after_the_end_does_not_revive_a_step() {
        let err = Capture::default();
        let tty = hidden(&err);
        let v = vertex(1, "[1/1] RUN x");
        tty.started(&v);
        tty.completed(&v);
        tty.log(&v, LogStream::Stdout, b"late\n");
        assert!(tty.state().steps.is_empty());
        assert_eq!((tty.header.position(), tty.header.length()), (1, Some(1)));
    }

    #[test]
    fn a_failed_step_prints_its_whole_output() {
        let err = Capture::default();
        let tty = hidden(&err);
        let v = vertex(1, "[1/1] RUN make");
        tty.started(&v);
        for i in 0..50 {
            tty.log(&v, LogStream::Stdout, format!("line {i}\n").as_bytes());
        }
        tty.log(&v, LogStream::Stderr, b"no newline");
        tty.failed(&v, "exit code: 2");
        let text = err.text();
        assert!(
            text.starts_with("✘ [1/1] RUN make ERROR: exit code: 2\n------\n > [1/1] RUN make:\n")
        );
        assert!(
            text.contains(" line 0\n") && text.contains(" line 49\n"),
            "{text}"
        );
        assert!(text.ends_with(" no newline\n------\n"), "{text}");
    }

    #[test]
    fn the_live_line_shows_the_last_output_line() {
        let line = |t: &[u8]| Line {
            at: 0.0,
            text: t.to_vec(),
        };
        assert_eq!(shown(&line(b"10%\r50%\r")), "50%");
        assert_eq!(shown(&line(b"a\tb\x07")), "a b");
    }

    /// A terminal that keeps what was drawn on it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_running_step_is_drawn_with_its_last_line() {
        let screen = Screen::default();
        let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let tty = Tty::new(target, Capture::default().sink(), false);
        let v = vertex(1, "[1/1] RUN make");
        tty.started(&v);
        tty.log(&v, LogStream::Stdout, b"first\ncompiling main.c\n");
        // Drawing is rate-limited and driven by the ticker: wait for a frame.
        let deadline = Instant::now() + Duration::from_secs(10);
        let drawn = |s: &str| s.contains("[1/1] RUN make") && s.contains("compiling main.c");
        while !drawn(&screen.0.lock().unwrap()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = screen.0.lock().unwrap().clone();
        assert!(drawn(&text), "{text}");
        assert!(text.contains("[+] Building "), "{text}");
        tty.completed(&v);
        tty.finished(None);
        assert!(screen.0.lock().unwrap().contains("(1/1) FINISHED"));
    }
}
