//! Physical lines of the Dockerfile: BOM, UTF-8 check, BuildKit's 64 KiB line limit.

use super::error::{ParseError, ParseErrorKind};

/// BuildKit reads lines with Go's `bufio.Scanner`, whose token limit is 64 KiB including the
/// newline: longer lines are an error, not silently split.
pub const MAX_LINE: usize = 65535;

/// One physical line, newline removed, with its 1-based number.
pub struct Line<'a> {
    pub text: &'a str,
    pub number: usize,
}

pub struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    pub fn new(src: &'a [u8]) -> Self {
        let src = src.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(src);
        Lines {
            rest: src,
            number: 0,
        }
    }

    /// The number of the last line read (0 before the first).
    pub fn current(&self) -> usize {
        self.number
    }

    /// The next line with its line ending kept, as heredoc bodies need it.
    pub fn next_raw(&mut self) -> Result<Option<&'a str>, ParseError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self
            .rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let (raw, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.number += 1;
        let content_len = raw.len() - usize::from(raw.ends_with(b"\n"));
        if content_len > MAX_LINE {
            let kind = ParseErrorKind::LineTooLong { max: MAX_LINE };
            return Err(ParseError::at(kind, self.number, self.number));
        }
        std::str::from_utf8(raw).map(Some).map_err(|e| {
            let column = 1 + String::from_utf8_lossy(&raw[..e.valid_up_to()])
                .chars()
                .count();
            let mut err = ParseError::at(
                ParseErrorKind::InvalidUtf8 { column },
                self.number,
                self.number,
            );
            err.column = column;
            err
        })
    }

    /// The next line with trailing `\r` and `\n` removed.
    pub fn next_line(&mut self) -> Result<Option<Line<'a>>, ParseError> {
        Ok(self.next_raw()?.map(|raw| Line {
            text: raw.trim_end_matches(['\r', '\n']),
            number: self.number,
        }))
    }
}
