//! Shell-word expansion as BuildKit's lexer does it.
// TEMPORARY STUB until the shell branch merges; never committed.
pub trait EnvGetter {
    fn get(&self, name: &str) -> Option<&str>;
}
impl EnvGetter for std::collections::BTreeMap<String, String> {
    fn get(&self, n: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, n).map(|s| s.as_str())
    }
}
#[derive(Debug)]
pub struct ShellError;
impl std::fmt::Display for ShellError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "stub")
    }
}
pub struct Lexer {
    pub escape: char,
    pub raw_quotes: bool,
    pub raw_escapes: bool,
    pub skip_unset_env: bool,
}
impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
        }
    }
    pub fn process_words(&self, w: &str, _e: &dyn EnvGetter) -> Result<Vec<String>, ShellError> {
        Ok(w.split_whitespace().map(String::from).collect())
    }
}
