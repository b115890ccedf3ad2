//! `$name` and `${…}` expansion.
//!
//! Only the parameter expansions BuildKit implements are accepted: `${v}`, `${v-w}`,
//! `${v:-w}`, `${v+w}`, `${v:+w}`, `${v?m}`, `${v:?m}`, `${v#p}`, `${v##p}`, `${v%p}`,
//! `${v%%p}`, `${v/p/r}` and `${v//p/r}`. Everything else (`${v:=w}`, `${#v}`, `${v:1}`) is an
//! error rather than silently expanding to something a real shell would not produce.

use super::error::ShellError;
use super::pattern;
use super::unicode::{is_go_digit, is_go_letter};
use super::word::ShellWord;

/// Go prints the scanner's end-of-input marker (-1) with `string(rune)`, which gives U+FFFD;
/// the operator text in "unsupported modifier" messages keeps that.
fn op_text(op: Option<char>) -> String {
    op.unwrap_or('\u{fffd}').to_string()
}

/// Special parameters (`$@ $* $# $? $- $$ $! $0`): never set in a Dockerfile, so they expand
/// to empty, but they must be recognised so `$$` is not read as `$` followed by `$`.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// How many `${…}` may nest. BuildKit has no limit (Go stacks grow), but no real Dockerfile
/// comes near this, and a bound keeps the recursion within a thread's stack.
pub(super) const MAX_NESTING: usize = 200;

impl ShellWord<'_> {
    /// Expands the `$…` at the cursor, refusing nesting deeper than [`MAX_NESTING`]: each
    /// level recurses, and a hostile `${a:-${a:-…` must give an error, not a stack overflow.
    pub(super) fn dollar(&mut self) -> Result<String, ShellError> {
        if self.depth >= MAX_NESTING {
            return Err(ShellError::TooDeep(MAX_NESTING));
        }
        self.depth += 1;
        let result = self.dollar_unguarded();
        self.depth -= 1;
        result
    }

    /// The expansion itself. A `$` not followed by a name is literal.
    fn dollar_unguarded(&mut self) -> Result<String, ShellError> {
        self.cur.next();
        if self.cur.peek() == Some('{') {
            self.cur.next();
            return self.braced();
        }
        let name = self.name();
        if name.is_empty() {
            return Ok("$".to_string());
        }
        Ok(match self.lookup(&name) {
            Some(value) => value,
            None if self.lex.skip_unset_env => format!("${name}"),
            None => String::new(),
        })
    }

    /// A name: letters, digits and `_`; or all the digits of a positional parameter; or one
    /// special-parameter character. May be empty.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.cur.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(digit) = self.cur.peek().filter(|&c| is_go_digit(c)) {
                    self.cur.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.cur.next();
                return ch.to_string();
            }
            if !(is_go_letter(ch) || is_go_digit(ch) || ch == '_') {
                break;
            }
            self.cur.next();
            name.push(ch);
        }
        name
    }

    /// The part after `${`: a name and then `}`, an operator, or an error.
    fn braced(&mut self) -> Result<String, ShellError> {
        match self.cur.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        match self.cur.next() {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let op = self.cur.next();
                self.operator(&name, op, true)
            }
            op @ Some('+' | '-' | '?' | '#' | '%') => self.operator(&name, op, false),
            Some('/') => self.substitute(&name),
            other => Err(ShellError::UnsupportedModifier(op_text(other))),
        }
    }

    /// `${name<op>word}` and `${name:<op>word}` (`colon`): scans the word up to `}` and
    /// applies the operator. Pattern words keep their escapes so the glob sees `\*`.
    fn operator(
        &mut self,
        name: &str,
        op: Option<char>,
        colon: bool,
    ) -> Result<String, ShellError> {
        let op_str = if colon {
            format!(":{}", op_text(op))
        } else {
            op_text(op)
        };
        let is_pattern = matches!(op, Some('#' | '%'));
        if colon && is_pattern {
            return Err(ShellError::UnsupportedModifier(op_str));
        }
        let word = self
            .scan_until(Some('}'), is_pattern)
            .map_err(|e| self.at_end_or(e, ShellError::MissingBrace))?
            .text;
        let value = self.lookup(name);
        if value.is_none() && self.lex.skip_unset_env {
            return Ok(format!("${{{name}{op_str}{word}}}"));
        }
        apply_operator(name, op, colon, value.as_deref(), word, op_str)
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, name: &str) -> Result<String, ShellError> {
        let all = self.cur.peek() == Some('/');
        if all {
            self.cur.next();
        }
        let pattern = self
            .scan_until(Some('/'), true)
            .map_err(|e| self.at_end_or(e, ShellError::MissingSlash))?
            .text;
        let replacement = self
            .scan_until(Some('}'), true)
            .map_err(|e| self.at_end_or(e, ShellError::MissingBrace))?
            .text;
        let Some(value) = self.lookup(name) else {
            if self.lex.skip_unset_env {
                // BuildKit writes one `/` back even for `//`; kept for identical output.
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return pattern::replace("", &pattern, &replacement, all);
        };
        pattern::replace(&value, &pattern, &replacement, all)
    }

    /// A nested word that failed because the input ran out is reported as the missing
    /// delimiter of the enclosing expression; other failures pass through.
    fn at_end_or(&self, err: ShellError, at_end: ShellError) -> ShellError {
        if self.cur.peek().is_none() {
            at_end
        } else {
            err
        }
    }
}

/// The meaning of each operator once the word is scanned and the variable looked up. With
/// `colon`, a set but empty variable counts as unset (`${v:-w}` against `${v-w}`).
fn apply_operator(
    name: &str,
    op: Option<char>,
    colon: bool,
    value: Option<&str>,
    word: String,
    op_str: String,
) -> Result<String, ShellError> {
    let set = value.is_some();
    let unset = value.is_none_or(|v| colon && v.is_empty());
    let value = value.unwrap_or("");
    match op {
        Some('-') => Ok(if unset { word } else { value.to_string() }),
        Some('+') => Ok(if unset { String::new() } else { word }),
        Some('?') if unset => Err(required(name, word, set)),
        Some('?') => Ok(value.to_string()),
        Some(op @ ('#' | '%')) => {
            // `##` and `%%` arrive as a word starting with the operator again.
            let (pattern, greedy) = match word.strip_prefix(op) {
                Some(rest) => (rest, true),
                None => (word.as_str(), false),
            };
            if op == '%' {
                pattern::trim_suffix(pattern, value, greedy)
            } else {
                pattern::trim_prefix(pattern, value, greedy)
            }
        }
        _ => Err(ShellError::UnsupportedModifier(op_str)),
    }
}

/// The `${v?m}` error: the user's message, or BuildKit's default telling unset from empty.
fn required(name: &str, word: String, set: bool) -> ShellError {
    let message = match (word.is_empty(), set) {
        (false, _) => word,
        (true, false) => "is not allowed to be unset".to_string(),
        (true, true) => "is not allowed to be empty".to_string(),
    };
    ShellError::Required {
        name: name.to_string(),
        message,
    }
}
