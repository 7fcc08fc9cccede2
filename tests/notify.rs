//! Commit statuses and notifications against a local HTTP server (issue 17):
//! each forge's request exactly as documented, the signature, de-duplication,
//! reminders, and endpoints that hang, fail or refuse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use stackd::metrics::Metrics;
use stackd::notify::forge::{Forge, Provider};
use stackd::notify::send::SendPolicy;
use stackd::notify::webhook::{Channel, ChannelKind, Event};
use stackd::notify::{CommitState, Observation, Observer, Settings, spawn};

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// How the server answers.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers.
    Hang,
    /// 429 with `Retry-After: 1` the first time, then 201.
    RateLimitedOnce,
}

#[derive(Clone)]
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(answer: Answer) -> Server {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let recorded = recorded.clone();
                async move {
                    let count = {
                        let mut recorded = recorded.lock().unwrap();
                        recorded.push(Seen {
                            method,
                            path: uri.path().to_string(),
                            headers,
                            body: body.to_vec(),
                            at: Instant::now(),
                        });
                        recorded.len()
                    };
                    match answer {
                        Answer::Status(code) => {
                            (StatusCode::from_u16(code).unwrap(), HeaderMap::new())
                        }
                        Answer::Hang => std::future::pending().await,
                        Answer::RateLimitedOnce if count == 1 => {
                            let mut headers = HeaderMap::new();
                            headers.insert("retry-after", "1".parse().unwrap());
                            (StatusCode::TOO_MANY_REQUESTS, headers)
                        }
                        Answer::RateLimitedOnce => (StatusCode::CREATED, HeaderMap::new()),
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize, seconds: u64) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let seen = self.seen();
            if seen.len() >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} requests within {seconds}s: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    path
}

fn quick() -> SendPolicy {
    SendPolicy {
        timeout: Duration::from_millis(300),
        attempts: 3,
        backoff: Duration::from_millis(20),
        max_wait: Duration::from_millis(200),
    }
}

/// Commit statuses for `acme/shop` on GitHub, posted to a forge answering
/// `answer` with the token `token` (its file in the returned folder).
async fn github(
    answer: Answer,
    token: &str,
    policy: SendPolicy,
) -> (tempfile::TempDir, Server, Metrics, Observer) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(answer).await;
    let token = secret_file(dir.path(), "token", token);
    let metrics = Metrics::new();
    let settings = forge_settings(Provider::GitHub, &server.url, "acme/shop", &token);
    let observer = spawn(settings, metrics.clone(), policy);
    (dir, server, metrics, observer)
}

fn observation(state: CommitState, revision: &str) -> Observation {
    Observation {
        repository: "apps".into(),
        namespace: "shop".into(),
        stack: "web".into(),
        revision: revision.into(),
        state,
        reason: match state {
            CommitState::Failure => "RenderFailed".into(),
            CommitState::Success => "Available".into(),
            CommitState::Pending => "Progressing".into(),
        },
        message: "web/compose.yaml:3:12: invalid YAML: unclosed bracket '['".into(),
        at: chrono::Utc::now(),
    }
}

fn forge_settings(provider: Provider, api_url: &str, repository: &str, token: &Path) -> Settings {
    Settings {
        external_url: Some("https://stackd.example.com".into()),
        forges: BTreeMap::from([(
            "apps".to_string(),
            Forge {
                provider,
                api_url: api_url.into(),
                repository: repository.into(),
                token_file: token.to_path_buf(),
            },
        )]),
        channels: Vec::new(),
    }
}

fn count(metrics: &Metrics, family: &str, target: &str, result: &str) -> u64 {
    match family {
        "status" => metrics
            .commit_status_total
            .with_label_values(&[target, result])
            .get(),
        _ => metrics
            .notifications_total
            .with_label_values(&[target, result])
            .get(),
    }
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

#[tokio::test]
async fn github_gets_one_status_per_state_change() {
    let (_dir, server, metrics, observer) = github(Answer::Status(201), "ghp_test", quick()).await;
    observer.observe(observation(CommitState::Pending, SHA));
    // Every poll reports again; only changes are posted.
    observer.observe(observation(CommitState::Pending, SHA));
    observer.observe(observation(CommitState::Success, SHA));
    observer.observe(observation(CommitState::Success, SHA));
    let seen = server.wait_for(2, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.seen().len(), 2, "{:?}", server.seen());
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, format!("/repos/acme/shop/statuses/{SHA}"));
        assert_eq!(request.header("authorization"), "Bearer ghp_test");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("accept"), "application/vnd.github+json");
    }
    assert_eq!(
        seen[0].json(),
        json!({"state": "pending", "target_url": "https://stackd.example.com/stacks/shop/web",
               "description": "web/compose.yaml:3:12: invalid YAML: unclosed bracket '['",
               "context": "stackd/shop/web"})
    );
    assert_eq!(seen[1].json()["state"], "success");
    assert_eq!(count(&metrics, "status", "apps", "sent"), 2);
}

