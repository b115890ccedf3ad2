//! A process's stdout and stderr: forwarded to the sink as they arrive (one reader thread per
//! pipe, so neither can fill up and stall the process), with the last lines of both kept for
//! the error of a failed run.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::mpsc;

use super::{OutputSink, Stream};

/// A sink that keeps everything (tests, callers that want the output whole).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CollectOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl OutputSink for CollectOutput {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(bytes),
            Stream::Stderr => self.stderr.extend_from_slice(bytes),
        }
    }
}

/// A line longer than this is cut to its end (a progress bar that never prints a newline
/// must not grow without bound).
const MAX_LINE: usize = 16 * 1024;

/// The last `max` complete lines of both streams, in the order they were completed.
#[derive(Debug)]
pub struct Tail {
    max: usize,
    lines: VecDeque<String>,
    partial: [Vec<u8>; 2],
}

impl Tail {
    pub fn new(max: usize) -> Tail {
        Tail {
            max,
            lines: VecDeque::with_capacity(max + 1),
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let i = stream as usize;
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial[i].extend_from_slice(&rest[..nl]);
            let line = std::mem::take(&mut self.partial[i]);
            self.add_line(&line);
            rest = &rest[nl + 1..];
        }
        let partial = &mut self.partial[i];
        partial.extend_from_slice(rest);
        if partial.len() > MAX_LINE {
            partial.drain(..partial.len() - MAX_LINE);
        }
    }

    fn add_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.lines
            .push_back(String::from_utf8_lossy(line).into_owned());
        while self.lines.len() > self.max {
            self.lines.pop_front();
        }
    }

    /// The kept lines, unterminated last lines included.
    pub fn finish(mut self) -> Vec<String> {
        for i in 0..2 {
            let line = std::mem::take(&mut self.partial[i]);
            if !line.is_empty() {
                self.add_line(&line);
            }
        }
        self.lines.into()
    }
}

/// Reads both pipes until they close, forwarding every chunk to `sink` and `tail` on the
/// calling thread (the sink need not be `Send`).
pub fn pump(
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    sink: &mut dyn OutputSink,
    tail: &mut Tail,
) {
    let (tx, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
    let readers = [
        spawn_reader(Stream::Stdout, stdout, tx.clone()),
        spawn_reader(Stream::Stderr, stderr, tx),
    ];
    // Ends when both readers have hung up.
    for (stream, chunk) in rx {
        sink.output(stream, &chunk);
        tail.push(stream, &chunk);
    }
    for reader in readers {
        let _ = reader.join();
    }
}

fn spawn_reader(
    stream: Stream,
    mut pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_of_both_streams() {
        let mut tail = Tail::new(3);
        tail.push(Stream::Stdout, b"one\ntw");
        tail.push(Stream::Stderr, b"err1\r\n");
        tail.push(Stream::Stdout, b"o\nthree\nfour");
        assert_eq!(tail.finish(), ["two", "three", "four"]);

        let mut tail = Tail::new(20);
        tail.push(Stream::Stderr, b"only\n");
        tail.push(Stream::Stdout, b"partial");
        assert_eq!(tail.finish(), ["only", "partial"]);
    }

    #[test]
    fn pump_forwards_both_streams() {
        let mut sink = CollectOutput::default();
        let mut tail = Tail::new(20);
        pump(
            std::io::Cursor::new(b"out\n".to_vec()),
            std::io::Cursor::new(b"err\n".to_vec()),
            &mut sink,
            &mut tail,
        );
        assert_eq!(sink.stdout_text(), "out\n");
        assert_eq!(sink.stderr_text(), "err\n");
        let mut lines = tail.finish();
        lines.sort();
        assert_eq!(lines, ["err", "out"]);
    }
}
