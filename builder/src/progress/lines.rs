//! A step's output cut into lines, each stamped with the seconds since the step started, as
//! BuildKit's plain progress prints them (`#5 0.153 hello`).

use std::collections::VecDeque;
use std::time::Instant;

/// One line of a step's output, without its newline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    /// Seconds since the step started, when the line's first byte arrived.
    pub at: f64,
    pub text: Vec<u8>,
}

impl Line {
    /// `0.153 hello`: BuildKit's stamp, then the text.
    pub fn stamped(&self) -> Vec<u8> {
        let mut out = stamp(self.at).into_bytes();
        out.push(b' ');
        out.extend_from_slice(&self.text);
        out
    }
}

/// BuildKit's stamp precision: 3 decimals under 10 s, 2 under 100 s, then 1, so the column
/// stays narrow on long steps.
pub(crate) fn stamp(secs: f64) -> String {
    let precision = if secs < 10.0 {
        3
    } else if secs < 100.0 {
        2
    } else {
        1
    };
    format!("{secs:.precision$}")
}

/// One step's output: the line still being written and the last lines kept for an error report.
pub(crate) struct StepLog {
    start: Instant,
    partial: Option<Line>,
    tail: VecDeque<Line>,
    tail_cap: usize,
    /// Lines that fell out of `tail`, so a report can say output was cut.
    dropped: usize,
}

impl StepLog {
    /// A log that keeps the last `tail_cap` lines.
    pub fn new(tail_cap: usize) -> Self {
        StepLog {
            start: Instant::now(),
            partial: None,
            tail: VecDeque::new(),
            tail_cap,
            dropped: 0,
        }
    }

    /// The step really starts now: stamps count from here.
    pub fn restart(&mut self) {
        self.start = Instant::now();
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Feeds a chunk of output and returns the lines it completed. A line split over chunks keeps
    /// the stamp of its first chunk, as BuildKit's does.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let now = self.elapsed();
        let mut done = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let line = self.partial.get_or_insert_with(|| Line {
                at: now,
                text: Vec::new(),
            });
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    line.text.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    let line = self.partial.take().expect("set above");
                    self.keep(&line);
                    done.push(line);
                }
                None => {
                    line.text.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        done
    }

    /// The unfinished last line, ended: the step is over, so nothing more will complete it.
    pub fn flush(&mut self) -> Option<Line> {
        let line = self.partial.take()?;
        self.keep(&line);
        Some(line)
    }

    /// The last lines kept, and how many earlier lines were dropped to bound memory.
    pub fn tail(&self) -> (usize, impl Iterator<Item = &Line>) {
        (self.dropped, self.tail.iter())
    }

    fn keep(&mut self, line: &Line) {
        if self.tail_cap == 0 {
            return;
        }
        if self.tail.len() == self.tail_cap {
            self.tail.pop_front();
            self.dropped += 1;
        }
        self.tail.push_back(line.clone());
    }
}

/// BuildKit's error report for a failed step (`printErrorLogs`): its name and last output lines
/// between dashes, so the failure is readable without scrolling back.
pub(crate) fn error_report(name: &str, log: &StepLog) -> Vec<u8> {
    let mut out = format!("------\n > {name}:\n").into_bytes();
    let (dropped, lines) = log.tail();
    if dropped > 0 {
        out.extend_from_slice(format!("[{dropped} earlier lines not kept]\n").as_bytes());
    }
    for line in lines {
        out.extend_from_slice(&line.stamped());
        out.push(b'\n');
    }
    out.extend_from_slice(b"------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<&[u8]> {
        lines.iter().map(|l| l.text.as_slice()).collect()
    }

    #[test]
    fn stamps_narrow_as_time_grows() {
        assert_eq!(stamp(0.1234), "0.123");
        assert_eq!(stamp(12.345), "12.35");
        assert_eq!(stamp(123.45), "123.5");
    }

    #[test]
    fn a_line_split_over_chunks_comes_out_once_whole() {
        let mut log = StepLog::new(10);
        assert!(log.push(b"hel").is_empty());
        let lines = log.push(b"lo\nwor");
        assert_eq!(texts(&lines), [b"hello".as_slice()]);
        assert_eq!(texts(&log.push(b"ld\n\nx")), [b"world".as_slice(), b""]);
        assert_eq!(log.flush().unwrap().text, b"x");
        assert_eq!(log.flush(), None);
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_counts_the_rest() {
        let mut log = StepLog::new(2);
        log.push(b"a\nb\nc\n");
        let (dropped, lines) = log.tail();
        let kept: Vec<_> = lines.map(|l| l.text.clone()).collect();
        assert_eq!((dropped, kept), (1, vec![b"b".to_vec(), b"c".to_vec()]));
    }

    #[test]
    fn an_error_report_frames_the_output_like_buildkit() {
        let mut log = StepLog::new(10);
        log.push(b"boom\n");
        let report = String::from_utf8(error_report("[2/2] RUN false", &log)).unwrap();
        let re = regex::Regex::new(r"^------\n > \[2/2\] RUN false:\n0\.\d{3} boom\n------\n$");
        assert!(re.unwrap().is_match(&report), "{report}");
    }
}
