//! Unit tests for what the conformance data does not cover: the backtick escape, the options,
//! error messages and inputs that must not panic.

use super::*;

fn env() -> Vec<(String, String)> {
    [("PWD", "/home"), ("EMPTY", ""), ("SP", "a  b")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word(lex: &Lexer, input: &str) -> Result<String, ShellError> {
    lex.process_word(input, &env())
}

#[test]
fn backtick_escape() {
    let lex = Lexer::new('`');
    assert_eq!(word(&lex, "a`$PWD").unwrap(), "a$PWD");
    assert_eq!(word(&lex, r"C:\dir\$PWD").unwrap(), r"C:\dir\/home");
    // Inside double quotes the escape only escapes `"`, `$` and itself.
    assert_eq!(word(&lex, "\"`\"x`\\`t\"").unwrap(), "\"x`\\`t");
    assert_eq!(word(&lex, "end`").unwrap(), "end");
}

#[test]
fn raw_quotes_keep_quotes() {
    let lex = Lexer {
        raw_quotes: true,
        ..Lexer::new('\\')
    };
    assert_eq!(word(&lex, r#"'a b' "$PWD""#).unwrap(), r#"'a b' "/home""#);
}

#[test]
fn raw_escapes_keep_escapes() {
    let lex = Lexer {
        raw_escapes: true,
        ..Lexer::new('\\')
    };
    assert_eq!(word(&lex, r"a\ b\$PWD").unwrap(), r"a\ b\$PWD");
    // Inside double quotes an escape before an ordinary character is doubled (BuildKit).
    assert_eq!(word(&lex, r#""\t\$""#).unwrap(), r#"\\t\$"#);
    // The words of ${v:-w} are never raw, whatever the option says.
    assert_eq!(word(&lex, r"${X:-\$PWD}").unwrap(), "$PWD");
}

#[test]
fn skip_unset_env_leaves_references() {
    let lex = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    assert_eq!(word(&lex, "$X ${X} $PWD").unwrap(), "$X ${X} /home");
    assert_eq!(
        word(&lex, "${X:-$PWD} ${X##*.}").unwrap(),
        "${X:-/home} ${X##*.}"
    );
    assert_eq!(word(&lex, "${X//a/b}").unwrap(), "${X/a/b}");
    assert_eq!(word(&lex, "${EMPTY:-d}").unwrap(), "d");
}

#[test]
fn skip_process_quotes_treats_quotes_as_text() {
    let lex = Lexer {
        skip_process_quotes: true,
        ..Lexer::new('\\')
    };
    assert_eq!(word(&lex, "'$PWD' \"x").unwrap(), "'/home' \"x");
    let words = lex.process_words("'a b'", &env()).unwrap();
    assert_eq!(words, ["'a", "b'"]);
}

#[test]
fn error_messages_match_buildkit() {
    let lex = Lexer::new('\\');
    let cause = |input: &str| word(&lex, input).unwrap_err().cause().to_string();
    assert_eq!(
        cause("${PWD:=x}"),
        "unsupported modifier (:=) in substitution"
    );
    assert_eq!(
        cause("${PWD=x}"),
        "unsupported modifier (=) in substitution"
    );
    assert_eq!(
        cause("${PWD:#x}"),
        "unsupported modifier (:#) in substitution"
    );
    assert_eq!(cause("${X?}"), "X: is not allowed to be unset");
    assert_eq!(cause("${EMPTY:?}"), "EMPTY: is not allowed to be empty");
    assert_eq!(cause("${X:?set it}"), "X: set it");
    assert_eq!(
        cause("${X"),
        "unsupported modifier (\u{fffd}) in substitution"
    );
    assert_eq!(cause("${X:-a"), "syntax error: missing '}'");
    assert_eq!(cause("${X/a"), "syntax error: missing '/' in ${}");
    assert_eq!(
        cause("'a"),
        "unexpected end of statement while looking for matching single-quote"
    );
    let full = word(&lex, "${}").unwrap_err().to_string();
    assert_eq!(
        full,
        "failed to process \"${}\": syntax error: bad substitution"
    );
    let pattern = word(&lex, r"${PWD#\x}").unwrap_err();
    assert_eq!(
        pattern.to_string(),
        "failed to process \"${PWD#\\\\x}\": invalid pattern (\\x) in substitution: invalid escape '\\x'"
    );
}

#[test]
fn words_split_after_expansion() {
    let lex = Lexer::new('\\');
    let words = lex.process_words(r#"x$SP "$SP" a\ b ''"#, &env()).unwrap();
    assert_eq!(words, ["xa", "b", "a  b", "a b"]);
}

#[test]
fn leading_bom_is_dropped_like_go_text_scanner() {
    let lex = Lexer::new('\\');
    assert_eq!(word(&lex, "\u{feff}$PWD\u{feff}").unwrap(), "/home\u{feff}");
}

#[test]
fn unicode_names_stop_where_go_stops() {
    let lex = Lexer::new('\\');
    let env: Vec<(String, String)> = vec![("é".into(), "E".into()), ("x".into(), "X".into())];
    assert_eq!(lex.process_word("$é-$x²", &env).unwrap(), "E-X²");
}

#[test]
fn never_panics_on_awkward_input() {
    let lex = Lexer::new('\\');
    let samples = [
        "",
        "$",
        "${",
        "${#",
        "${a#",
        "${a%%",
        "${a/",
        "${a//",
        "${a/\\",
        "\\",
        "\"\\",
        "'",
        "${a:",
        "${a:-${",
        "${a#\\}",
        "${PWD%\\}",
        "${PWD/\u{0}/\u{0}}",
        "é${PWD%é}",
        "${PWD//?/$}",
        "${PWD//*/$0$1${0}$}",
    ];
    for s in samples {
        let _ = lex.process_word(s, &env());
        let _ = lex.process_words(s, &env());
        let _ = Lexer {
            escape: '$',
            ..lex.clone()
        }
        .process_word(s, &env());
        let _ = Lexer {
            escape: '"',
            ..lex.clone()
        }
        .process_word(s, &env());
    }
    // `$0` would expand (to empty) in the lexer; quoted, it reaches Go's template expansion.
    assert_eq!(word(&lex, "${PWD//?/'$0$0'}").unwrap(), "//hhoommee");
    assert_eq!(word(&lex, "${PWD//?/$0}").unwrap(), "");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let lex = Lexer::new('\\');
    let depth = dollar::MAX_NESTING;
    let ok = format!("{}x{}", "${a:-".repeat(depth), "}".repeat(depth));
    assert_eq!(word(&lex, &ok).unwrap(), "x");
    let deep = format!("{}x{}", "${a:-".repeat(20_000), "}".repeat(20_000));
    let err = word(&lex, &deep).unwrap_err();
    assert_eq!(err.cause(), &ShellError::TooDeep(depth));
}

proptest::proptest! {
    #[test]
    fn never_panics(input in "[$\\{}:#%/'\"+?*=a0 é\u{feff}-]{0,16}", escape in "[\\`$]") {
        let lex = Lexer { escape: escape.chars().next().unwrap_or('\\'), ..Lexer::new('\\') };
        let _ = lex.process_word_with_matches(&input, &env());
        let _ = Lexer { raw_escapes: true, skip_unset_env: true, ..lex }.process_words(&input, &env());
    }
}
