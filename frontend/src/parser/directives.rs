//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`): honoured only in the comment
//! lines that open the file, before any other comment, blank line or instruction.

use nom::bytes::complete::{tag, take_while};
use nom::character::complete::satisfy;
use nom::combinator::{recognize, rest};
use nom::Parser;

use super::error::ParseErrorKind;
use super::node::Directive;

const VALID_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// The directive state while reading the file.
#[derive(Debug)]
pub struct Directives {
    pub escape: char,
    done: bool,
    pub seen: Vec<Directive>,
}

/// Go's ASCII `\s`: `[\t\n\f\r ]` (no vertical tab).
fn is_go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// `#` name `=` value, BuildKit's `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, as a nom
/// grammar. Returns the name and the value with trailing spaces removed.
fn directive(line: &str) -> Option<(&str, &str)> {
    let name = recognize((
        satisfy(|c: char| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
    ));
    let mut grammar = (
        tag("#"),
        take_while(is_go_space),
        name,
        take_while(is_go_space),
        tag("="),
        take_while(is_go_space),
        rest,
    );
    let parsed: nom::IResult<&str, _> = grammar.parse(line);
    let (_, (_, _, name, _, _, spaces, value)) = parsed.ok()?;
    let value = value.trim_end_matches(is_go_space);
    if !value.is_empty() {
        return Some((name, value));
    }
    // The regex backtracks so that `.+?` takes the last space of an all-space value.
    let last = spaces.char_indices().last()?.0;
    Some((name, &spaces[last..]))
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            done: false,
            seen: Vec::new(),
        }
    }
}

impl Directives {
    /// Looks at one line (left-trimmed, newline removed); the first line that is not a
    /// directive ends the directive section for good.
    pub fn consider(&mut self, line: &str, line_no: usize) -> Result<(), ParseErrorKind> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !VALID_DIRECTIVES.contains(&name.as_str()) {
            self.done = true;
            return Ok(());
        }
        if self.seen.iter().any(|d| d.name == name) {
            return Err(ParseErrorKind::DuplicateDirective(name));
        }
        let value = value.to_string();
        if name == "escape" {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => return Err(ParseErrorKind::InvalidEscapeToken(value)),
            };
        }
        self.seen.push(Directive {
            name,
            value,
            line: line_no,
        });
        Ok(())
    }

    /// Removes a trailing escape character (the line continues) and reports whether it did.
    /// An escape preceded by another escape is an escaped escape, not a continuation.
    pub fn trim_continuation(&self, line: &str) -> (String, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        let Some(before) = body.strip_suffix(self.escape) else {
            return (line.to_string(), false);
        };
        if before.ends_with(self.escape) {
            return (line.to_string(), false);
        }
        (before.to_string(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_only_count_before_anything_else() {
        let mut d = Directives::default();
        d.consider("# escape=`", 1).unwrap();
        assert_eq!(d.escape, '`');
        d.consider("# just a comment", 2).unwrap();
        d.consider("# syntax=foo", 3).unwrap();
        assert_eq!(d.seen.len(), 1);
    }

    #[test]
    fn duplicate_and_invalid_directives_are_errors() {
        let mut d = Directives::default();
        d.consider("# Syntax = a", 1).unwrap();
        assert_eq!(
            d.consider("#syntax=b", 2),
            Err(ParseErrorKind::DuplicateDirective("syntax".into()))
        );
        let mut d = Directives::default();
        assert!(matches!(
            d.consider("# escape=x", 1),
            Err(ParseErrorKind::InvalidEscapeToken(_))
        ));
    }

    #[test]
    fn directive_grammar_matches_buildkits_regex() {
        assert_eq!(directive("#escape=`"), Some(("escape", "`")));
        assert_eq!(
            directive("# Syntax =  docker/dockerfile:1  "),
            Some(("Syntax", "docker/dockerfile:1"))
        );
        assert_eq!(directive("# escape=  "), Some(("escape", " ")));
        assert_eq!(directive("# escape="), None);
        assert_eq!(directive("# 1x=y"), None);
        assert_eq!(directive("#x y=z"), None);
        assert_eq!(directive("FROM x"), None);
    }

    #[test]
    fn continuation_respects_escaped_escape() {
        let d = Directives::default();
        assert_eq!(d.trim_continuation("a \\  "), ("a ".to_string(), true));
        assert_eq!(d.trim_continuation("\\"), (String::new(), true));
        assert_eq!(d.trim_continuation("a \\\\"), ("a \\\\".to_string(), false));
        assert_eq!(d.trim_continuation("a"), ("a".to_string(), false));
    }
}
