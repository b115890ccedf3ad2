//! The low-level Dockerfile parser: logical lines, directives, heredocs and the AST, read the
//! way BuildKit's `parser.Parse` reads them (its golden files are our tests).

mod directives;
mod error;
mod heredoc;
mod line_parsers;
mod lines;
mod node;
mod quote;
mod split_command;

pub use error::{ParseError, ParseErrorKind};
pub use heredoc::{chomp_heredoc_content, heredocs_from_line, parse_heredoc};
pub use line_parsers::parse_words;
pub use node::{Directive, Dockerfile, Heredoc, Node, ParseWarning};
pub use quote::go_quote;

use directives::Directives;
use lines::Lines;

/// Keywords whose lines may open heredocs.
const HEREDOC_KEYWORDS: [&str; 3] = ["run", "copy", "add"];

/// Parses a whole Dockerfile.
pub fn parse(src: &[u8]) -> Result<Dockerfile, ParseError> {
    let mut lines = Lines::new(src);
    let mut directives = Directives::default();
    let mut children: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut comments = Vec::new();
    while let Some(first) = lines.next_line()? {
        let trimmed = first.text.trim_start();
        if let Some(comment) = trimmed.strip_prefix('#') {
            comments.push(comment.trim().to_string());
        }
        directives
            .consider(trimmed, first.number)
            .map_err(|k| ParseError::at(k, first.number, first.number))?;
        let column = 1 + first.text.chars().count() - trimmed.chars().count();
        let (line, ends) = directives.trim_continuation(strip_comment(trimmed));
        if !ends && line.is_empty() {
            continue;
        }
        let (line, empty_continuation) = read_continuation(&mut lines, &directives, line, ends)?;
        let start = first.number;
        if empty_continuation {
            warnings.push(ParseWarning {
                line: start,
                message: format!("Empty continuation line found in: {line}"),
            });
        }
        let located = |mut e: ParseError| {
            e.column = column;
            e
        };
        let mut node = node_from_line(&line, directives.escape)
            .map_err(|k| located(ParseError::at(k, start, lines.current())))?;
        read_heredocs(&mut lines, &mut node, &line, start).map_err(located)?;
        node.start_line = start;
        node.end_line = lines.current();
        node.column = column;
        node.comments = std::mem::take(&mut comments);
        if let Some(sub) = node.sub.as_deref_mut() {
            (sub.start_line, sub.end_line, sub.column) = (start, node.end_line, column);
        }
        children.push(node);
    }
    if children.is_empty() {
        let last = lines.current();
        return Err(ParseError::at(ParseErrorKind::NoInstructions, last, last));
    }
    Ok(Dockerfile {
        children,
        escape: directives.escape,
        directives: directives.seen,
        warnings,
    })
}

/// A line that starts with `#` (after leading whitespace) is a comment, wholly.
fn strip_comment(line: &str) -> &str {
    if line.starts_with('#') {
        ""
    } else {
        line
    }
}

/// Joins continuation lines onto `line`. Comment lines inside a continuation are dropped;
/// empty ones are dropped too, with a warning (BuildKit will make them errors one day).
fn read_continuation(
    lines: &mut Lines,
    directives: &Directives,
    mut line: String,
    mut continues: bool,
) -> Result<(String, bool), ParseError> {
    let mut empty_seen = false;
    while continues {
        let Some(next) = lines.next_line()? else {
            break;
        };
        let text = next.text;
        if text.trim_start().starts_with('#') {
            continue;
        }
        if text.trim_start().is_empty() {
            empty_seen = true;
            continue;
        }
        let (more, again) = directives.trim_continuation(text);
        line.push_str(&more);
        continues = again;
    }
    Ok((line, empty_seen))
}

/// Builds the node for one logical line: keyword, flags, arguments by the keyword's rule, and
/// ONBUILD's nested trigger.
fn node_from_line(line: &str, escape: char) -> Result<Node, ParseErrorKind> {
    let (keyword, flags, rest) = split_command::split_command(line);
    let lower = keyword.to_ascii_lowercase();
    let mut node = Node {
        keyword,
        flags,
        original: line.to_string(),
        ..Node::default()
    };
    if lower == "onbuild" {
        if !rest.is_empty() {
            node.sub = Some(Box::new(node_from_line(&rest, escape)?));
        }
        return Ok(node);
    }
    let split = line_parsers::split_args(&lower, &rest, escape)?;
    node.args = split.args;
    node.json = split.json;
    Ok(node)
}

fn can_contain_heredoc(node: &Node) -> bool {
    let target = node
        .sub
        .as_deref()
        .filter(|_| node.keyword_lower() == "onbuild");
    let target = target.unwrap_or(node);
    HEREDOC_KEYWORDS.contains(&target.keyword_lower().as_str()) && !target.json
}

/// Reads the bodies of the heredocs that `line` opens, one after another, from the lines
/// that follow it.
fn read_heredocs(
    lines: &mut Lines,
    node: &mut Node,
    line: &str,
    start: usize,
) -> Result<(), ParseError> {
    if !can_contain_heredoc(node) {
        return Ok(());
    }
    let docs = heredocs_from_line(line).map_err(|k| ParseError::at(k, start, lines.current()))?;
    for mut doc in docs {
        let mut terminated = false;
        while let Some(raw) = lines.next_raw()? {
            let candidate = raw.trim_end_matches(['\r', '\n']);
            let candidate = if doc.chomp {
                candidate.trim_start_matches('\t')
            } else {
                candidate
            };
            if candidate == doc.name {
                terminated = true;
                break;
            }
            doc.content.push_str(raw);
        }
        if !terminated {
            let kind = ParseErrorKind::UnterminatedHeredoc(doc.name);
            return Err(ParseError::at(kind, start, lines.current()));
        }
        node.heredocs.push(doc);
    }
    Ok(())
}
