//! Webhooks through the HTTP route, verified by the real Git source against a
//! real repository: right, wrong and missing signatures, and the metrics they leave.

#[path = "git_support/mod.rs"]
mod git_support;

use std::sync::Arc;
use std::time::Duration;

use stackd::git::settings::RepoSettings;
use stackd::git::source::{Source, SourceEvent, SourceOptions};
use stackd::git::webhook::sign_sha256;
use stackd::http::{AppState, router, serve};
use stackd::metrics::Metrics;
use stackd::state::SharedState;

#[tokio::test]
async fn github_webhook_signatures_right_wrong_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write(
        "web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.27\n",
    );
    upstream.commit("first");
    let secret = git_support::secret_file(dir.path(), "hook-secret", "s3cret\n");
    let mut settings = RepoSettings::new("apps", upstream.file_url(), "main");
    settings.interval = Duration::from_secs(3600);
    settings.webhook_secret_file = Some(secret);
    let options = SourceOptions {
        watch_local: false,
        ..SourceOptions::default()
    };
    let (handle, mut events) =
        Source::spawn(vec![settings], dir.path().join("data"), options).unwrap();
    // The first poll happens at start.
    let first = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, SourceEvent::Updated(_)), "{first:?}");

    let metrics = Metrics::new();
    let mut app = AppState::new(SharedState::new(), metrics.clone());
    app.source = Some(Arc::new(handle.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/github", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, router(app, true), std::future::pending()));

    let body = serde_json::json!({"ref": "refs/heads/main", "repository": {"clone_url": upstream.file_url()}}).to_string();
    let client = reqwest::Client::new();
    let post = |signature: Option<String>| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };

    let polls_before = handle.state("apps").unwrap().polls;
    let right = post(Some(sign_sha256(b"s3cret", body.as_bytes())))
        .await
        .unwrap();
    assert_eq!(right.status(), 202);
    // The accepted webhook triggers a poll now, not in an hour.
    tokio::time::timeout(Duration::from_secs(10), async {
        while handle.state("apps").unwrap().polls == polls_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the webhook triggered a poll");

    let wrong = post(Some(sign_sha256(b"not-the-secret", body.as_bytes())))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let missing = post(None).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert!(handle.state("apps").unwrap().rejected_webhooks >= 2);

    let text = metrics.render();
    assert!(
        text.contains(r#"stackd_webhook_requests_total{provider="github",result="accepted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"stackd_webhook_requests_total{provider="github",result="unauthorized"} 2"#
        ),
        "{text}"
    );
    handle.shutdown();
}
