//! Build progress as BuildKit shows it: `plain` text, `rawjson` status lines, `quiet` (only the
//! image ID and errors) and an interactive `tty` display. The solver reports events through
//! [`Reporter`]; each mode renders them on its own, so the solver need not know which is active.
//!
//! Writes to stderr or stdout are never a reason to fail a build: a closed pipe loses progress,
//! not the image, so every renderer ignores write errors.

mod lines;
mod plain;
mod quiet;
mod rawjson;
mod tty;

use std::io::{self, IsTerminal, Write};

pub use plain::Plain;
pub use quiet::Quiet;
pub use rawjson::RawJson;
pub use tty::Tty;

use crate::cli::Progress;

/// The error of a step stopped because another failed or the user interrupted: BuildKit's
/// wording, which its displays (and ours) show as `CANCELED` rather than as an error.
pub const CANCELED: &str = "context canceled";

/// Whether a step's error says it was cancelled (see [`CANCELED`]).
pub fn is_canceled(error: &str) -> bool {
    error.ends_with(CANCELED)
}

/// Where a renderer writes: stderr in the binary, a buffer in tests.
pub type Sink = Box<dyn Write + Send>;

/// A vertex of the build as progress shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexInfo {
    /// `sha256:…`
    pub digest: String,
    /// `[stage-0 2/5] RUN make`
    pub name: String,
    /// Digests of the vertices this one reads.
    pub inputs: Vec<String>,
}

/// Which output stream of a step a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Where a build's progress goes. Implementations are `Send + Sync`: the solver may call from
/// several threads at once (parallel steps).
pub trait Reporter: Send + Sync {
    fn started(&self, vertex: &VertexInfo);
    /// The step was a cache hit: it did not run. `started` was not called for it.
    fn cached(&self, vertex: &VertexInfo);
    fn completed(&self, vertex: &VertexInfo);
    fn failed(&self, vertex: &VertexInfo, error: &str);
    fn log(&self, vertex: &VertexInfo, stream: LogStream, bytes: &[u8]);
    /// Why a step missed the cache: short human lines.
    fn miss_reason(&self, vertex: &VertexInfo, reasons: &[String]);
    /// A free-form line not tied to a vertex ("writing image sha256:… done", warnings).
    fn message(&self, text: &str);
    /// The build's result: the image ID (config digest) or `None`.
    fn finished(&self, image_id: Option<&str>);
}

/// The process's reporter: set once by the build from `--progress`; plain text on stderr until
/// then (and for commands without a progress mode: push, pull).
static REPORTER: std::sync::OnceLock<Box<dyn Reporter>> = std::sync::OnceLock::new();

/// Makes `mode`'s reporter the process's; a second call keeps the first.
pub fn install(mode: Progress) {
    let _ = REPORTER.set(reporter(mode));
}

pub fn current() -> &'static dyn Reporter {
    REPORTER
        .get_or_init(|| Box::new(Plain::new(Box::new(io::stderr()))))
        .as_ref()
}

/// The reporter for a `--progress` mode. `Auto` is `Tty` when stderr is a terminal and `Plain`
/// otherwise, as in BuildKit; an explicit `Tty` draws even into a pipe because it was asked for.
pub fn reporter(mode: Progress) -> Box<dyn Reporter> {
    let stderr = || -> Sink { Box::new(io::stderr()) };
    match mode {
        Progress::Auto if io::stderr().is_terminal() => Box::new(Tty::on_stderr()),
        Progress::Auto | Progress::Plain => Box::new(Plain::new(stderr())),
        Progress::Tty => Box::new(Tty::on_stderr()),
        Progress::Rawjson => Box::new(RawJson::new(stderr())),
        Progress::Quiet => Box::new(Quiet::new(Box::new(io::stdout()), stderr())),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A [`Sink`] whose bytes a test can read back while the renderer still owns the writer.

    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    use super::VertexInfo;

    #[derive(Clone, Default)]
    pub struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        pub fn sink(&self) -> super::Sink {
            Box::new(self.clone())
        }

        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    pub fn vertex(n: u8, name: &str) -> VertexInfo {
        VertexInfo {
            digest: format!("sha256:{:064x}", n),
            name: name.to_string(),
            inputs: Vec::new(),
        }
    }
}
