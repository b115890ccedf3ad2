//! Splits a logical line into keyword, leading `--flags` and the rest, as BuildKit does before
//! it dispatches on the keyword.

/// BuildKit's `[\t\v\f\r ]`: the whitespace that separates the keyword and list arguments.
pub fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// `(keyword, flags, rest)`: the keyword as written, the flag words, and the rest trimmed.
pub fn split_command(line: &str) -> (String, Vec<String>, String) {
    let line = line.trim();
    let (keyword, rest) = match line.find(is_token_space) {
        Some(at) => (&line[..at], line[at..].trim_start_matches(is_token_space)),
        None => (line, ""),
    };
    let (rest, flags) = extract_flags(rest);
    (keyword.to_string(), flags, rest.trim().to_string())
}

#[derive(PartialEq, Clone, Copy)]
enum Phase {
    Spaces,
    Word,
    Quote(char),
}

/// Takes leading words that start with `--` off `line`, processing quotes and backslash
/// escapes inside them; a bare `--` ends the flags and is dropped.
pub fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = line.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        match phase {
            Phase::Spaces => {
                if c.is_whitespace() {
                    continue;
                }
                if !line[pos..].starts_with("--") {
                    return (&line[pos..], flags);
                }
                phase = Phase::Word;
                word.push(c);
            }
            Phase::Word if c.is_whitespace() => {
                if word == "--" {
                    return (&line[pos..], flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                phase = Phase::Spaces;
            }
            Phase::Word if c == '\'' || c == '"' => {
                blank_ok = true;
                phase = Phase::Quote(c);
            }
            Phase::Quote(q) if c == q => phase = Phase::Word,
            Phase::Word | Phase::Quote(_) if c == '\\' => match chars.next() {
                Some((_, escaped)) => word.push(escaped),
                // A backslash at the very end is dropped.
                None => phase = Phase::Word,
            },
            Phase::Word | Phase::Quote(_) => word.push(c),
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    ("", flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keyword_flags_and_rest() {
        let (k, f, r) = split_command("  COPY --from=a --chown=\"x y\" -- src dst ");
        assert_eq!(k, "COPY");
        assert_eq!(f, vec!["--from=a", "--chown=x y"]);
        assert_eq!(r, "src dst");
    }

    #[test]
    fn flags_stop_at_first_plain_word() {
        let (_, f, r) = split_command("RUN -x --y");
        assert!(f.is_empty());
        assert_eq!(r, "-x --y");
        let (_, f, r) = split_command("CMD --doit");
        assert_eq!(f, vec!["--doit"]);
        assert_eq!(r, "");
    }

    #[test]
    fn escapes_in_flags_are_processed() {
        let (_, f, _) = split_command(r"COPY --a=x\ y\ z b c");
        assert_eq!(f, vec!["--a=x y z"]);
    }
}
