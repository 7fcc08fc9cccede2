//! Push webhooks from GitHub, GitLab, Gitea/Forgejo or any HMAC signer: verify
//! the signature in constant time and trigger a poll of the matching repositories.

use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::redact::normalise_url;
use super::source::SourceHandle;

/// Who sent the webhook, which decides the signature header and payload shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`.
    GitHub,
    /// `X-Gitlab-Token: <secret>`.
    GitLab,
    /// `X-Gitea-Signature` (or `X-Forgejo-Signature`): `<hex HMAC-SHA256>`.
    Gitea,
    /// `X-Signature-256: sha256=<hex HMAC-SHA256>`; triggers every repository whose secret verifies.
    Generic,
}

impl Provider {
    /// Parses a path segment such as `github` (for mounting `/webhook/{provider}`).
    pub fn from_name(name: &str) -> Option<Provider> {
        match name.to_ascii_lowercase().as_str() {
            "github" => Some(Provider::GitHub),
            "gitlab" => Some(Provider::GitLab),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            "generic" => Some(Provider::Generic),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("malformed {0} header")]
    MalformedSignature(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("payload is not JSON with a repository URL: {0}")]
    BadPayload(String),
    #[error("no configured repository matches the payload")]
    NoMatchingRepository,
    #[error("no webhook secret is configured for the matching repositories")]
    NoSecret,
}

impl WebhookError {
    pub fn label(&self) -> &'static str {
        match self {
            WebhookError::MissingSignature(_) => "missing_signature",
            WebhookError::MalformedSignature(_) => "malformed_signature",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::BadPayload(_) => "bad_payload",
            WebhookError::NoMatchingRepository => "no_matching_repository",
            WebhookError::NoSecret => "no_secret",
        }
    }

    /// The HTTP status the webhook endpoint answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::MissingSignature(_)
            | WebhookError::MalformedSignature(_)
            | WebhookError::BadSignature
            | WebhookError::NoSecret => StatusCode::UNAUTHORIZED,
            WebhookError::BadPayload(_) => StatusCode::BAD_REQUEST,
            WebhookError::NoMatchingRepository => StatusCode::NOT_FOUND,
        }
    }
}

/// Checks the request's signature against `secret`, in constant time.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .ok_or(WebhookError::MissingSignature(name))?
            .to_str()
            .map(str::trim)
            .map_err(|_| WebhookError::MalformedSignature(name))
    };
    match provider {
        Provider::GitLab => {
            let token = header("x-gitlab-token")?;
            if bool::from(token.as_bytes().ct_eq(secret)) {
                Ok(())
            } else {
                Err(WebhookError::BadSignature)
            }
        }
        Provider::GitHub | Provider::Generic => {
            let name = if provider == Provider::GitHub {
                "x-hub-signature-256"
            } else {
                "x-signature-256"
            };
            let hex_sig = header(name)?
                .strip_prefix("sha256=")
                .ok_or(WebhookError::MalformedSignature(name))?;
            check_hmac(name, hex_sig, body, secret)
        }
        Provider::Gitea => {
            let name = if headers.contains_key("x-gitea-signature") {
                "x-gitea-signature"
            } else if headers.contains_key("x-forgejo-signature") {
                "x-forgejo-signature"
            } else {
                return Err(WebhookError::MissingSignature("x-gitea-signature"));
            };
            check_hmac(name, header(name)?, body, secret)
        }
    }
}

fn check_hmac(
    name: &'static str,
    hex_sig: &str,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let expected = hex::decode(hex_sig).map_err(|_| WebhookError::MalformedSignature(name))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
}

/// The clone URLs a payload names.
pub fn payload_urls(provider: Provider, body: &[u8]) -> Result<Vec<String>, WebhookError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(e.to_string()))?;
    let (object, fields): (&str, &[&str]) = match provider {
        Provider::GitLab => ("project", &["git_http_url", "git_ssh_url", "web_url"]),
        _ => ("repository", &["clone_url", "ssh_url", "html_url"]),
    };
    let urls: Vec<String> = fields
        .iter()
        .filter_map(|f| json.get(object)?.get(*f)?.as_str())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(WebhookError::BadPayload(format!(
            "no {object}.{} field",
            fields.join("|")
        )));
    }
    Ok(urls)
}

/// What the HTTP layer answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookOutcome {
    pub status: StatusCode,
    /// A short, secret-free explanation for the response body.
    pub message: String,
    /// Repositories whose poll was triggered.
    pub triggered: Vec<String>,
}

