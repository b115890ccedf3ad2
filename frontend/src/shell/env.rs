//! Where the lexer looks variables up.

use std::collections::{BTreeMap, HashMap};

/// A source of variable values. Lookups are case-sensitive, as on Linux (BuildKit only folds
/// case on Windows); implement the trait yourself for another rule.
pub trait EnvGetter {
    /// The value of `name`, or `None` when it is unset. A set but empty variable is `Some("")`,
    /// which `${v-w}` and `${v:-w}` tell apart.
    fn get(&self, name: &str) -> Option<&str>;
}

/// Lets a borrowed getter stand in for `&dyn EnvGetter`; in particular a `&[(K, V)]` slice,
/// which cannot be turned into a trait object itself because it is unsized.
impl<T: EnvGetter + ?Sized> EnvGetter for &T {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

impl EnvGetter for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> EnvGetter for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// An ordered `KEY=value` list as Dockerfile `ENV`/`ARG` build it: a later entry overrides an
/// earlier one with the same key, so the last one wins.
impl EnvGetter for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl EnvGetter for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        EnvGetter::get(self.as_slice(), name)
    }
}

impl EnvGetter for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_entry_wins_in_lists() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("A".to_string(), "2".to_string()),
        ];
        assert_eq!(EnvGetter::get(&env, "A"), Some("2"));
        assert_eq!(EnvGetter::get(&env, "a"), None);
        let pairs: &[(&str, &str)] = &[("E", ""), ("E", "x")];
        assert_eq!(EnvGetter::get(pairs, "E"), Some("x"));
    }
}
