//! Registries: pulling base images and pushing results, through oci-client, with Docker's
//! credentials, plain HTTP for loopback and listed hosts, and retries.

mod artifact;
pub mod auth;
mod client;
mod credhelper;
mod error;
mod head;
mod mount;
mod pull;
mod push;

pub use client::{Registry, RegistryOptions};
pub use error::{Failure, RegistryError};
