//! Heredoc delimiters (`<<EOF`, `<<-EOF`, `3<<'EOF'`) on RUN, COPY and ADD lines.

use std::sync::OnceLock;

use regex::Regex;

use super::error::ParseErrorKind;
use super::node::Heredoc;
use crate::shell::Lexer;

const NO_ENV: &[(String, String)] = &[];

fn heredoc_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)$").expect("heredoc regex is valid")
    })
}

/// Reads one word as a heredoc delimiter; `Ok(None)` when the word is not one.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ParseErrorKind> {
    let Some(caps) = heredoc_regex().captures(word) else {
        return Ok(None);
    };
    let rest = &caps[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: String| ParseErrorKind::InvalidHeredoc {
        word: word.to_string(),
        reason,
    };
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let words = lexer
        .process_words(rest, &NO_ENV)
        .map_err(|e| invalid(e.to_string()))?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    // Lexing again with quotes kept shows whether any part of the word was quoted: a quoted
    // delimiter means the body is taken literally.
    lexer.raw_quotes = true;
    let raw = lexer
        .process_words(rest, &NO_ENV)
        .map_err(|e| invalid(e.to_string()))?;
    let [raw_name] = raw.as_slice() else {
        return Err(invalid(
            "lexing the delimiter gave inconsistent results".into(),
        ));
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        file_descriptor: caps[1].parse().unwrap_or(0),
        expand: quotes(name) == quotes(raw_name),
        chomp: &caps[2] == "-",
        content: String::new(),
    }))
}

/// The heredocs a whole instruction line opens, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ParseErrorKind> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset_env = true;
    let words = lexer.process_words(line, &NO_ENV).unwrap_or_default();
    let mut docs = Vec::new();
    let mut words = words.into_iter();
    while let Some(mut word) = words.next() {
        // `<< EOF` and `<<- EOF`: the delimiter may stand apart from the operator.
        if is_bare_operator(&word) {
            if let Some(next) = words.next() {
                word = format!("{word} {next}");
            }
        }
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

fn is_bare_operator(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    rest == "<<" || rest == "<<-"
}

/// `<<-` bodies lose the leading tabs of every line.
pub fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_chomp_and_quoting() {
        let h = parse_heredoc("3<<-'EOF'").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.file_descriptor, h.chomp, h.expand),
            ("EOF", 3, true, false)
        );
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert!(h.expand && !h.chomp);
        assert!(parse_heredoc("<<'EOF").is_err());
        assert_eq!(parse_heredoc("<<EOF sh").unwrap(), None);
    }

    #[test]
    fn chomp_removes_leading_tabs_on_every_line() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\nc\t\n"), "a\nb\nc\t\n");
    }
}
