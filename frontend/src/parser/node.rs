//! The AST: one [`Node`] per instruction, as BuildKit's parser builds it, plus `Dump()`.

use super::quote::{go_quote, go_quote_list};

/// One heredoc attached to a RUN, COPY or ADD instruction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// `3<<EOF` gives 3; plain `<<EOF` gives 0.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are removed from the body (later, at use).
    pub chomp: bool,
    /// The raw body, every line with its newline, without the terminator line.
    pub content: String,
}

/// One instruction of a Dockerfile as the low-level parser sees it: the keyword, its leading
/// `--flags`, its arguments split by the keyword's rule, and where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Run`…); compare with [`Node::keyword_lower`].
    pub keyword: String,
    /// Leading `--name[=value]` words, quotes and escapes processed.
    pub flags: Vec<String>,
    /// The arguments, split by the rule of the keyword.
    pub args: Vec<String>,
    /// ONBUILD's trigger instruction.
    pub sub: Option<Box<Node>>,
    /// Heredoc bodies, in the order their delimiters appear.
    pub heredocs: Vec<Heredoc>,
    /// The arguments were written as a JSON array (exec form).
    pub json: bool,
    /// The logical line (continuations joined), as the parser read it.
    pub original: String,
    /// 1-based first and last physical line, heredoc bodies included.
    pub start_line: usize,
    pub end_line: usize,
    /// 1-based column (in characters) of the keyword on its first line.
    pub column: usize,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
}

impl Node {
    pub fn keyword_lower(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// BuildKit's `Node.Dump()` for an instruction: `run ["--flag"] "arg" "arg"`.
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            out.push(' ');
            out.push_str(&go_quote_list(&self.flags));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        if let Some(sub) = &self.sub {
            out.push_str(" (");
            out.push_str(&sub.dump());
            out.push(')');
        }
        out.trim().to_string()
    }
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Dockerfile {
    pub children: Vec<Node>,
    /// The escape character in effect (`\` or a backtick).
    pub escape: char,
    /// Parser directives seen (`syntax`, `escape`, `check`), lowercase key → value, with lines.
    pub directives: Vec<Directive>,
    /// Parser warnings (empty continuation lines), with the line they concern.
    pub warnings: Vec<ParseWarning>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ParseWarning {
    pub line: usize,
    pub message: String,
}

impl Dockerfile {
    /// BuildKit's root `Dump()` followed by a newline: the exact text of a `result` file.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            out.push('(');
            out.push_str(&child.dump());
            out.push_str(")\n");
        }
        let mut out = out.trim().to_string();
        out.push('\n');
        out
    }

    /// First and last line of the instructions.
    pub fn line_range(&self) -> (usize, usize) {
        let start = self.children.first().map_or(0, |n| n.start_line);
        let end = self.children.last().map_or(0, |n| n.end_line);
        (start, end)
    }
}