/// Verifies a webhook and triggers the matching repositories. Secrets are read
/// from each repository's `webhook_secret_file` (a trailing newline is ignored).
pub fn handle(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    source: &SourceHandle,
) -> WebhookOutcome {
    match matching_repositories(provider, body, source) {
        Err(e) => refuse(&e),
        Ok(candidates) => {
            let mut triggered = Vec::new();
            let mut first_error = None;
            let mut any_secret = false;
            for (name, secret_file) in &candidates {
                let Some(secret) = secret_file.as_ref().and_then(|p| read_secret(p)) else {
                    continue;
                };
                any_secret = true;
                match verify(provider, headers, body, &secret) {
                    Ok(()) => {
                        source.trigger(name);
                        triggered.push(name.clone());
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if !triggered.is_empty() {
                return WebhookOutcome {
                    status: StatusCode::ACCEPTED,
                    message: format!("poll triggered for {}", triggered.join(", ")),
                    triggered,
                };
            }
            for (name, _) in &candidates {
                source.record_rejected_webhook(name);
            }
            let error = match first_error {
                Some(e) => e,
                None if !any_secret => WebhookError::NoSecret,
                None => WebhookError::BadSignature,
            };
            tracing::warn!(provider = ?provider, reason = error.label(), "webhook rejected");
            refuse(&error)
        }
    }
}

fn refuse(error: &WebhookError) -> WebhookOutcome {
    WebhookOutcome {
        status: error.status(),
        message: error.to_string(),
        triggered: Vec::new(),
    }
}

type Candidate = (String, Option<std::path::PathBuf>);

/// Repositories the payload is about (by clone URL), or every repository for the generic provider.
fn matching_repositories(
    provider: Provider,
    body: &[u8],
    source: &SourceHandle,
) -> Result<Vec<Candidate>, WebhookError> {
    let all = source.settings().map(|s| {
        (
            s.name.clone(),
            s.webhook_secret_file.clone(),
            normalise_url(&s.url),
        )
    });
    if provider == Provider::Generic {
        return Ok(all.map(|(n, f, _)| (n, f)).collect());
    }
    let wanted: Vec<String> = payload_urls(provider, body)?
        .iter()
        .map(|u| normalise_url(u))
        .collect();
    let matched: Vec<Candidate> = all
        .filter(|(_, _, url)| wanted.contains(url))
        .map(|(n, f, _)| (n, f))
        .collect();
    if matched.is_empty() {
        return Err(WebhookError::NoMatchingRepository);
    }
    Ok(matched)
}

fn read_secret(path: &std::path::Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(mut bytes) => {
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            Some(bytes)
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e.kind(), "cannot read webhook secret");
            None
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub and the generic provider send it.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// Hex HMAC-SHA256 of `body` under `secret`, as Gitea sends it.
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const BODY: &[u8] = br#"{"repository":{"clone_url":"https://git.example.com/o/r.git"}}"#;
    const SECRET: &[u8] = b"s3cret";

    #[test]
    fn github_and_generic_signatures() {
        let good = sign_sha256(SECRET, BODY);
        for (provider, name) in [
            (Provider::GitHub, "x-hub-signature-256"),
            (Provider::Generic, "x-signature-256"),
        ] {
            assert_eq!(
                verify(provider, &headers(&[(name, &good)]), BODY, SECRET),
                Ok(())
            );
            let bad = sign_sha256(b"other", BODY);
            assert_eq!(
                verify(provider, &headers(&[(name, &bad)]), BODY, SECRET),
                Err(WebhookError::BadSignature)
            );
            assert_eq!(
                verify(provider, &headers(&[(name, &good)]), b"tampered", SECRET),
                Err(WebhookError::BadSignature)
            );
            assert_eq!(
                verify(provider, &HeaderMap::new(), BODY, SECRET),
                Err(WebhookError::MissingSignature(name))
            );
            assert_eq!(
                verify(provider, &headers(&[(name, "md5=00")]), BODY, SECRET),
                Err(WebhookError::MalformedSignature(name))
            );
        }
    }

    #[test]
    fn gitea_and_gitlab_signatures() {
        let sig = hmac_hex(SECRET, BODY);
        assert_eq!(
            verify(
                Provider::Gitea,
                &headers(&[("x-gitea-signature", &sig)]),
                BODY,
                SECRET
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                Provider::Gitea,
                &headers(&[("x-forgejo-signature", &sig)]),
                BODY,
                SECRET
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                Provider::Gitea,
                &headers(&[("x-gitea-signature", "zz")]),
                BODY,
                SECRET
            ),
            Err(WebhookError::MalformedSignature("x-gitea-signature"))
        );
        assert_eq!(
            verify(
                Provider::GitLab,
                &headers(&[("x-gitlab-token", "s3cret")]),
                BODY,
                SECRET
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                Provider::GitLab,
                &headers(&[("x-gitlab-token", "s3cre")]),
                BODY,
                SECRET
            ),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(Provider::GitLab, &HeaderMap::new(), BODY, SECRET)
                .unwrap_err()
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn payload_urls_per_provider() {
        assert_eq!(
            payload_urls(Provider::GitHub, BODY).unwrap(),
            vec!["https://git.example.com/o/r.git"]
        );
        let gl =
            br#"{"project":{"git_http_url":"https://gl/o/r.git","git_ssh_url":"git@gl:o/r.git"}}"#;
        assert_eq!(payload_urls(Provider::GitLab, gl).unwrap().len(), 2);
        assert!(matches!(
            payload_urls(Provider::GitHub, b"not json"),
            Err(WebhookError::BadPayload(_))
        ));
        assert_eq!(
            payload_urls(Provider::GitHub, b"{}").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
