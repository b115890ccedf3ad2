//! HEAD requests rbuild makes itself — is a blob there, which digest does a tag name — rather
//! than through oci-client, which drops a response's headers: a 429's `Retry-After` is the
//! registry saying how long to wait, and rbuild's retry loop waits that long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_client::secrets::RegistryAuth;
use rbuild_cache::digest::Digest;
use rbuild_cache::image::ImageName;
use reqwest::{header, StatusCode};

use super::client::Connection;
use super::error::{transport_cause, Failure};
use super::mount::{parse_bearer, token, Challenge};

/// Whether `name`'s repository holds `digest`; `access` is what the token must allow
/// (`pull`, or `pull,push` before an upload, as Docker's pusher asks).
pub(super) async fn blob_exists(
    connection: &Connection,
    name: &ImageName,
    digest: &Digest,
    access: &str,
) -> Result<bool, Failure> {
    let url = format!("{}/v2/{}/blobs/{digest}", connection.base_url, name.path);
    let scope = format!("repository:{}:{access}", name.path);
    let response = head(connection, &url, &scope, None).await?;
    match response.status() {
        status if status.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        status => Err(refused(status)),
    }
}

/// The digest `tag` names now, from the manifest's `Docker-Content-Digest`; `None` when the
/// registry does not send it (the caller then asks oci-client, which fetches the manifest).
pub(super) async fn tag_digest(
    connection: &Connection,
    name: &ImageName,
    tag: &str,
    accept: &str,
) -> Result<Option<Digest>, Failure> {
    let url = format!("{}/v2/{}/manifests/{tag}", connection.base_url, name.path);
    let scope = format!("repository:{}:pull", name.path);
    let response = head(connection, &url, &scope, Some(accept)).await?;
    let status = response.status();
    // Refusals and server trouble are what the GET would meet too; anything else (405 for a
    // HEAD, a 404 whose message only a GET's body carries) is left to oci-client's GET.
    let refusal = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status);
    if status.is_server_error() || refusal {
        return Err(refused(status));
    }
    if !status.is_success() {
        return Ok(None);
    }
    Ok(response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|value| value.to_str().ok()?.parse::<Digest>().ok()))
}

/// A HEAD with the user's credentials: basic auth, or a bearer token for `scope` (fetched when
/// the registry's 401 asks for one, then kept for the connection). A 429 becomes
/// [`Failure::RateLimited`] with its `Retry-After`.
async fn head(
    connection: &Connection,
    url: &str,
    scope: &str,
    accept: Option<&str>,
) -> Result<reqwest::Response, Failure> {
    let mut asked_for_token = false;
    loop {
        let mut request = connection.http.head(url);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let cached = connection.tokens.lock().unwrap().get(scope).cloned();
        request = match (cached, &connection.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Transport(transport_cause(&e)))?;
        match response.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(Failure::RateLimited {
                    message: String::new(),
                    retry_after: retry_after(response.headers(), SystemTime::now()),
                })
            }
            StatusCode::UNAUTHORIZED if !asked_for_token => {
                asked_for_token = true;
                let Some(Challenge::Bearer { realm, service }) = bearer_challenge(&response) else {
                    return Ok(response);
                };
                let scopes = [scope.to_string()];
                let Some(token) = token(connection, &realm, service.as_deref(), &scopes).await?
                else {
                    return Ok(response);
                };
                connection
                    .tokens
                    .lock()
                    .unwrap()
                    .insert(scope.to_string(), token);
            }
            _ => return Ok(response),
        }
    }
}

fn bearer_challenge(response: &reqwest::Response) -> Option<Challenge> {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(parse_bearer)
}

fn refused(status: StatusCode) -> Failure {
    Failure::Status(status.as_u16(), String::new())
}

/// `Retry-After`: delay-seconds, or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`) counted
/// from `now`.
fn retry_after(headers: &header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let secs = u64::try_from(crate::timestamp::parse_http_date(text)?).ok()?;
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> header::HeaderMap {
        let mut map = header::HeaderMap::new();
        map.insert(header::RETRY_AFTER, value.parse().unwrap());
        map
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 2015-10-21 07:27:50 UTC
        assert_eq!(
            retry_after(&headers("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(10))
        );
        // A date already past: no wait.
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&header::HeaderMap::new(), now), None);
    }
}
