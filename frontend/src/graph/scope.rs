//! What `$name` means at one point of a stage: ENV first, then the ARGs in scope.

use crate::shell::EnvGetter;

use super::ImageConfig;

/// The variables visible to an instruction.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// ARGs declared in the stage (or global ARGs for FROM); `None` = declared, no value.
    pub args: Vec<(String, Option<String>)>,
}

/// Looks variables up in an image config's env, then in the args.
pub struct Lookup<'a> {
    pub config: &'a ImageConfig,
    pub scope: &'a Scope,
}

impl EnvGetter for Lookup<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.config.env_get(name).or_else(|| self.scope.get(name))
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
