//! Cross-repository blob mounts. A registry links a blob from another repository only when the
//! request may read that repository. With basic auth or none, oci-client's `mount_blob` does;
//! with token auth (Docker Hub, GHCR, Harbor) the token must carry both scopes, and oci-client
//! asks for the target's alone — so for those rbuild asks the token server itself.

use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use rbuild_cache::digest::Digest;
use rbuild_cache::image::ImageName;

use super::client::{reference, Connection, Registry, TagOrDigest};
use super::error::{transport_cause, Failure};

/// What a registry's `/v2/` answers an anonymous client with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    /// No token server: basic auth or none.
    None,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Registry {
    /// Links `digest` from repository `source` into `name`'s repository; false when the
    /// registry declines (the caller uploads instead).
    pub(super) async fn mount_from(
        &self,
        connection: &Connection,
        name: &ImageName,
        source: &str,
        digest: &Digest,
    ) -> bool {
        let challenge = connection
            .challenge
            .get_or_init(|| challenge(&connection.http, &connection.base_url))
            .await;
        match challenge {
            Challenge::None => {
                let image = reference(name, TagOrDigest::Digest(digest));
                let from = Reference::with_tag(name.domain.clone(), source.into(), "latest".into());
                connection
                    .client
                    .mount_blob(&image, &from, &digest.to_string())
                    .await
                    .is_ok()
            }
            Challenge::Bearer { realm, service } => {
                let scopes = [
                    format!("repository:{}:pull,push", name.path),
                    format!("repository:{source}:pull"),
                ];
                let Ok(Some(token)) = token(connection, realm, service.as_deref(), &scopes).await
                else {
                    return false;
                };
                let url = format!(
                    "{}/v2/{}/blobs/uploads/?mount={digest}&from={source}",
                    connection.base_url, name.path
                );
                let answer = connection
                    .http
                    .post(&url)
                    .bearer_auth(token)
                    .header("Content-Length", "0")
                    .send()
                    .await;
                matches!(answer, Ok(response) if response.status() == reqwest::StatusCode::CREATED)
            }
        }
    }
}

/// Reads the registry's challenge with one anonymous `GET /v2/`.
pub(super) async fn challenge(http: &reqwest::Client, base_url: &str) -> Challenge {
    let Ok(response) = http.get(format!("{base_url}/v2/")).send().await else {
        return Challenge::None;
    };
    response
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(parse_bearer)
        .unwrap_or(Challenge::None)
}

/// A token for `scopes` from the token server, with the user's credentials when there are any.
/// `Ok(None)` when the server gives none (credentials refused); a failure a retry may cure
/// (unreachable, 5xx, 429) is an error.
pub(super) async fn token(
    connection: &Connection,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
) -> Result<Option<String>, Failure> {
    let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
    if let Some(service) = service {
        query.push(("service", service));
    }
    let mut request = connection.http.get(realm).query(&query);
    if let RegistryAuth::Basic(username, password) = &connection.auth {
        request = request.basic_auth(username, Some(password));
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Transport(transport_cause(&e)))?;
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Failure::Status(
            status.as_u16(),
            format!("token server {realm}"),
        ));
    }
    if !status.is_success() {
        return Ok(None);
    }
    let Ok(bytes) = response.bytes().await else {
        return Ok(None);
    };
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(["token", "access_token"]
        .iter()
        .find_map(|key| body.get(*key)?.as_str().map(str::to_string)))
}

/// `Bearer realm="…",service="…",scope="…"` (RFC 6750 parameters, values quoted or not).
pub(super) fn parse_bearer(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    for (key, value) in auth_params(params) {
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// `k="v, with commas",k2=v2` → pairs.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next().is_none() {
            return pairs;
        }
        let value: String = if chars.next_if_eq(&'"').is_some() {
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            value
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect()
        };
        pairs.push((key.trim().to_string(), value.trim().to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read_with_quoted_commas() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#;
        assert_eq!(
            parse_bearer(header),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_bearer("bearer realm=http://t:1/token"),
            Some(Challenge::Bearer {
                realm: "http://t:1/token".into(),
                service: None,
            })
        );
        assert_eq!(parse_bearer(r#"Basic realm="registry""#), None);
        assert_eq!(parse_bearer("Bearer service=x"), None);
    }
}
