//! The scanner state for one word: quotes, escapes and word splitting.
//!
//! This follows BuildKit's `shellWord`, one character of lookahead at a time, so that its
//! corner cases (which the conformance data pins) fall out the same way: `$` is handled before
//! the escape character, nested `${…}` words are scanned by the same loop with a stop
//! character, and the raw-escapes mode is switched per nested word.

use std::collections::BTreeSet;

use super::env::EnvGetter;
use super::error::ShellError;
use super::unicode::is_go_space;
use super::Lexer;

/// The characters of the input with a read position. Go's `text/scanner`, which BuildKit
/// reads words with, silently drops a byte-order mark at the very start, so this does too.
pub(super) struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    pub(super) fn new(input: &str) -> Self {
        let input = input.strip_prefix('\u{feff}').unwrap_or(input);
        Cursor {
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    pub(super) fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += 1;
        Some(ch)
    }
}

/// Word splitting done alongside expansion: text from `$` expansions and bare characters
/// splits on white space, while quoted text and escaped characters never split.
#[derive(Default)]
struct Words {
    current: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if !is_go_space(ch) {
            self.add_raw_char(ch);
        } else if self.in_word && !self.current.is_empty() {
            self.words.push(std::mem::take(&mut self.current));
            self.in_word = false;
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
        self.in_word = true;
    }

    /// Empty words are dropped, so `""` alone gives no word at all (as in BuildKit).
    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.words.push(self.current);
        }
        self.words
    }
}

/// The outcome of scanning up to a stop character: the joined text and its split words.
pub(super) struct Scanned {
    pub(super) text: String,
    pub(super) words: Vec<String>,
}

/// The state of one expansion: options, input, and which names were looked up.
pub(super) struct ShellWord<'a> {
    pub(super) lex: &'a Lexer,
    pub(super) env: &'a dyn EnvGetter,
    pub(super) cur: Cursor,
    /// Whether escape characters are kept; nested words switch it (see `scan_until`).
    raw_escapes: bool,
    /// Current `${…}` nesting depth (see `dollar`).
    pub(super) depth: usize,
    pub(super) matched: BTreeSet<String>,
    pub(super) unmatched: BTreeSet<String>,
}

impl<'a> ShellWord<'a> {
    pub(super) fn new(lex: &'a Lexer, env: &'a dyn EnvGetter, input: &str) -> Self {
        ShellWord {
            lex,
            env,
            cur: Cursor::new(input),
            raw_escapes: lex.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    /// Scans until `stop` (or the end of input when `None`) with raw escapes set as given,
    /// restoring the enclosing word's setting afterwards. Patterns are scanned raw so that
    /// `\*` reaches the glob converter; `${v:-w}` words are not, whatever the lexer options.
    pub(super) fn scan_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<Scanned, ShellError> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.scan_loop(stop);
        self.raw_escapes = saved;
        result
    }

    fn scan_loop(&mut self, stop: Option<char>) -> Result<Scanned, ShellError> {
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.cur.peek() {
            if Some(ch) == stop {
                self.cur.next();
                return Ok(Scanned {
                    text,
                    words: words.finish(),
                });
            }
            if let Some(expanded) = self.special(ch)? {
                text.push_str(&expanded);
                if ch == '$' {
                    words.add_str(&expanded);
                } else {
                    words.add_raw_str(&expanded);
                }
                continue;
            }
            if !self.plain_char(&mut text, &mut words) {
                break;
            }
        }
        match stop {
            Some(stop) => Err(ShellError::UnexpectedEnd(stop)),
            None => Ok(Scanned {
                text,
                words: words.finish(),
            }),
        }
    }

    /// Consumes one unquoted character (or an escape pair). Returns false when an escape
    /// character ends the input: a trailing escape is dropped.
    fn plain_char(&mut self, text: &mut String, words: &mut Words) -> bool {
        let Some(ch) = self.cur.next() else {
            return false;
        };
        if ch != self.lex.escape {
            words.add_char(ch);
            text.push(ch);
            return true;
        }
        if self.raw_escapes {
            words.add_raw_char(ch);
            text.push(ch);
        }
        let Some(escaped) = self.cur.next() else {
            return false;
        };
        words.add_raw_char(escaped);
        text.push(escaped);
        true
    }

    /// Dispatches the characters with their own syntax; `None` means "not special here".
    fn special(&mut self, ch: char) -> Result<Option<String>, ShellError> {
        match ch {
            '$' => self.dollar().map(Some),
            '\'' if !self.lex.skip_process_quotes => self.single_quoted().map(Some),
            '"' if !self.lex.skip_process_quotes => self.double_quoted().map(Some),
            _ => Ok(None),
        }
    }

    /// `'…'`: everything literal up to the next `'`; there is no way to escape a `'`.
    fn single_quoted(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        self.cur.next();
        if self.lex.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.cur.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(ch) => out.push(ch),
            }
        }
    }

    /// `"…"`: literal except `$` expansions, and the escape character, which escapes only
    /// `"`, `$` and itself (any other escape stays in the text, as in POSIX sh).
    fn double_quoted(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        self.cur.next();
        if self.lex.raw_quotes {
            out.push('"');
        }
        loop {
            match self.cur.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.cur.next();
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(_) => self.double_quoted_char(&mut out),
            }
        }
    }

    /// One character inside double quotes. With raw escapes an escape before a character it
    /// cannot escape is written twice, which is BuildKit's behaviour and kept on purpose.
    fn double_quoted_char(&mut self, out: &mut String) {
        let Some(mut ch) = self.cur.next() else {
            return;
        };
        if ch == self.lex.escape {
            if self.raw_escapes {
                out.push(ch);
            }
            match self.cur.peek() {
                // A trailing escape is dropped; the missing `"` is reported next.
                None => return,
                Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                    self.cur.next();
                    ch = next;
                }
                Some(_) => {}
            }
        }
        out.push(ch);
    }

    /// Looks `name` up, recording it as matched or unmatched for lint and cache-key users.
    pub(super) fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(value) => {
                self.matched.insert(name.to_string());
                Some(value.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }
}
