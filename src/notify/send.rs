//! One outgoing POST with a timeout and bounded retries: 5xx, 429 and network
//! errors are retried with exponential backoff, honouring `Retry-After`.
//!
//! Requests carry tokens in headers and, for webhooks, secrets in the URL:
//! nothing here ever puts a request's URL or headers into a message.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A JSON POST. Its `Debug` shows neither the URL nor the header values.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Request")
            .field("url", &"<redacted>")
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// How hard one request is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendPolicy {
    /// For each attempt, from connecting to the end of the answer.
    pub timeout: Duration,
    pub attempts: u32,
    /// The first wait between attempts; it doubles after each.
    pub backoff: Duration,
    /// The longest wait between attempts, `Retry-After` included.
    pub max_wait: Duration,
}

impl Default for SendPolicy {
    fn default() -> Self {
        SendPolicy {
            timeout: Duration::from_secs(10),
            attempts: 4,
            backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// How a request ended, after any retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Sent,
    /// A 4xx answer other than 429: retrying would not help.
    Refused(u16),
    /// Still failing (5xx, 429, timeout, network) after every attempt.
    Failed(String),
}

impl Outcome {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// What one attempt's answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Refused,
    /// Retry, after at least this long if the server said so.
    Retry(Option<Duration>),
}

/// Classifies an answer: 2xx done, 429 and 5xx retried (after `Retry-After`,
/// in seconds or as an HTTP date, when given), other codes refused.
pub fn verdict(
    status: u16,
    retry_after: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        429 | 500..=599 => Verdict::Retry(retry_after.and_then(|value| {
            let value = value.trim();
            match value.parse::<u64>() {
                Ok(seconds) => Some(Duration::from_secs(seconds)),
                Err(_) => chrono::DateTime::parse_from_rfc2822(value).ok().map(|at| {
                    (at.with_timezone(&chrono::Utc) - now)
                        .to_std()
                        .unwrap_or_default()
                }),
            }
        })),
        _ => Verdict::Refused,
    }
}

/// The wait before attempt `attempt + 1` (attempts count from 1).
pub fn wait_before_next(policy: &SendPolicy, attempt: u32, asked: Option<Duration>) -> Duration {
    let backoff = policy
        .backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    asked.unwrap_or(backoff).max(backoff).min(policy.max_wait)
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A shared HTTP(S) client for every commit status and notification.
#[derive(Clone)]
pub struct Sender {
    client: HttpsClient,
    pub policy: SendPolicy,
}

impl Sender {
    pub fn new(policy: SendPolicy) -> Sender {
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system TLS roots: HTTPS commit statuses and notifications will fail");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Sender { client, policy }
    }

    /// POSTs `request`, retrying as the policy allows.
    pub async fn send(&self, request: &Request) -> Outcome {
        let mut attempt = 1;
        loop {
            let (asked, problem) =
                match tokio::time::timeout(self.policy.timeout, self.once(request)).await {
                    Err(_) => (None, format!("no answer within {:?}", self.policy.timeout)),
                    Ok(Err(problem)) => (None, problem),
                    Ok(Ok((status, retry_after))) => {
                        match verdict(status, retry_after.as_deref(), chrono::Utc::now()) {
                            Verdict::Done => return Outcome::Sent,
                            Verdict::Refused => return Outcome::Refused(status),
                            Verdict::Retry(asked) => (asked, format!("HTTP {status}")),
                        }
                    }
                };
            if attempt >= self.policy.attempts {
                return Outcome::Failed(format!("{problem} after {attempt} attempts"));
            }
            tokio::time::sleep(wait_before_next(&self.policy, attempt, asked)).await;
            attempt += 1;
        }
    }

    /// One attempt: the status and `Retry-After`, or why there is no answer.
    async fn once(&self, request: &Request) -> Result<(u16, Option<String>), String> {
        let mut builder = http::Request::post(&request.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("stackd/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        // The builder's error would quote the URL or a header: describe it instead.
        let http_request = builder
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|_| "the URL or a header is not valid".to_string())?;
        let response = self
            .client
            .request(http_request)
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read the answer to the end so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok((status, retry_after))
    }
}

/// A network error without anything from the request: only its kind.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("cannot connect: {}", io.kind());
        }
        source = cause.source();
    }
    if error.is_connect() {
        "cannot connect".to_string()
    } else {
        "the connection failed".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(verdict(201, None, now), Verdict::Done);
        assert_eq!(verdict(401, None, now), Verdict::Refused);
        assert_eq!(verdict(422, None, now), Verdict::Refused);
        assert_eq!(verdict(500, None, now), Verdict::Retry(None));
        assert_eq!(
            verdict(429, Some("7"), now),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            verdict(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Verdict::Retry(Some(Duration::from_secs(30)))
        );
        // A date in the past: retry after the backoff alone; garbage is ignored.
        assert_eq!(
            verdict(503, Some("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Verdict::Retry(Some(Duration::ZERO))
        );
        assert_eq!(verdict(503, Some("soon"), now), Verdict::Retry(None));
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let policy = SendPolicy {
            backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
            ..SendPolicy::default()
        };
        assert_eq!(wait_before_next(&policy, 1, None), Duration::from_secs(1));
        assert_eq!(wait_before_next(&policy, 3, None), Duration::from_secs(4));
        assert_eq!(
            wait_before_next(&policy, 1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            wait_before_next(&policy, 1, Some(Duration::from_secs(3600))),
            Duration::from_secs(30)
        );
        assert_eq!(wait_before_next(&policy, 40, None), Duration::from_secs(30));
    }

    #[test]
    fn debug_shows_no_url_or_header_value() {
        let request = Request {
            url: "https://hooks.example.com/T000/SECRETPATH".into(),
            headers: vec![("Authorization".into(), "Bearer tok3n".into())],
            body: b"{}".to_vec(),
        };
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("SECRETPATH") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