#[tokio::test]
async fn gitlab_and_gitea_get_their_own_requests() {
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(dir.path(), "token", "glpat-test");

    let gitlab = Server::start(Answer::Status(201)).await;
    let observer = spawn(
        forge_settings(Provider::GitLab, &gitlab.url, "group/sub/app", &token),
        Metrics::new(),
        quick(),
    );
    observer.observe(observation(CommitState::Pending, SHA));
    observer.observe(observation(CommitState::Failure, SHA));
    let seen = gitlab.wait_for(2, 10).await;
    assert_eq!(
        seen[0].path,
        format!("/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}")
    );
    assert_eq!(seen[0].header("private-token"), "glpat-test");
    assert_eq!(seen[0].header("authorization"), "");
    assert_eq!(seen[0].json()["state"], "running");
    assert_eq!(seen[0].json()["name"], "stackd/shop/web");
    assert_eq!(
        seen[1].json(),
        json!({"state": "failed", "target_url": "https://stackd.example.com/stacks/shop/web",
               "description": "RenderFailed: web/compose.yaml:3:12: invalid YAML: unclosed bracket '['",
               "name": "stackd/shop/web"})
    );

    let gitea = Server::start(Answer::Status(201)).await;
    let observer = spawn(
        forge_settings(Provider::Gitea, &gitea.url, "team/apps", &token),
        Metrics::new(),
        quick(),
    );
    observer.observe(observation(CommitState::Failure, SHA));
    let seen = gitea.wait_for(1, 10).await;
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(
        seen[0].path,
        format!("/api/v1/repos/team/apps/statuses/{SHA}")
    );
    assert_eq!(seen[0].header("authorization"), "token glpat-test");
    assert_eq!(seen[0].json()["state"], "failure");
    assert_eq!(seen[0].json()["context"], "stackd/shop/web");
}

#[tokio::test]
async fn server_errors_are_retried_then_given_up_and_counted() {
    let (_dir, server, metrics, observer) = github(Answer::Status(500), "ghp_test", quick()).await;
    observer.observe(observation(CommitState::Failure, SHA));
    server.wait_for(3, 10).await;
    wait_until(10, || count(&metrics, "status", "apps", "failed") == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.seen().len(), 3, "three attempts, no more");
}

#[tokio::test]
async fn a_refused_token_is_counted_and_not_retried() {
    let (_dir, server, metrics, observer) = github(Answer::Status(401), "ghp_wrong", quick()).await;
    observer.observe(observation(CommitState::Failure, SHA));
    wait_until(10, || count(&metrics, "status", "apps", "refused") == 1).await;
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_hanging_forge_times_out_and_never_delays_the_caller() {
    let (_dir, _server, metrics, observer) = github(Answer::Hang, "ghp_test", quick()).await;
    // Far more than the queue holds, from many commits: observing never waits.
    let started = Instant::now();
    for i in 0..2000 {
        observer.observe(observation(CommitState::Pending, &format!("{i:040x}")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "observing took {:?}",
        started.elapsed()
    );
    wait_until(10, || count(&metrics, "status", "apps", "failed") >= 1).await;
    wait_until(10, || count(&metrics, "status", "apps", "dropped") > 0).await;
}

fn channel(
    name: &str,
    kind: ChannelKind,
    url: &Path,
    secret: Option<&Path>,
    every: Duration,
) -> Channel {
    Channel {
        name: name.into(),
        kind,
        url_file: url.to_path_buf(),
        secret_file: secret.map(Path::to_path_buf),
        events: Event::ALL.into_iter().collect(),
        stacks: glob::Pattern::new("*").unwrap(),
        repeat_interval: every,
    }
}

fn notify_settings(channels: Vec<Channel>) -> Settings {
    Settings {
        external_url: Some("https://stackd.example.com/".trim_end_matches('/').into()),
        forges: BTreeMap::new(),
        channels,
    }
}

#[tokio::test]
async fn webhooks_are_signed_deduplicated_and_repeated_while_failing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Answer::Status(204)).await;
    let url = secret_file(dir.path(), "url", &format!("{}/hooks/stackd", server.url));
    let secret = secret_file(dir.path(), "secret", "hmac-key");
    let metrics = Metrics::new();
    let observer = spawn(
        notify_settings(vec![channel(
            "ops",
            ChannelKind::Webhook,
            &url,
            Some(&secret),
            Duration::from_millis(400),
        )]),
        metrics.clone(),
        quick(),
    );
    observer.observe(observation(CommitState::Failure, SHA));
    observer.observe(observation(CommitState::Failure, SHA));
    let seen = server.wait_for(1, 10).await;
    let first = &seen[0];
    assert_eq!(first.path, "/hooks/stackd");
    assert_eq!(
        first.json(),
        json!({"event": "failure", "repository": "apps", "namespace": "shop", "stack": "web",
               "revision": SHA, "reason": "RenderFailed",
               "message": "web/compose.yaml:3:12: invalid YAML: unclosed bracket '['",
               "url": "https://stackd.example.com/stacks/shop/web"})
    );
    // The receiver's check: HMAC-SHA256 of the exact body under the shared secret.
    let expected = format!("sha256={}", hmac_sha256_hex(b"hmac-key", &first.body));
    assert_eq!(first.header("x-stackd-signature-256"), expected);
    // The duplicate was not sent; the reminder comes after the interval, not before.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(server.seen().len(), 1, "{:?}", server.seen());
    let seen = server.wait_for(2, 10).await;
    assert_eq!(seen[1].json()["event"], "failure");
    // Recovery ends the reminders.
    observer.observe(observation(CommitState::Success, "fedcba"));
    let seen = server.wait_for(3, 10).await;
    let events: Vec<Value> = seen.iter().map(|s| s.json()["event"].clone()).collect();
    assert!(events.contains(&json!("recovery")), "{events:?}");
    let settled = server.seen().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(server.seen().len(), settled, "reminders after recovery");
    assert!(count(&metrics, "notify", "ops", "sent") >= 3);
}

#[tokio::test]
async fn slack_gets_text_and_a_hanging_endpoint_delays_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Server::start(Answer::Status(200)).await;
    let stuck = Server::start(Answer::Hang).await;
    let slack_url = secret_file(
        dir.path(),
        "slack",
        &format!("{}/services/T0/B0/X", slack.url),
    );
    let stuck_url = secret_file(dir.path(), "stuck", &format!("{}/hook", stuck.url));
    let metrics = Metrics::new();
    let observer = spawn(
        notify_settings(vec![
            channel(
                "stuck",
                ChannelKind::Webhook,
                &stuck_url,
                None,
                Duration::from_secs(3600),
            ),
            channel(
                "chat",
                ChannelKind::Slack,
                &slack_url,
                None,
                Duration::from_secs(3600),
            ),
        ]),
        metrics.clone(),
        quick(),
    );
    let started = Instant::now();
    observer.observe(observation(CommitState::Failure, SHA));
    let seen = slack.wait_for(1, 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen[0].path, "/services/T0/B0/X");
    let text = seen[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("shop/web") && text.contains("failed") && text.contains("RenderFailed"),
        "{text}"
    );
    assert_eq!(seen[0].json().as_object().unwrap().len(), 1, "only text");
    wait_until(10, || count(&metrics, "notify", "stuck", "failed") == 1).await;
    assert_eq!(stuck.seen().len(), 3, "every attempt timed out");
}

