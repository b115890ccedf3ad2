//! TEMPORARY placeholder until the auth branch merges.
use std::path::{Path, PathBuf};
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    IdentityToken { username: String, token: String },
}
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth: {0}")]
    X(String),
}
pub struct DockerConfig {
    path: PathBuf,
}
impl DockerConfig {
    pub fn load() -> Result<DockerConfig, AuthError> {
        Ok(DockerConfig {
            path: PathBuf::new(),
        })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn credentials(&self, _registry: &str) -> Result<Option<Credentials>, AuthError> {
        Ok(None)
    }
    pub fn store(&mut self, _registry: &str, _c: &Credentials) -> Result<(), AuthError> {
        Err(AuthError::X("placeholder".into()))
    }
    pub fn erase(&mut self, _registry: &str) -> Result<bool, AuthError> {
        Ok(false)
    }
}
