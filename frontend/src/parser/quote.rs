//! Go's `strconv.Quote` and `fmt.Sprintf("%q", []string)`, which BuildKit's AST dump uses, so
//! our dump is byte-identical to its golden files.

/// Go's `strconv.Quote` (one implementation serves the parser and the shell's messages).
pub use crate::shell::go_quote;

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{0}\u{7f}"), r#""\t\n\x00\x7f""#);
        assert_eq!(go_quote("♥ 한국어"), "\"♥ 한국어\"");
        assert_eq!(go_quote("\u{a0}\u{200b}"), r#""\u00a0\u200b""#);
        assert_eq!(go_quote("\u{100000}"), r#""\U00100000""#);
    }

    #[test]
    fn quotes_lists_like_go_percent_q() {
        let flags = vec!["--a=b".to_string(), "--c".to_string()];
        assert_eq!(go_quote_list(&flags), r#"["--a=b" "--c"]"#);
    }
}
