//! `rbuild push`, `rbuild pull`, `rbuild login` and `rbuild logout`.

use std::io::Read;

use anyhow::{bail, Context};
use rbuild_cache::image::{Descriptor, ImageName};
use rbuild_frontend::platform::Platform;

use super::find;
use crate::cli::{LoginArgs, LogoutArgs, PullArgs, PushArgs};
use crate::registry::auth::{Credentials, DockerConfig};
use crate::registry::Registry;
use crate::state::State;

/// Docker Hub, where `docker login` goes without a server.
const DEFAULT_REGISTRY: &str = "docker.io";

pub fn push(state: &State, args: &PushArgs) -> anyhow::Result<()> {
    let registry = Registry::new(args.registry.options(args.max_concurrent_uploads))?;
    for text in &args.names {
        let (full, record) = find(state, text)?;
        let name: ImageName = full
            .parse()
            .with_context(|| format!("{text} has no registry name to push to"))?;
        let top = Descriptor::new(record.media_type, record.digest, record.size);
        // The store may hold layers uncompressed (as builds commit them); a registry gets gzip.
        let top = crate::export::for_push(state, &top)?;
        registry.push(state, &top, &[name])?;
    }
    Ok(())
}

pub fn pull(state: &State, args: &PullArgs) -> anyhow::Result<()> {
    let registry = Registry::new(args.registry.options(1))?;
    let platforms: Vec<Platform> = crate::multiplatform::target_platforms(&args.platforms)?
        .into_iter()
        .map(|p| p.unwrap_or_else(Platform::host))
        .collect();
    for text in &args.names {
        let name: ImageName = text.parse()?;
        // One resolve for all platforms: they all come from the same index.
        let digest = registry.resolve(&name)?;
        for platform in &platforms {
            let top = registry.pull_resolved(state, &name, digest, platform)?;
            println!("{}: {}", name.familiar(), top.digest);
        }
    }
    Ok(())
}

pub fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let host = server_host(args.server.as_deref().unwrap_or(DEFAULT_REGISTRY));
    let Some(username) = args.username.clone() else {
        bail!("login to {host}: give a username with -u");
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(password), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            password.clone()
        }
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("login to {host}: give the password with --password-stdin or -p"),
    };
    if password.is_empty() {
        bail!("login to {host}: the password is empty");
    }
    let credentials = Credentials::Basic { username, password };
    Registry::new(args.registry.options(1))?.check_login(&host, &credentials)?;
    let mut config = DockerConfig::load()?;
    config.store(&host, &credentials)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: &LogoutArgs) -> anyhow::Result<()> {
    let host = server_host(args.server.as_deref().unwrap_or(DEFAULT_REGISTRY));
    let mut config = DockerConfig::load()?;
    if config.erase(&host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(())
}

/// The registry host of a server as users write it: `https://ghcr.io/`, `localhost:5000`,
/// Docker Hub's `https://index.docker.io/v1/`.
fn server_host(server: &str) -> String {
    let without_scheme = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DEFAULT_REGISTRY.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_reduce_to_hosts() {
        assert_eq!(server_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(server_host("localhost:5000"), "localhost:5000");
        assert_eq!(server_host("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(server_host("ghcr.io"), "ghcr.io");
    }
}
