//! Which ARGs a stage (or the global scope) has declared, and with what values; and the
//! ordered variable list that `$name` expands against.

use crate::shell::EnvGetter;

/// The variables visible to an instruction.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// ARGs declared in the stage (or global ARGs for FROM); `None` = declared, no value.
    pub args: Vec<(String, Option<String>)>,
}

/// Sets `key` in an ordered variable list, in place if present.
pub fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

impl Scope {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn declared(&self, name: &str) -> bool {
        self.args.iter().any(|(k, _)| k == name)
    }

    /// Declares (or re-declares) an arg.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        self.args.retain(|(k, _)| k != name);
        self.args.push((name.to_string(), value));
    }
}

impl EnvGetter for Scope {
    fn get(&self, name: &str) -> Option<&str> {
        Scope::get(self, name)
    }
}