#[tokio::test]
async fn an_unconfigured_observer_is_a_no_op() {
    Observer::default().observe(observation(CommitState::Failure, SHA));
}

async fn wait_until(seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {seconds}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn a_reload_switches_targets() {
    let dir = tempfile::tempdir().unwrap();
    let before = Server::start(Answer::Status(200)).await;
    let after = Server::start(Answer::Status(200)).await;
    let before_url = secret_file(dir.path(), "before", &format!("{}/hook", before.url));
    let after_url = secret_file(dir.path(), "after", &format!("{}/hook", after.url));
    let hour = Duration::from_secs(3600);
    let observer = spawn(
        notify_settings(vec![channel(
            "before",
            ChannelKind::Webhook,
            &before_url,
            None,
            hour,
        )]),
        Metrics::new(),
        quick(),
    );
    observer.configure(notify_settings(vec![channel(
        "after",
        ChannelKind::Webhook,
        &after_url,
        None,
        hour,
    )]));
    observer.observe(observation(CommitState::Failure, SHA));
    let seen = after.wait_for(1, 10).await;
    assert_eq!(seen[0].json()["event"], "failure");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        before.seen().is_empty(),
        "the removed target still got {:?}",
        before.seen()
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_the_server_asks() {
    let policy = SendPolicy {
        max_wait: Duration::from_secs(5),
        ..quick()
    };
    let (_dir, server, metrics, observer) =
        github(Answer::RateLimitedOnce, "ghp_test", policy).await;
    observer.observe(observation(CommitState::Success, SHA));
    let seen = server.wait_for(2, 10).await;
    let waited = seen[1].at.duration_since(seen[0].at);
    // The backoff alone would be 20 ms; Retry-After asked for a second.
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    wait_until(5, || count(&metrics, "status", "apps", "sent") == 1).await;
    assert_eq!(seen[0].body, seen[1].body, "the same status again");
}

#[tokio::test]
async fn an_inactive_replica_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Answer::Status(201)).await;
    let token = secret_file(dir.path(), "token", "ghp_test");
    let observer = spawn(
        forge_settings(Provider::GitHub, &server.url, "acme/shop", &token),
        Metrics::new(),
        quick(),
    );
    // A standby replica under leader election.
    observer.set_active(false);
    observer.observe(observation(CommitState::Failure, SHA));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    observer.set_active(true);
    observer.observe(observation(CommitState::Failure, SHA));
    assert_eq!(server.wait_for(1, 10).await[0].json()["state"], "failure");
}
